"""The fake OpenAI upstream the tests call through the gateway: served on loopback, with a handle that sets its
faults and reads what it was sent over its own HTTP endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tests.utils.servers import ServerThread
from tunegate.proxy.fake_upstream import FakeUpstream

UPSTREAM_KEY = "sk-fake-upstream-secret"  # what the session's fake upstream wants; the gateway's configs send it


@dataclass
class FakeUpstreamHandle:
    url: str
    app: FakeUpstream

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def fault(self, **fault: Any) -> None:
        httpx.post(self.url + "/_faults", json=fault).raise_for_status()

    def reset(self) -> None:
        httpx.delete(self.url + "/_faults").raise_for_status()
        httpx.delete(self.url + "/_stats").raise_for_status()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url + "/_stats").json()
        return data

    def requests(self, limit: int = 20) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = httpx.get(self.url + "/_requests", params={"limit": limit}).json()
        return data

    def last_json(self) -> dict[str, Any]:
        body: dict[str, Any] = self.requests(1)[-1]["json"]
        return body


@contextmanager
def serve_fake_upstream(api_key: str = UPSTREAM_KEY) -> Iterator[FakeUpstreamHandle]:
    """A fake upstream wanting ``api_key``, on 127.0.0.1 for the block."""
    app = FakeUpstream(api_key=api_key)
    with ServerThread(app) as server:
        yield FakeUpstreamHandle(server.url, app)

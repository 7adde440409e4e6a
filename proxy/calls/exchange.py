"""The values a model call passes between its steps: the request (Exchange), a target tried for it (Attempt),
and what the attempt that answered spent (Outcome)."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tunegate.proxy.calls.shapes import Shape, shape_of
from tunegate.proxy.upstream.calls import UpstreamEndpoint
from tunegate.registry.aliases import ResolvedAlias, Target
from tunegate.registry.teams import Caller


def new_request_id() -> str:
    """A request's id as the answers carry it: 16 random bytes in hex (cheaper than uuid4)."""
    return "req_" + os.urandom(16).hex()


@dataclass
class Exchange:
    """A model call on its way through the gateway: who asked, for what, and when."""

    caller: Caller
    endpoint: str  # chat.completions | completions | embeddings | responses
    path: str  # upstream path below base_url
    alias: ResolvedAlias
    body: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=lambda: new_request_id())

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def shape(self) -> Shape:
        """Where this endpoint's answers name the model, carry the usage and the text."""
        return shape_of(self.endpoint)


@dataclass
class Attempt:
    """One target tried for a request, with the body it is sent."""

    target: Target
    served_by: str  # model | canary | fallback
    upstream: UpstreamEndpoint
    payload: dict[str, Any]
    injected_tokens: int = 0
    weight: int | None = None  # percent of the alias's traffic this target takes (canaries)

    def headers(self, request_id: str) -> dict[str, str]:
        """The answer's headers that say who served it."""
        return {
            "x-request-id": request_id,
            "x-tunegate-model": self.target.model,
            "x-tunegate-served-by": self.served_by,
            **({"x-tunegate-weight": str(self.weight)} if self.weight is not None else {}),
        }


@dataclass(frozen=True)
class Outcome:
    """What the attempt that answered spent: the status sent, the upstream's usage (None when it sent none), and for
    a stream its time to the first token and whether it ended early (with the text it had sent by then)."""

    status: int
    usage: dict[str, Any] | None = None
    ttft_ms: float | None = None
    partial: bool = False
    completion_text: str = ""


Record = Callable[[Attempt, Outcome], None]  # how forwarding hands back what an answer spent
Own = Callable[[Attempt, str], Awaitable[None]]  # how forwarding hands back the id of an object the upstream stored

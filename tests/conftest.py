"""Fixtures that give real parts: the fake upstream and the gateway on loopback, over SQLite and PostgreSQL."""

from __future__ import annotations

import os
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
if (SHARED / "tiktoken_cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))

from config import load_settings  # noqa: E402
from proxy.app import create_app  # noqa: E402
from proxy.fake_upstream import FakeUpstream  # noqa: E402
from proxy.state import Gateway  # noqa: E402
from registry.models import UsageRecord  # noqa: E402
from registry.tokens import count_text  # noqa: E402
from tests.utils.servers import ServerThread, free_port  # noqa: E402

# tiktoken's encoding files (../shared/tiktoken_cache) make token counts exact; without them they are estimates.
TIKTOKEN_EXACT = count_text("x", "gpt-4o-mini").exact
NEEDS_ENCODINGS = (
    "needs tiktoken's encoding files (TIKTOKEN_CACHE_DIR, ../shared/tiktoken_cache): its figures are hand-counted"
)
ADMIN_KEY = "tg-admin-test-key"
UPSTREAM_KEY = "sk-fake-upstream-secret"
PUDONG_PROMPT = "你是上海浦东国际机场的智慧客服。请简洁、准确地回答旅客问题。"


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


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstreamHandle]:
    app = FakeUpstream(api_key=UPSTREAM_KEY)
    with ServerThread(app) as server:
        yield FakeUpstreamHandle(server.url, app)


@pytest.fixture(autouse=True)
def _clean_fake_upstream(request: pytest.FixtureRequest) -> None:
    if "fake_upstream" in request.fixturenames:
        request.getfixturevalue("fake_upstream").reset()


def _postgres_database(base_url: str) -> Iterator[str]:
    import psycopg

    name = "tunegate_test_" + uuid.uuid4().hex[:12]
    plain = base_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at TUNEGATE_TEST_DATABASE_URL is not reachable: {exc}")
    yield plain.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty database: SQLite always; PostgreSQL where TUNEGATE_TEST_DATABASE_URL names a server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'tunegate.db'}"
        return
    base = os.environ.get("TUNEGATE_TEST_DATABASE_URL")
    if not base:
        pytest.skip("PostgreSQL run skipped: set TUNEGATE_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test")
    yield from _postgres_database(base)


@pytest.fixture(scope="module")
def own_database_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another empty database of the same kind, for one module: every total in it is that module's own."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path_factory.mktemp('own-db') / 'tunegate.db'}"
        return
    yield from _postgres_database(os.environ["TUNEGATE_TEST_DATABASE_URL"])


def gateway_yaml(database_url: str, fake_base_url: str, *, extra: str = "") -> str:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here: a connection error
    return textwrap.dedent(
        f"""
        database: {{url: "{database_url}"}}
        server: {{admin_key: "$TUNEGATE_ADMIN_KEY", max_body_bytes: 65536, read_timeout: 1.5}}
        usage: {{flush_interval: 0.05}}
        upstreams:
          fake: {{base_url: "{fake_base_url}", api_key: "$TUNEGATE_TEST_UPSTREAM_KEY"}}
          down: {{base_url: "{closed}", api_key: "$TUNEGATE_TEST_UPSTREAM_KEY"}}
        teams:
          - name: airport-cs
          - name: other-team
        aliases:
          pudong-support:
            upstream: fake
            model: "ft:gpt-3.5-turbo-0613:pudong::8abc123"
            fallback: {{model: gpt-3.5-turbo, system_prompt: "{PUDONG_PROMPT}"}}
          prompted-prepend:
            upstream: fake
            model: gpt-4o-mini
            system_prompt: "Answer briefly."
          prompted-if-absent:
            upstream: fake
            model: gpt-4o-mini
            system_prompt: "Answer briefly."
            policy: if_absent
          prompted-replace:
            upstream: fake
            model: gpt-4o-mini
            system_prompt: "Answer briefly."
            policy: replace
          fallback-demo:
            upstream: fake
            model: "ft:gpt-4o-mini-2024-07-18:pudong::flaky"
            fallback: {{model: gpt-4o-mini, system_prompt: "Answer briefly."}}
          unreachable-primary:
            upstream: down
            model: "ft:gpt-4o-mini-2024-07-18:pudong::down"
            fallback: {{model: gpt-4o-mini, upstream: fake, system_prompt: "Answer briefly."}}
          unreachable:
            upstream: down
            model: gpt-4o-mini
          embed:
            upstream: fake
            model: text-embedding-3-small
          legacy:
            upstream: fake
            model: gpt-3.5-turbo-instruct
          other-only:
            upstream: fake
            model: gpt-4o
            team: other-team
        {extra}
        """
    )


@dataclass
class GatewayHandle:
    url: str
    gateway: Gateway
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def engine(self) -> Engine:
        return self.gateway.engine

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def new_team_key(self, prefix: str = "team") -> tuple[str, str]:
        team = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.admin("POST", "/admin/teams", json={"name": team}).raise_for_status()
        key = self.admin("POST", "/admin/keys", json={"team": team}).json()["key"]
        return team, key

    def usage(self, request_id: str, *, timeout: float = 10.0) -> UsageRecord:
        """The usage record of one request, once the batched writer has committed it."""
        deadline = time.monotonic() + timeout
        while True:
            with Session(self.engine) as session:
                row = session.exec(select(UsageRecord).where(UsageRecord.request_id == request_id)).first()
            if row is not None:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage record for {request_id} after {timeout}s")
            time.sleep(0.02)

    def usage_of_team(self, team_id: int) -> list[UsageRecord]:
        with Session(self.engine) as session:
            return list(
                session.exec(select(UsageRecord).where(UsageRecord.team_id == team_id).order_by(col(UsageRecord.id)))
            )


@pytest.fixture(scope="session")
def gateway(
    database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayHandle]:
    os.environ["TUNEGATE_ADMIN_KEY"] = ADMIN_KEY
    os.environ["TUNEGATE_TEST_UPSTREAM_KEY"] = UPSTREAM_KEY
    path = tmp_path_factory.mktemp("config") / "tunegate.yaml"
    path.write_text(gateway_yaml(database_url, fake_upstream.base_url), encoding="utf-8")
    settings = load_settings(path)
    gw = Gateway(settings)
    with ServerThread(create_app(settings, gateway=gw)) as server:
        handle = GatewayHandle(server.url, gw)
        for team in ("airport-cs", "other-team"):
            response = handle.admin("POST", "/admin/keys", json={"team": team, "name": "tests"})
            assert response.status_code == 201, response.text
            handle.keys[team] = response.json()["key"]
        yield handle

"""The gateway served in-process for the tests: the shared configuration, the handle tests drive it through, and
``serve_gateway``, the one function that starts one (the session's, a module's own, the finance and fine-tuning
gateways)."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from tests.utils.environment import environment
from tests.utils.servers import ServerThread, free_port
from tests.utils.upstreams import UPSTREAM_KEY
from tests.utils.waiting import eventually
from tunegate.config import load_settings
from tunegate.proxy.app import create_app
from tunegate.proxy.state import Gateway
from tunegate.registry.models import UsageRecord

ADMIN_KEY = "tg-admin-test-key"
METRICS_TOKEN = "tg-metrics-test-token"  # /metrics wants a token: give a gateway TUNEGATE_METRICS_TOKEN=this
PUDONG_PROMPT = "你是上海浦东国际机场的智慧客服。请简洁、准确地回答旅客问题。"
GATEWAY_TEAMS = ("airport-cs", "other-team")  # the teams gateway_yaml configures; each gets a key


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
    config: Path = Path()

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

        def committed() -> UsageRecord | None:
            with Session(self.engine) as session:
                return session.exec(select(UsageRecord).where(UsageRecord.request_id == request_id)).first()

        return eventually(committed, what=f"the usage record of {request_id}", timeout=timeout, interval=0.02)

    def usage_of_team(self, team_id: int) -> list[UsageRecord]:
        with Session(self.engine) as session:
            return list(
                session.exec(select(UsageRecord).where(UsageRecord.team_id == team_id).order_by(col(UsageRecord.id)))
            )


@contextmanager
def serve_gateway(
    config: Path,
    text: str,
    *,
    secrets: Mapping[str, str] | None = None,
    new_teams: Sequence[str] = (),
    keys_for: Sequence[str] = (),
) -> Iterator[GatewayHandle]:
    """Write ``text`` to ``config`` and serve that gateway on 127.0.0.1 for the block.

    TUNEGATE_ADMIN_KEY (ADMIN_KEY) and ``secrets`` are in the environment while it runs, and as they were after.
    The teams ``new_teams`` are created; each team of ``keys_for`` gets a key, in ``handle.keys``.
    """
    config.write_text(text, encoding="utf-8")
    with environment(TUNEGATE_ADMIN_KEY=ADMIN_KEY, **(secrets or {})):
        settings = load_settings(config)
        gateway = Gateway(settings)
        with ServerThread(create_app(settings, gateway=gateway)) as server:
            handle = GatewayHandle(server.url, gateway, config=config)
            for team in new_teams:
                response = handle.admin("POST", "/admin/teams", json={"name": team})
                assert response.status_code == 201, response.text
            for team in keys_for:
                response = handle.admin("POST", "/admin/keys", json={"team": team, "name": "tests"})
                assert response.status_code == 201, response.text
                handle.keys[team] = response.json()["key"]
            yield handle


@contextmanager
def running_gateway(
    database_url: str,
    fake_base_url: str,
    directory: Path,
    *,
    extra: str = "",
    teams: tuple[str, ...] = (),
    secrets: Mapping[str, str] | None = None,
) -> Iterator[GatewayHandle]:
    """The shared configuration (``extra``: one more top-level YAML line) served on 127.0.0.1.

    ``handle.keys`` holds a team key for airport-cs, other-team and each of ``teams`` (created here); ``secrets``
    are the variables ``extra`` names, besides the admin and upstream keys.
    """
    with serve_gateway(
        directory / "tunegate.yaml",
        gateway_yaml(database_url, fake_base_url, extra=extra),
        secrets={"TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY, **(secrets or {})},
        new_teams=teams,
        keys_for=(*GATEWAY_TEAMS, *teams),
    ) as handle:
        yield handle

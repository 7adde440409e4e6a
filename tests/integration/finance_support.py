"""A gateway for the finance tests: its own empty database, and a price table with round, large prices (USD per
1M tokens) whose history changes on 2024-06-15, so every cost below can be worked out by hand to the cent.

Token counts come from the fake upstream's documented rule: "Where is gate D?" as the only user message is a
12-token prompt (3 + 3 + 1 + 5) answered by "Echo: Where is gate D?", 7 tokens.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from openai.types.chat import ChatCompletionMessageParam

from tests.utils.gateways import ADMIN_KEY, GatewayHandle, serve_gateway
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tests.utils.waiting import eventually
from tunegate.registry.tokens import system_prompt_tokens

PRICES_YAML = """\
prices:
  - {model: "gpt-3.5-turbo", effective: 2024-01-01, input: 1000, output: 2000}
  - {model: "gpt-3.5-turbo", effective: 2024-06-15, input: 500, output: 1500}
  - {model: "ft:gpt-3.5-turbo*", effective: 2024-01-01, input: 3000, output: 6000, training: 8000}
  - {model: "gpt-4o-mini", effective: 2024-01-01, input: 150, cached_input: 75, output: 600}
"""
FT_PUDONG = "ft:gpt-3.5-turbo-0613:pudong::fin001"
FT_GATES = "ft:gpt-3.5-turbo-0613:pudong::gates01"
BRIEF = "Answer briefly."  # 3 tokens in cl100k and in the fake: injected as 3 + 1 + 3 = 7
GATE_PROMPT = " ".join(["gate"] * 200)  # 200 tokens in cl100k and in the fake: injected as 204
# What the gateway counts for BRIEF: 7 with tiktoken's encoding files, an estimate without them (a machine
# without ../shared/tiktoken_cache); the tests whose dollar figures are hand-computed from 7 and 204 need them.
BRIEF_INJECTED = system_prompt_tokens(BRIEF, "gpt-3.5-turbo")
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is gate D?"}]
QUESTION_TOKENS, ANSWER_TOKENS = 12, 7


def finance_yaml(database_url: str, fake_base_url: str, prices: Path) -> str:
    return textwrap.dedent(
        f"""
        database: {{url: "{database_url}"}}
        server: {{admin_key: "$TUNEGATE_ADMIN_KEY", read_timeout: 10}}
        usage: {{flush_interval: 0.05}}
        cache: {{ttl_seconds: 5}}
        prices: {{file: "{prices}"}}
        upstreams:
          fake: {{base_url: "{fake_base_url}", api_key: "$TUNEGATE_TEST_UPSTREAM_KEY"}}
        aliases:
          pudong-support:
            upstream: fake
            model: "{FT_PUDONG}"
            fallback: {{model: gpt-3.5-turbo, system_prompt: "{BRIEF}"}}
          gate-support:
            upstream: fake
            model: "{FT_GATES}"
            fallback: {{model: gpt-3.5-turbo, system_prompt: "{GATE_PROMPT}"}}
          mini:
            upstream: fake
            model: gpt-4o-mini
          unpriced:
            upstream: fake
            model: mystery-model-1
        """
    )


@dataclass
class FinanceGateway(GatewayHandle):
    def new_team(self, prefix: str = "fin") -> tuple[str, str, int]:
        """A new team and a team key: (team, key, key id)."""
        team = f"{prefix}-{uuid.uuid4().hex[:8]}"
        assert self.admin("POST", "/admin/teams", json={"name": team}).status_code == 201
        response = self.admin("POST", "/admin/keys", json={"team": team, "name": "tests"})
        assert response.status_code == 201, response.text
        return team, response.json()["key"], response.json()["id"]

    def finance_key(self, team: str) -> str:
        response = self.admin("POST", "/admin/keys", json={"team": team, "name": "finance", "role": "finance"})
        assert response.status_code == 201, response.text
        key: str = response.json()["key"]
        return key

    def report(self, *, key: str = ADMIN_KEY, path: str = "/admin/usage", **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params, headers={"authorization": f"Bearer {key}"}, timeout=30)

    def wait_for_requests(self, team: str, requests: int, *, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        """The team's usage report once it counts ``requests`` (the writer flushes asynchronously)."""

        def counted() -> dict[str, Any] | None:
            body: dict[str, Any] = self.report(team=team, **params).json()
            return body if body["totals"]["requests"] >= requests else None

        body = eventually(counted, what=f"{requests} requests in {team}'s usage report", timeout=timeout, interval=0.02)
        assert body["totals"]["requests"] == requests, body
        return body


@contextmanager
def finance_gateway(database_url: str, fake: FakeUpstreamHandle, tmp_path: Path) -> Iterator[FinanceGateway]:
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES_YAML, encoding="utf-8")
    with serve_gateway(
        tmp_path / "finance.yaml",
        finance_yaml(database_url, fake.base_url, prices),
        secrets={"TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY},
    ) as handle:
        yield FinanceGateway(handle.url, handle.gateway, handle.keys, handle.config)

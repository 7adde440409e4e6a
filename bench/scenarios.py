"""What is measured: the gateway's configuration, the request bodies, and the scenarios run against each server."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

import orjson

TEAM = "bench"
UNBUDGETED_TEAM = "bench-unbudgeted"  # the same requests from a team without a budget: what the budget costs
ALIAS = "bench-support"
PACED_ALIAS = "bench-paced"
MODEL = "ft:gpt-3.5-turbo-0613:bench::b1"
PACED_MODEL = "ft:gpt-3.5-turbo-0613:bench::paced"
FALLBACK_MODEL = "gpt-3.5-turbo"
PROMPT = "You are the Pudong airport assistant. Answer briefly and point travellers to official notices."
QUESTION = (
    "How early should I check in for an international flight from Pudong, and where is the counter for my airline?"
)
CHUNK_DELAY_MS = 5  # the paced stream: an LLM-like gap between chunks, so each chunk's relay is seen alone
ADMIN_KEY = "tg-bench-admin"
REPLAYED = "tunegate, replayed upstream"  # the rows against bench.replay (see bench/replay.py)
REPLAYED_2 = "tunegate (2 workers), replayed upstream"
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-bench-upstream"  # what the gateway, LiteLLM and the direct load send the fake upstream
DIRECT_HEADERS = {"authorization": f"Bearer {UPSTREAM_KEY}"}  # the load straight to the upstream


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    connections: int
    paced: bool = False

    @property
    def key(self) -> str:
        return f"{self.name}@{self.connections}"


NON_STREAM_1 = Scenario("non-stream", False, 1)
NON_STREAM_64 = Scenario("non-stream", False, 64)
STREAM_1 = Scenario("stream", True, 1)
STREAM_64 = Scenario("stream", True, 64)
PACED_1 = Scenario(f"stream, chunks {CHUNK_DELAY_MS} ms apart", True, 1, paced=True)

MAIN = (NON_STREAM_1, NON_STREAM_64, STREAM_1, STREAM_64, PACED_1)
THROUGHPUT = (NON_STREAM_64, STREAM_64)
UNBUDGETED = (NON_STREAM_1, NON_STREAM_64)
COMPARISON = (NON_STREAM_1, NON_STREAM_64, STREAM_1, STREAM_64)


def gateway_yaml(*, database_url: str, upstream_base_url: str, port: int, extra: str = "") -> str:
    """A gateway with every feature of the request path on: team keys, an alias with a fallback and an
    injected system prompt, usage records written in batches (the defaults a user gets)."""
    return textwrap.dedent(
        f"""
        database: {{url: "{database_url}"}}
        server: {{host: 127.0.0.1, port: {port}, admin_key: "$TUNEGATE_ADMIN_KEY"}}
        usage: {{flush_interval: 1.0, batch_size: 200}}
        cache: {{ttl_seconds: 5}}
        upstreams:
          fake: {{base_url: "{upstream_base_url}", api_key: "${UPSTREAM_KEY_ENV}"}}
        teams:
          - name: {TEAM}
          - name: {UNBUDGETED_TEAM}
        aliases:
          {ALIAS}:
            upstream: fake
            model: "{MODEL}"
            system_prompt: "{PROMPT}"
            fallback: {{model: {FALLBACK_MODEL}, system_prompt: "{PROMPT}"}}
          {PACED_ALIAS}:
            upstream: fake
            model: "{PACED_MODEL}"
            system_prompt: "{PROMPT}"
            fallback: {{model: {FALLBACK_MODEL}, system_prompt: "{PROMPT}"}}
        """
    ) + textwrap.dedent(extra)


def client_body(scenario: Scenario) -> bytes:
    """What an application sends the gateway (or LiteLLM): the alias and the user's question."""
    body: dict[str, Any] = {
        "model": PACED_ALIAS if scenario.paced else ALIAS,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    if scenario.stream:
        body["stream"] = True
    return orjson.dumps(body)


def upstream_body(scenario: Scenario) -> bytes:
    """What the gateway sends the upstream for ``client_body``: the same request sent there directly."""
    body: dict[str, Any] = {
        "model": PACED_MODEL if scenario.paced else MODEL,
        "messages": [{"role": "system", "content": PROMPT}, {"role": "user", "content": QUESTION}],
    }
    if scenario.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def upstream_faults() -> list[dict[str, Any]]:
    """Chunk stamps (for the relay time) on both models; the paced model also spaces its chunks."""
    return [
        {"model": MODEL, "timestamp_chunks": True},
        {"model": PACED_MODEL, "timestamp_chunks": True, "chunk_delay_ms": CHUNK_DELAY_MS},
    ]

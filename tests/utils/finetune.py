"""A gateway for the fine-tuning tests: its own database and configuration, a second fake upstream (a provider
that is not the first), and helpers that drive jobs with the poller's own pass."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session, col, select

from tests.utils.gateways import GATEWAY_TEAMS, METRICS_TOKEN, PUDONG_PROMPT, GatewayHandle, serve_gateway
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle, serve_fake_upstream
from tests.utils.waiting import eventually
from tunegate.proxy.fake_upstream import count_tokens
from tunegate.proxy.finetune.background import FinetunePoller
from tunegate.proxy.state import Gateway
from tunegate.registry.aliases import AliasSpec, get_alias
from tunegate.registry.models import AliasVersion, FineTuneJob, FineTuneJobEvent, UsageRecord

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/fixtures/finetune"
DATASET = ROOT.parent / "shared/datasets/pudong-support"
# The defects of ../shared/datasets/pudong-support/invalid.jsonl, as (line, code), in the validator's order.
INVALID_DEFECTS = [
    (1, "not_an_object"),
    (2, "missing_messages"),
    (3, "empty_messages"),
    (4, "missing_content"),
    (5, "unrecognized_key"),
    (6, "unrecognized_role"),
    (7, "invalid_content"),
    (7, "invalid_content"),
    (8, "no_assistant_message"),
    (9, "invalid_weight"),
    (10, "invalid_json"),
]
SECOND_KEY = "sk-second-provider-secret"
WRONG_KEY = "sk-wrong-key-0123456789"
MAX_FILE_BYTES = 20_000
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is gate D?"}]
RETIRING = "ft:gpt-4o-mini-2024-07-18:pudong::retiring"


def finetune_yaml(database_url: str, fake_url: str, second_url: str, *, poll_interval: float, cache_ttl: float) -> str:
    return textwrap.dedent(
        f"""
        database: {{url: "{database_url}"}}
        server: {{admin_key: "$TUNEGATE_ADMIN_KEY", max_body_bytes: 65536, read_timeout: 5}}
        usage: {{flush_interval: 0.05}}
        cache: {{ttl_seconds: {cache_ttl}}}
        finetune:
          upstream: fake
          poll_interval: {poll_interval}
          lease_seconds: 30
          max_file_bytes: {MAX_FILE_BYTES}
          retirement_window_days: 30
        upstreams:
          fake: {{base_url: "{fake_url}/v1", api_key: "$TUNEGATE_TEST_UPSTREAM_KEY"}}
          second: {{base_url: "{second_url}/v1", api_key: "$TUNEGATE_TEST_SECOND_KEY"}}
          wrong-key: {{base_url: "{fake_url}/v1", api_key: "$TUNEGATE_TEST_WRONG_KEY"}}
        teams:
          - name: airport-cs
          - name: other-team
        aliases:
          pudong-support:          # the issue's story: a base model with a long system prompt, until a fine-tune
            upstream: fake
            model: gpt-3.5-turbo
            system_prompt: "{PUDONG_PROMPT}"
          library-desk:            # no prompt anywhere: a promotion offers the training data's
            upstream: fake
            model: gpt-4o-mini
          canary-desk:
            upstream: fake
            model: gpt-4o-mini
            fallback: {{model: gpt-4o-mini, system_prompt: "Answer briefly."}}
          failing-desk:
            upstream: fake
            model: gpt-4o-mini
          second-desk:             # served by the second provider: its jobs run there
            upstream: second
            model: gpt-4o-mini
          wrong-key-desk:
            upstream: wrong-key
            model: gpt-4o-mini
          lora-desk:               # an adapter fine-tuned elsewhere, registered with `tunegate model register`
            upstream: second
            model: pudong-lora
            fallback: {{model: gpt-4o-mini, system_prompt: "Answer briefly."}}
          retiring:
            upstream: fake
            model: "{RETIRING}"
            fallback: {{model: gpt-4o-mini, system_prompt: "Answer briefly."}}
          other-only:
            upstream: fake
            model: gpt-4o
            team: other-team
        """
    )


@dataclass
class FinetuneEnv:
    gateway: GatewayHandle
    fake: FakeUpstreamHandle
    second: FakeUpstreamHandle

    @property
    def gw(self) -> Gateway:
        return self.gateway.gateway

    def client(self, team: str = "airport-cs") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.base_url, api_key=self.gateway.keys[team], max_retries=0)

    def upload(self, name: str = "valid_12.jsonl", team: str = "airport-cs", content: bytes | None = None) -> str:
        data = (FIXTURES / name).read_bytes() if content is None else content
        file_id: str = self.client(team).files.create(file=(name, data), purpose="fine-tune").id
        return file_id

    def start_job(
        self, alias: str | None, *, team: str = "airport-cs", model: str = "gpt-4o-mini-2024-07-18", **metadata: str
    ) -> str:
        meta = {"tunegate_alias": alias, **metadata} if alias else metadata or None
        job = self.client(team).fine_tuning.jobs.create(
            model=model, training_file=self.upload(team=team), metadata=meta
        )
        return job.id

    def drive(self, job_id: str, until: tuple[str, ...] = ("succeeded", "failed", "cancelled")) -> str:
        """Poll passes, as the gateway's background task makes them, until the job reaches one of ``until``."""
        poller = FinetunePoller(self.gw)

        def one_pass() -> str:
            outcomes = poller.poll_once()
            if any(o.promoted_version is not None for o in outcomes):
                self.gw.invalidate()
            status = self.job(job_id).status
            assert status in until, f"job {job_id} still {status}"
            return status

        try:
            return eventually(one_pass, what=f"job {job_id} to be {' or '.join(until)}", timeout=20, interval=0)
        finally:
            poller.close()

    def job(self, job_id: str) -> FineTuneJob:
        with Session(self.gw.engine) as session:
            job = session.get(FineTuneJob, job_id)
            assert job is not None
            return job

    def events(self, job_id: str) -> list[str]:
        with Session(self.gw.engine) as session:
            rows = session.exec(
                select(FineTuneJobEvent).where(FineTuneJobEvent.job_id == job_id).order_by(col(FineTuneJobEvent.id))
            )
            return [row.message for row in rows]

    def alias(self, name: str, team_id: int | None = None) -> tuple[int, AliasSpec, AliasVersion]:
        with Session(self.gw.engine) as session:
            alias = get_alias(session=session, name=name, team_id=team_id)
            version = session.exec(
                select(AliasVersion).where(
                    AliasVersion.alias_id == alias.id, AliasVersion.version == alias.current_version
                )
            ).one()
            return alias.current_version, AliasSpec.model_validate(version.spec), version

    def training_usage(self, job_id: str) -> list[UsageRecord]:
        with Session(self.gw.engine) as session:
            return list(
                session.exec(
                    select(UsageRecord).where(UsageRecord.request_id == job_id, UsageRecord.kind == "training")
                )
            )

    def chat(self, alias: str) -> tuple[str, str, list[dict[str, Any]]]:
        """Served model, served_by, and the messages the upstream received."""
        httpx.delete(self.fake.url + "/_stats").raise_for_status()  # the request log, not the faults
        raw = self.client().chat.completions.with_raw_response.create(model=alias, messages=QUESTION)
        chats = [r for r in self.fake.requests(50) if r["path"] == "/v1/chat/completions"]
        return raw.headers["x-tunegate-model"], raw.headers["x-tunegate-served-by"], chats[-1]["json"]["messages"]


def fake_training_tokens(path: Path, epochs: int = 3) -> int:
    """What the fake upstream bills for a file: its documented chat count per example, times its epochs."""
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            total += 3 + sum(3 + count_tokens(m["role"]) + count_tokens(m["content"]) for m in messages)
    return epochs * total


@contextmanager
def finetune_env(
    database_url: str,
    fake: FakeUpstreamHandle,
    directory: Path,
    *,
    poll_interval: float = 3600.0,
    cache_ttl: float = 5.0,
) -> Iterator[FinetuneEnv]:
    """The gateway on loopback; with the default interval its poller runs once at start, then the test drives."""
    with serve_fake_upstream(SECOND_KEY) as second:
        text = finetune_yaml(database_url, fake.url, second.url, poll_interval=poll_interval, cache_ttl=cache_ttl)
        secrets = {
            "TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
            "TUNEGATE_TEST_SECOND_KEY": SECOND_KEY,
            "TUNEGATE_TEST_WRONG_KEY": WRONG_KEY,
            "TUNEGATE_METRICS_TOKEN": METRICS_TOKEN,
        }
        with serve_gateway(directory / "tunegate.yaml", text, secrets=secrets, keys_for=GATEWAY_TEAMS) as handle:
            yield FinetuneEnv(handle, fake, second)

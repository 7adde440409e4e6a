"""The gateway's own background work, left to run: the poller promotes a finished job with nobody driving it,
and the retirement watch has read the upstreams before the first request is served."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from openai.types.fine_tuning import FineTuningJob

from tests.utils.finetune import FIXTURES, QUESTION, RETIRING, FinetuneEnv, finetune_env
from tests.utils.gateways import METRICS_TOKEN, PUDONG_PROMPT
from tests.utils.upstreams import FakeUpstreamHandle
from tests.utils.waiting import eventually


@pytest.fixture(scope="module")
def live(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FinetuneEnv]:
    """Polls every 50 ms; alias lookups cached for a minute, so only the poller's own invalidation shows a
    promotion at once. ``retiring``'s target is past its shutdown date before the gateway starts."""
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    httpx.post(fake_upstream.url + "/_models", json={"id": RETIRING, "shutdown_date": yesterday}).raise_for_status()
    try:
        with finetune_env(
            own_database_url, fake_upstream, tmp_path_factory.mktemp("live"), poll_interval=0.05, cache_ttl=60
        ) as environment:
            yield environment
    finally:
        httpx.post(fake_upstream.url + "/_models", json={"id": RETIRING, "shutdown_date": None}).raise_for_status()


def test_the_background_poller_promotes_and_the_next_request_uses_it(live: FinetuneEnv) -> None:
    client = live.client()
    assert live.chat("pudong-support")[:2] == ("gpt-3.5-turbo", "model")  # now cached for a minute
    uploaded = client.files.create(
        file=("valid_12.jsonl", (FIXTURES / "valid_12.jsonl").read_bytes()), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model="gpt-3.5-turbo-0613", training_file=uploaded.id, metadata={"tunegate_alias": "pudong-support"}
    )

    def finished() -> FineTuningJob | None:
        current = client.fine_tuning.jobs.retrieve(job.id)
        if current.status == "succeeded":
            return current
        assert current.status in ("validating_files", "queued", "running"), current.status
        return None

    current = eventually(finished, what=f"job {job.id} to succeed", timeout=20)
    assert current.fine_tuned_model is not None

    def promoted() -> tuple[str, str, list[dict[str, Any]]] | None:
        served = live.chat("pudong-support")
        return served if served[0] == current.fine_tuned_model else None

    # the poller clears the cache right after its pass commits
    served = eventually(promoted, what="the promotion to be served (the poller clears the alias cache)")
    assert served == (current.fine_tuned_model, "model", QUESTION)
    live.fake.fault(model=current.fine_tuned_model, status=503)
    assert live.chat("pudong-support") == (
        "gpt-3.5-turbo",
        "fallback",
        [{"role": "system", "content": PUDONG_PROMPT}, *QUESTION],
    )


def test_the_retirement_watch_reads_the_upstreams_before_serving(live: FinetuneEnv) -> None:
    served, how, _ = live.chat("retiring")
    assert (served, how) == ("gpt-4o-mini", "fallback")
    retired = live.gateway.admin("GET", "/admin/retirements").json()["data"]
    assert [(r["alias"], r["days_left"], r["retired"]) for r in retired] == [("retiring", -1, True)]
    live.gw.metrics.refresh()  # what the metrics thread does every cache.ttl_seconds (a minute here)
    scraped = httpx.get(live.gateway.url + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    gauges = [line for line in scraped.text.splitlines() if "days_left{" in line]
    assert gauges == ['tunegate_alias_target_days_left{alias="retiring"} -1.0']

"""Prometheus metrics: their totals equal the usage report's after a mixed run, labels stay bounded, the
endpoint wants a token unless it is opened, and several processes sharing PROMETHEUS_MULTIPROC_DIR answer one sum."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session, select

from tests.utils.gateways import ADMIN_KEY, METRICS_TOKEN, GatewayHandle, gateway_yaml, running_gateway
from tests.utils.processes import serve_tunegate
from tests.utils.servers import free_port
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tests.utils.waiting import eventually
from tunegate.registry.models import Team, utcnow
from tunegate.registry.usage import Usage

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is gate D?"}]
USAGE_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "injected_tokens", "saved_tokens")
GRAFANA_DASHBOARD = Path(__file__).resolve().parents[2] / "helm" / "tunegate" / "dashboards" / "tunegate.json"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def scrape(url: str, token: str | None = METRICS_TOKEN) -> list[Sample]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def scrape_when(
    url: str, done: Callable[[list[Sample]], bool], token: str | None = METRICS_TOKEN, timeout: float = 15.0
) -> list[Sample]:
    """Scrape until ``done(samples)``: the usage writer counts a batch once it is committed."""

    def settled() -> list[Sample] | None:
        samples = scrape(url, token)
        return samples if done(samples) else None

    return eventually(settled, what=f"the metrics of {url} to settle", timeout=timeout)


def report(url: str, group_by: str) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    response = httpx.get(
        url + "/admin/usage",
        params={
            "from": (today - timedelta(days=1)).isoformat(),
            "to": (today + timedelta(days=1)).isoformat(),
            "group_by": group_by,
            "format": "json",
        },
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_metrics_equal_report(samples: list[Sample], body: dict[str, Any]) -> None:
    totals = body["totals"]
    assert total(samples, "tunegate_requests_total") == totals["requests"]
    assert total(samples, "tunegate_prompt_tokens_total") == totals["prompt_tokens"]
    assert total(samples, "tunegate_completion_tokens_total") == totals["completion_tokens"]
    assert total(samples, "tunegate_cached_tokens_total") == totals["cached_tokens"]
    assert total(samples, "tunegate_injected_prompt_tokens_total") == totals["injected_tokens"]
    assert total(samples, "tunegate_saved_prompt_tokens_total") == totals["saved_tokens"]
    assert total(samples, "tunegate_unpriced_requests_total") == totals["unpriced_requests"]
    cost = Decimal(repr(total(samples, "tunegate_cost_usd_total"))).quantize(Decimal("0.00000001"))
    assert cost == Decimal(totals["cost_usd"])
    assert total(samples, "tunegate_request_duration_seconds_count") == totals["requests"]


@pytest.fixture(scope="module")
def metered(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayHandle]:
    """A gateway on a database of its own, so every usage record in it comes from this module."""
    with running_gateway(
        own_database_url,
        fake_upstream.base_url,
        tmp_path_factory.mktemp("metered"),
        extra='metrics: {token: "$TUNEGATE_TEST_METRICS_TOKEN"}',
        secrets={"TUNEGATE_TEST_METRICS_TOKEN": METRICS_TOKEN},
    ) as handle:
        yield handle


def _client(gateway: GatewayHandle, team: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.keys[team], max_retries=0)


def mixed_run(gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle) -> int:
    """Every kind of request, from two teams; returns how many usage records it leaves."""
    httpx.delete(fake_upstream.url + "/_cache").raise_for_status()  # the second prompted request hits the cache
    airport, other = _client(gateway, "airport-cs"), _client(gateway, "other-team")
    records = 0
    airport.chat.completions.create(model="pudong-support", messages=QUESTION)  # the fine-tune: saved tokens
    records += 1
    with other.chat.completions.with_streaming_response.create(
        model="pudong-support", messages=QUESTION, stream=True
    ) as stream:
        assert (
            "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices) == "Echo: Where is gate D?"
        )
    records += 1
    for _ in range(2):  # injected prompt; the second time its tokens are cached upstream
        with airport.chat.completions.with_streaming_response.create(
            model="prompted-prepend", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        ) as stream:
            list(stream.parse())
        records += 1
    fake_upstream.fault(model="ft:gpt-4o-mini-2024-07-18:pudong::flaky", status=503)
    fallback = airport.chat.completions.with_raw_response.create(model="fallback-demo", messages=QUESTION)
    assert fallback.headers["x-tunegate-served-by"] == "fallback"
    records += 1
    with pytest.raises(openai.InternalServerError):  # no fallback: 502, recorded with no tokens
        airport.chat.completions.create(model="unreachable", messages=QUESTION)
    records += 1
    fake_upstream.fault(model="gpt-4o", status=400, message="Invalid 'temperature'.")
    with pytest.raises(openai.BadRequestError):  # the upstream refuses: 400, recorded
        other.chat.completions.create(model="other-only", messages=QUESTION)
    records += 1
    httpx.delete(fake_upstream.url + "/_faults").raise_for_status()  # the faults only: keep the upstream's counts
    other.chat.completions.create(model="other-only", messages=QUESTION)
    records += 1
    other.embeddings.create(model="embed", input=["baggage claim", "gate D"])
    records += 1
    airport.completions.create(model="legacy", prompt="Where is gate D?")
    records += 1
    with pytest.raises(openai.NotFoundError):  # refused before an alias: no usage record, no series
        airport.chat.completions.create(model="no-such-alias", messages=QUESTION)
    return records


def ghost_record(gateway: GatewayHandle) -> Usage:
    """A record naming an alias and a model the registry does not know (say, deleted since)."""
    now = utcnow()
    return Usage(
        created_at=now,
        day=now.date(),
        request_id="req_ghost_" + now.strftime("%H%M%S%f"),
        endpoint="chat.completions",
        team_id=_team_id(gateway, "airport-cs"),
        alias="ghost-alias",
        upstream="fake",
        model="ghost-model",
        served_by="model",
        prompt_tokens=11,
        completion_tokens=5,
        status_code=200,
        latency_ms=12.0,
    )


def _team_id(gateway: GatewayHandle, name: str) -> int:
    with Session(gateway.engine) as session:
        team = session.exec(select(Team).where(Team.name == name)).one()
    assert team.id is not None
    return team.id


def test_metric_totals_equal_the_usage_report_after_a_mixed_run(
    metered: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    before = total(scrape(metered.url), "tunegate_requests_total")
    expected = mixed_run(metered, fake_upstream)
    served = fake_upstream.stats()  # what the upstream counted for the requests it answered
    ghost = ghost_record(metered)
    metered.gateway.usage.submit(ghost)
    expected += 1

    samples = scrape_when(metered.url, lambda s: total(s, "tunegate_requests_total") >= before + expected)
    assert total(samples, "tunegate_requests_total") == before + expected
    assert total(samples, "tunegate_usage_pending_records") == 0

    # The totals: every figure the report sums, equal to the metrics' sums.
    by_row = report(metered.url, "team,alias,model")
    assert by_row["totals"]["requests"] == before + expected
    assert_metrics_equal_report(samples, by_row)
    if before == 0:  # this test ran first: the figures are this run's alone, and the upstream's own
        assert total(samples, "tunegate_prompt_tokens_total") == served["prompt_tokens"] + ghost.prompt_tokens
        assert total(samples, "tunegate_completion_tokens_total") == served["completion_tokens"] + 5
        assert total(samples, "tunegate_cached_tokens_total") == served["cached_tokens"] > 0

    # Per team, alias and model, with names the registry does not know as "other".
    known_aliases = {row["alias"] for row in by_row["data"]} - {"ghost-alias"}
    expected_rows: dict[tuple[str, str, str], dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in by_row["data"]:
        labels = (
            row["team"],
            row["alias"] if row["alias"] in known_aliases else "other",
            "other" if row["model"] == "ghost-model" else row["model"],
        )
        for field in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens"):
            expected_rows[labels][field] += Decimal(row[field])
        expected_rows[labels]["cost_usd"] += Decimal(row["cost_usd"])
    for (team, alias, model), figures in expected_rows.items():
        where = {"team": team, "alias": alias, "model": model}
        assert total(samples, "tunegate_requests_total", **where) == figures["requests"], where
        assert total(samples, "tunegate_prompt_tokens_total", **where) == figures["prompt_tokens"], where
        assert total(samples, "tunegate_completion_tokens_total", **where) == figures["completion_tokens"], where
        assert total(samples, "tunegate_cached_tokens_total", **where) == figures["cached_tokens"], where
        cost = Decimal(repr(total(samples, "tunegate_cost_usd_total", **where))).quantize(Decimal("1E-8"))
        assert cost == figures["cost_usd"], where

    # served_by and status classes as the requests went.
    assert total(samples, "tunegate_requests_total", alias="fallback-demo", served_by="fallback") >= 1
    assert total(samples, "tunegate_requests_total", alias="unreachable", status_class="5xx") >= 1
    assert total(samples, "tunegate_requests_total", alias="other-only", status_class="4xx") >= 1
    assert total(samples, "tunegate_requests_total", team="other-team", alias="embed", model="text-embedding-3-small")
    assert total(samples, "tunegate_saved_prompt_tokens_total", alias="pudong-support") > 0
    assert total(samples, "tunegate_injected_prompt_tokens_total", alias="prompted-prepend") > 0
    assert total(samples, "tunegate_upstream_ttft_seconds_count", alias="prompted-prepend", model="gpt-4o-mini") >= 2
    assert total(samples, "tunegate_http_responses_total", route="/v1/chat/completions", status_class="4xx") >= 2


def test_label_values_are_bounded_to_what_the_registry_knows(
    metered: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    with pytest.raises(openai.NotFoundError):
        _client(metered, "airport-cs").chat.completions.create(model="made-up-alias-123", messages=QUESTION)
    ghost = ghost_record(metered)
    metered.gateway.usage.submit(ghost)
    samples = scrape_when(metered.url, lambda s: total(s, "tunegate_requests_total", alias="other") >= 1)
    label_values = {(k, v) for s in samples for k, v in s.labels.items()}
    assert ("alias", "made-up-alias-123") not in label_values
    assert ("alias", "ghost-alias") not in label_values and ("model", "ghost-model") not in label_values
    assert total(samples, "tunegate_prompt_tokens_total", team="airport-cs", alias="other", model="other") >= 11
    teams = {v for k, v in label_values if k == "team"}
    assert teams <= {"airport-cs", "other-team", "other"}
    routes = {v for k, v in label_values if k == "route"}
    assert all(route.startswith("/") or route == "other" for route in routes)
    assert not any("made-up" in route for route in routes)


def test_in_flight_counts_a_stream_until_it_ends(metered: GatewayHandle, fake_upstream: FakeUpstreamHandle) -> None:
    fake_upstream.fault(model="gpt-4o-mini", chunk_delay_ms=300)
    client = _client(metered, "airport-cs")
    with client.chat.completions.with_streaming_response.create(
        model="prompted-prepend", messages=QUESTION, stream=True
    ) as stream:
        chunks = stream.parse()
        next(iter(chunks))  # the stream is open: the first chunk has arrived, the rest are on their way
        during = scrape(metered.url)
        assert total(during, "tunegate_requests_in_flight", endpoint="chat.completions") == 1
        list(chunks)
    after = scrape_when(metered.url, lambda s: total(s, "tunegate_requests_in_flight") == 0)
    assert total(after, "tunegate_requests_in_flight", endpoint="chat.completions") == 0


def test_metrics_need_the_token_when_one_is_configured(metered: GatewayHandle, gateway: GatewayHandle) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {ADMIN_KEY}"}):
        refused = httpx.get(metered.url + "/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(metered.url + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200


def test_metrics_without_a_token_configured_refuse_everyone_and_say_how_to_set_one(gateway: GatewayHandle) -> None:
    # The shared test gateway configures no token (and does not open /metrics): by default nobody may read it.
    for headers in ({}, {"authorization": f"Bearer {ADMIN_KEY}"}, {"authorization": f"Bearer {METRICS_TOKEN}"}):
        refused = httpx.get(gateway.url + "/metrics", headers=headers)
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["code"] == "metrics_token_unset"
        assert "TUNEGATE_METRICS_TOKEN" in error["message"]
        assert "metrics.open: true" in error["message"]
        assert "tunegate_" not in refused.text


def test_metrics_opened_in_the_configuration_answer_without_a_token(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path: Path
) -> None:
    with running_gateway(own_database_url, fake_upstream.base_url, tmp_path, extra="metrics: {open: true}") as handle:
        response = httpx.get(handle.url + "/metrics")
    assert response.status_code == 200
    assert "tunegate_requests_in_flight" in response.text


def test_a_token_named_but_not_set_refuses_everyone(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUNEGATE_TEST_UNSET_TOKEN", raising=False)
    with running_gateway(
        own_database_url, fake_upstream.base_url, tmp_path, extra='metrics: {token: "$TUNEGATE_TEST_UNSET_TOKEN"}'
    ) as handle:
        response = httpx.get(handle.url + "/metrics", headers={"authorization": "Bearer anything"})
    assert response.status_code == 403
    assert "TUNEGATE_TEST_UNSET_TOKEN" in response.json()["error"]["message"]


def test_budget_use_per_team_is_a_gauge(metered: GatewayHandle) -> None:
    response = metered.admin("PUT", "/admin/budgets/other-team", json={"monthly_usd": "250.00", "soft_pct": 75})
    assert response.status_code in (200, 201), response.text
    metered.gateway.metrics.refresh()  # what the refresher thread does every cache.ttl_seconds
    samples = scrape(metered.url)
    budgets = {row["team"]: row for row in metered.admin("GET", "/admin/budgets").json()["data"]}
    spent = Decimal(budgets["other-team"]["spent_usd"])
    assert total(samples, "tunegate_budget_usd", team="other-team") == 250.0
    assert total(samples, "tunegate_budget_soft_threshold_ratio", team="other-team") == 0.75
    assert Decimal(repr(total(samples, "tunegate_budget_spent_usd", team="other-team"))) == spent
    assert total(samples, "tunegate_budget_used_ratio", team="other-team") == pytest.approx(
        float(budgets["other-team"]["used_pct"]) / 100
    )

    assert metered.admin("DELETE", "/admin/budgets/other-team").status_code == 200
    metered.gateway.metrics.refresh()
    assert not [
        s for s in scrape(metered.url) if s.name.startswith("tunegate_budget") and s.labels["team"] == "other-team"
    ]


# -- several processes ------------------------------------------------------------------------------------


@pytest.fixture
def two_processes(tmp_path: Path, fake_upstream: FakeUpstreamHandle) -> Iterator[tuple[str, str]]:
    """Two `tunegate serve` processes on one database and one PROMETHEUS_MULTIPROC_DIR: two workers."""
    config = tmp_path / "tunegate.yaml"
    config.write_text(gateway_yaml(f"sqlite:///{tmp_path / 'shared.db'}", fake_upstream.base_url), encoding="utf-8")
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {
        "TUNEGATE_ADMIN_KEY": ADMIN_KEY,
        "TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "TUNEGATE_METRICS_TOKEN": METRICS_TOKEN,
    }
    with ExitStack() as started:
        urls = [  # one after the other: the first creates the schema
            started.enter_context(
                serve_tunegate(["--config", str(config)], port=free_port(), cwd=tmp_path, env=env)
            ).url
            for _ in range(2)
        ]
        yield urls[0], urls[1]


@pytest.mark.slow
def test_several_processes_share_one_sum(two_processes: tuple[str, str]) -> None:
    first, second = two_processes
    key = httpx.post(
        first + "/admin/keys", json={"team": "airport-cs"}, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ).json()["key"]
    for url, calls in ((first, 3), (second, 2)):
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        for _ in range(calls):
            client.chat.completions.create(model="pudong-support", messages=QUESTION)
    with openai.OpenAI(base_url=second + "/v1", api_key=key, max_retries=0) as client:
        client.embeddings.create(model="embed", input="gate D")

    for url in (first, second):  # either process answers for both
        samples = scrape_when(url, lambda s: total(s, "tunegate_requests_total") >= 6)
        assert total(samples, "tunegate_requests_total") == 6
        assert total(samples, "tunegate_requests_total", alias="pudong-support", team="airport-cs") == 5
        assert_metrics_equal_report(samples, report(url, "team"))
        assert total(samples, "tunegate_requests_in_flight") == 0


def test_the_grafana_dashboard_queries_only_metrics_the_gateway_exports(metered: GatewayHandle) -> None:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text(encoding="utf-8"))
    response = httpx.get(metered.url + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    exported = {family.name for family in text_string_to_metric_families(response.text)}
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried |= set(re.findall(r"\btunegate_[a-z_]+", target["expr"]))
    assert len(queried) >= 15
    for name in sorted(queried):
        assert re.sub(r"_(total|bucket|count|sum)$", "", name) in exported, name
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "team", "alias"}

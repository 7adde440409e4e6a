"""Cost per request, stored with each usage record at its day's price, and the savings of a fine-tune: real
requests through the gateway to the fake upstream, and figures worked out by hand (finance_support's prices)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session, select

from tests.integration.finance_support import (
    ANSWER_TOKENS,
    BRIEF_INJECTED,
    FT_GATES,
    FT_PUDONG,
    QUESTION,
    QUESTION_TOKENS,
    FinanceGateway,
    finance_gateway,
)
from tests.utils.tokens import NEEDS_ENCODINGS, TIKTOKEN_EXACT
from tests.utils.upstreams import FakeUpstreamHandle
from tests.utils.waiting import eventually
from tunegate.registry.models import Team, UsageRecord
from tunegate.registry.usage import Usage


@pytest.fixture(scope="module")
def fin(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FinanceGateway]:
    with finance_gateway(own_database_url, fake_upstream, tmp_path_factory.mktemp("finance-costs")) as handle:
        yield handle


def client(fin: FinanceGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=fin.base_url, api_key=key, max_retries=0)


def cost_of(record: UsageRecord) -> tuple[str, bool]:
    return f"{Decimal(record.cost_usd):.8f}", record.priced


def test_fine_tuned_and_fallback_requests_are_costed_at_their_targets_prices(
    fin: FinanceGateway, fake_upstream: FakeUpstreamHandle
) -> None:
    _team, key, _ = fin.new_team()
    api = client(fin, key)
    tuned = api.chat.completions.with_raw_response.create(model="pudong-support", messages=QUESTION)
    fake_upstream.fault(model=FT_PUDONG, status=503, times=1)
    fallback = api.chat.completions.with_raw_response.create(model="pudong-support", messages=QUESTION)
    assert fallback.headers["x-tunegate-served-by"] == "fallback"

    record = fin.usage(tuned.headers["x-request-id"])
    # ft:gpt-3.5-turbo* today: $3000/M in, $6000/M out: 12 * 3000 + 7 * 6000 = 78,000 → $0.078
    assert (record.prompt_tokens, record.completion_tokens) == (QUESTION_TOKENS, ANSWER_TOKENS)
    assert cost_of(record) == ("0.07800000", True)
    record = fin.usage(fallback.headers["x-request-id"])
    # gpt-3.5-turbo since 2024-06-15: $500/M in, $1500/M out; the prompt carries the injected 7 tokens:
    # 19 * 500 + 7 * 1500 = 20,000 → $0.02
    assert (record.prompt_tokens, record.injected_tokens, record.completion_tokens) == (19, BRIEF_INJECTED, 7)
    assert cost_of(record) == ("0.02000000", True)


def test_cached_prompt_tokens_are_costed_at_the_cached_price(fin: FinanceGateway) -> None:
    _team, key, _ = fin.new_team()
    # A system message the fake upstream has not seen: the first request pays it in full, the second finds it
    # cached (3 + "system" + "Policy" + the hex word = 6 tokens).
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": f"Policy {uuid.uuid4().hex}"},
        *QUESTION,
    ]
    api = client(fin, key)
    first = api.chat.completions.with_raw_response.create(model="mini", messages=messages)
    second = api.chat.completions.with_raw_response.create(model="mini", messages=messages)

    one, two = fin.usage(first.headers["x-request-id"]), fin.usage(second.headers["x-request-id"])
    assert (one.prompt_tokens, one.cached_tokens, one.completion_tokens) == (18, 0, 7)
    assert (two.prompt_tokens, two.cached_tokens, two.completion_tokens) == (18, 6, 7)
    # gpt-4o-mini: $150/M in, $75/M cached, $600/M out.
    assert cost_of(one) == ("0.00690000", True)  # 18 * 150 + 7 * 600 = 6,900
    assert cost_of(two) == ("0.00645000", True)  # 12 * 150 + 6 * 75 + 7 * 600 = 6,450


def test_a_model_without_a_price_costs_zero_and_is_counted_as_unpriced(fin: FinanceGateway) -> None:
    team, key, _ = fin.new_team()
    raw = client(fin, key).chat.completions.with_raw_response.create(model="unpriced", messages=QUESTION)
    assert cost_of(fin.usage(raw.headers["x-request-id"])) == ("0.00000000", False)
    totals = fin.wait_for_requests(team, 1)["totals"]
    assert (totals["cost_usd"], totals["unpriced_requests"], totals["prompt_tokens"]) == ("0.00000000", 1, 12)


def submit_on(fin: FinanceGateway, team: str, day: date, **fields: Any) -> None:
    """A usage record of ``day`` handed to the gateway's usage writer (requests can only happen today)."""
    with Session(fin.engine) as session:
        team_id = session.exec(select(Team.id).where(Team.name == team)).one()
    assert team_id is not None
    at = datetime.combine(day, time(12), tzinfo=UTC)
    defaults: dict[str, Any] = {
        "request_id": f"req_{uuid.uuid4().hex}",
        "endpoint": "chat.completions",
        "upstream": "fake",
        "served_by": "model",
        "status_code": 200,
        "latency_ms": 1.0,
    }
    fin.gateway.usage.submit(Usage(created_at=at, day=day, team_id=team_id, **(defaults | fields)))


def test_a_price_change_in_the_middle_of_the_range_costs_each_day_at_its_price(fin: FinanceGateway) -> None:
    team, _key, _ = fin.new_team()
    # The job that made the fine-tune: 120,000 trained tokens at ft:gpt-3.5-turbo*'s $8000/M → $960. Handed in
    # first: the writer commits records in the order they come, so once the report counts the two requests that
    # follow, this one is in it too (it counts no request itself).
    submit_on(
        fin, team, date(2024, 6, 12), kind="training", endpoint="fine_tuning.jobs", alias="pudong-support",
        model=FT_PUDONG, served_by="training", prompt_tokens=120_000,
    )  # fmt: skip
    for day in (date(2024, 6, 10), date(2024, 6, 20)):
        submit_on(
            fin, team, day, alias="pudong-support", model="gpt-3.5-turbo", prompt_tokens=1000, completion_tokens=500
        )

    june: dict[str, Any] = {"from": "2024-06-01", "to": "2024-06-30", "group_by": "day,kind"}
    body = fin.wait_for_requests(team, 2, **june)
    rows = [(r["day"], r["kind"], r["requests"], r["cost_usd"]) for r in body["data"]]
    assert rows == [
        ("2024-06-10", "inference", 1, "2.00000000"),  # 1000 * $1000/M + 500 * $2000/M
        ("2024-06-12", "training", 0, "960.00000000"),
        ("2024-06-20", "inference", 1, "1.25000000"),  # 1000 * $500/M + 500 * $1500/M
    ]
    assert body["totals"]["cost_usd"] == "963.25000000"
    assert body["totals"]["unpriced_requests"] == 0
    # Re-run: the same figures, because they are sums of what was stored.
    again = fin.report(team=team, **{"from": "2024-06-01", "to": "2024-06-30", "group_by": "day,kind"}).json()
    assert again == body


@pytest.mark.skipif(not TIKTOKEN_EXACT, reason=NEEDS_ENCODINGS)
def test_savings_compares_the_fine_tune_with_the_base_model_and_its_prompt(
    fin: FinanceGateway, fake_upstream: FakeUpstreamHandle
) -> None:
    team, key, _ = fin.new_team()
    api = client(fin, key)
    for _ in range(3):
        api.chat.completions.create(model="gate-support", messages=QUESTION)
    fake_upstream.fault(model=FT_GATES, status=503, times=1)
    assert (
        api.chat.completions.with_raw_response.create(model="gate-support", messages=QUESTION).headers[
            "x-tunegate-served-by"
        ]
        == "fallback"
    )
    submit_on(
        fin, team, date.today(), kind="training", endpoint="fine_tuning.jobs", alias="gate-support",
        model=FT_GATES, served_by="training", prompt_tokens=120_000,
    )  # fmt: skip
    fin.wait_for_requests(team, 4)

    def savings() -> dict[str, Any] | None:  # the training record may come in the writer's next batch
        body: dict[str, Any] = fin.report(path="/admin/savings", alias="gate-support", team=team).json()
        return body if body["training"]["records"] >= 1 else None

    report = eventually(savings, what="the training record in gate-support's savings", interval=0.02)
    assert (report["fine_tuned_model"], report["base_model"], report["base_prompt_tokens"]) == (
        FT_GATES,
        "gpt-3.5-turbo",
        204,
    )
    tuned, based = report["fine_tuned"], report["base_with_prompt"]
    # Three requests served by the fine-tune: 3 * $0.078; each saved the 204-token prompt (612 tokens, at the
    # base model's $500/M: $0.306).
    assert (tuned["requests"], tuned["cost_usd"], tuned["saved_tokens"], tuned["saved_usd"]) == (
        3,
        "0.23400000",
        612,
        "0.30600000",
    )
    # One served by the base model with the prompt: (12 + 204) * 500 + 7 * 1500 = 118,500 → $0.1185; the
    # injected 204 tokens cost $0.102.
    assert (based["requests"], based["cost_usd"], based["injected_tokens"], based["injected_usd"]) == (
        1,
        "0.11850000",
        204,
        "0.10200000",
    )
    # All four at each target's prices: 4 * $0.078 = $0.312 fine-tuned, 4 * $0.1185 = $0.474 with the prompt.
    assert report["at_prices"] == {
        "requests": 4,
        "fine_tuned_usd": "0.31200000",
        "base_with_prompt_usd": "0.47400000",
        "difference_usd": "0.16200000",
        "difference_per_request_usd": "0.04050000",
    }
    assert report["training"] == {"records": 1, "trained_tokens": 120_000, "cost_usd": "960.00000000"}
    # $960 / $0.0405 saved per request = 23,703.7 → it pays for itself after 23,704 requests.
    assert (report["break_even_requests"], report["paid_off"]) == (23_704, False)


@pytest.mark.skipif(not TIKTOKEN_EXACT, reason=NEEDS_ENCODINGS)
def test_a_fine_tune_dearer_than_its_short_prompt_never_breaks_even(fin: FinanceGateway) -> None:
    team, key, _ = fin.new_team()
    client(fin, key).chat.completions.create(model="pudong-support", messages=QUESTION)
    fin.wait_for_requests(team, 1)
    report = fin.report(path="/admin/savings", alias="pudong-support", team=team).json()
    # Fine-tuned $0.078 against (12 + 7) * 500 + 7 * 1500 = $0.02 with the 7-token prompt.
    assert report["at_prices"]["difference_per_request_usd"] == "-0.05800000"
    assert (report["break_even_requests"], report["paid_off"]) == (None, False)
    assert report["training"] == {"records": 0, "trained_tokens": 0, "cost_usd": "0.00000000"}

"""The Responses API on aliases, driven by the openai SDK through the gateway to the fake upstream on loopback:
instructions injected per policy, fallback, streams relayed event by event with their usage recorded, and
stored responses that only the team that created them can see."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest
from sqlmodel import Session, col, select

from tests.utils.gateways import GatewayHandle
from tests.utils.tokens import TIKTOKEN_EXACT
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tunegate.registry.models import UsageRecord

QUESTION = "Where is gate D?"  # 5 tokens by the fake's rule (and tiktoken's)
ANSWER = "Echo: Where is gate D?"
# The fake upstream's documented rule: 3 + (3 + role + text) per message; instructions are a developer message.
QUESTION_TOKENS = 3 + (3 + 1 + 5)
ANSWER_TOKENS = 7
BRIEF = "Answer briefly."  # the prompted-* aliases' system prompt: 3 tokens
BRIEF_TOKENS = 3 + 1 + 3  # what the gateway counts for it: a system message, as for chat
FT_PUDONG = "ft:gpt-3.5-turbo-0613:pudong::8abc123"
FT_FLAKY = "ft:gpt-4o-mini-2024-07-18:pudong::flaky"
EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * ANSWER_TOKENS,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def client(gateway: GatewayHandle, team: str = "airport-cs") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.keys[team], max_retries=0)


def unknown(response_id: str) -> dict[str, Any]:
    return {
        "message": f"Response with id '{response_id}' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_a_response_on_an_alias_answers_under_the_alias_and_records_its_usage(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    raw = client(gateway).responses.with_raw_response.create(model="pudong-support", input=QUESTION)
    response = raw.parse()

    assert (response.model, response.output_text, response.status) == ("pudong-support", ANSWER, "completed")
    assert (raw.headers["x-tunegate-model"], raw.headers["x-tunegate-served-by"]) == (FT_PUDONG, "model")
    sent = fake_upstream.last_json()
    assert (sent["model"], sent["input"]) == (FT_PUDONG, QUESTION)
    assert "instructions" not in sent  # the fine-tune needs no prompt
    assert "stream_options" not in sent
    record = gateway.usage(raw.headers["x-request-id"])
    assert (record.endpoint, record.alias, record.model, record.served_by) == (
        "responses",
        "pudong-support",
        FT_PUDONG,
        "model",
    )
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (
        QUESTION_TOKENS,
        ANSWER_TOKENS,
        0,
    )
    assert (record.status_code, record.partial, record.injected_tokens) == (200, False, 0)


@pytest.mark.parametrize(
    ("alias", "given", "expected", "input_tokens"),
    [
        ("prompted-prepend", None, BRIEF, 3 + (3 + 1 + 3) + 9),
        ("prompted-prepend", "Mine.", f"{BRIEF}\n\nMine.", 3 + (3 + 1 + 5) + 9),
        ("prompted-if-absent", None, BRIEF, 3 + (3 + 1 + 3) + 9),
        ("prompted-if-absent", "Mine.", "Mine.", 3 + (3 + 1 + 2) + 9),
        ("prompted-replace", "Mine.", BRIEF, 3 + (3 + 1 + 3) + 9),
    ],
)
def test_the_targets_prompt_goes_in_as_instructions_under_the_aliases_policy(
    gateway: GatewayHandle,
    fake_upstream: FakeUpstreamHandle,
    alias: str,
    given: str | None,
    expected: str,
    input_tokens: int,
) -> None:
    raw = client(gateway).responses.with_raw_response.create(model=alias, input=QUESTION, instructions=given)
    response = raw.parse()

    assert fake_upstream.last_json()["instructions"] == expected
    assert response.model == alias
    assert response.instructions == expected  # the upstream's object, as it came
    assert response.usage is not None and response.usage.input_tokens == input_tokens
    record = gateway.usage(raw.headers["x-request-id"])
    assert (record.prompt_tokens, record.completion_tokens) == (input_tokens, ANSWER_TOKENS)
    assert record.cached_tokens == response.usage.input_tokens_details.cached_tokens
    injected = expected != given
    assert (record.injected_tokens > 0) == injected
    if TIKTOKEN_EXACT:
        assert record.injected_tokens == (BRIEF_TOKENS if injected else 0)


@pytest.mark.parametrize("fault", [{"status": 503}, {"status": 404}], ids=["503", "model_not_found"])
def test_a_failing_target_falls_back_with_the_fallbacks_prompt(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle, fault: dict[str, Any]
) -> None:
    fake_upstream.fault(model=FT_FLAKY, **fault)
    raw = client(gateway).responses.with_raw_response.create(model="fallback-demo", input=QUESTION)

    assert raw.parse().output_text == ANSWER
    assert raw.parse().model == "fallback-demo"
    assert (raw.headers["x-tunegate-model"], raw.headers["x-tunegate-served-by"]) == ("gpt-4o-mini", "fallback")
    first, second = fake_upstream.requests(2)
    assert (first["json"]["model"], "instructions" in first["json"]) == (FT_FLAKY, False)
    assert (second["json"]["model"], second["json"]["instructions"]) == ("gpt-4o-mini", BRIEF)
    record = gateway.usage(raw.headers["x-request-id"])
    assert (record.served_by, record.model, record.status_code) == ("fallback", "gpt-4o-mini", 200)
    assert (record.prompt_tokens, record.completion_tokens) == (3 + (3 + 1 + 3) + 9, ANSWER_TOKENS)


def test_a_stream_is_relayed_event_by_event_under_the_alias_and_its_usage_recorded(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    with client(gateway).responses.with_streaming_response.create(
        model="prompted-replace", input=QUESTION, stream=True
    ) as streamed:
        request_id = streamed.headers["x-request-id"]
        events = list(streamed.parse())

    assert [event.type for event in events] == EVENTS
    assert [event.sequence_number for event in events] == list(range(len(EVENTS)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == ANSWER
    responses = [e.response for e in events if e.type in ("response.created", "response.completed")]
    assert [r.model for r in responses] == ["prompted-replace", "prompted-replace"]
    completed = events[-1]
    assert completed.type == "response.completed" and completed.response.usage is not None
    assert completed.response.usage.input_tokens == 3 + (3 + 1 + 3) + 9
    assert fake_upstream.last_json()["instructions"] == BRIEF

    record = gateway.usage(request_id)
    assert (record.endpoint, record.partial, record.status_code) == ("responses", False, 200)
    assert (record.prompt_tokens, record.completion_tokens) == (3 + (3 + 1 + 3) + 9, ANSWER_TOKENS)
    assert record.cached_tokens == completed.response.usage.input_tokens_details.cached_tokens
    assert record.ttft_ms is not None


def test_each_streamed_event_keeps_its_event_line(gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle) -> None:
    with httpx.stream(
        "POST",
        gateway.base_url + "/responses",
        headers={"authorization": f"Bearer {gateway.keys['airport-cs']}"},
        json={"model": "pudong-support", "input": QUESTION, "stream": True},
        timeout=10,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert [line.split(": ", 1)[0] for line in lines] == ["event", "data"] * len(EVENTS)
    names = [line.removeprefix("event: ") for line in lines[0::2]]
    data = [orjson.loads(line.removeprefix("data: ")) for line in lines[1::2]]
    assert names == [event["type"] for event in data] == EVENTS
    assert data[-1]["response"]["model"] == "pudong-support"


def test_a_stream_the_upstream_cuts_ends_with_an_error_event_and_a_partial_record(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    fake_upstream.fault(model=FT_PUDONG, drop_after_chunks=5)  # created … part.added, one delta ("Echo")
    with client(gateway).responses.with_streaming_response.create(
        model="pudong-support", input=QUESTION, stream=True
    ) as streamed:
        request_id = streamed.headers["x-request-id"]
        events = list(streamed.parse())

    assert [event.type for event in events] == [*EVENTS[:5], "error"]
    error = events[-1]
    assert error.type == "error" and "Upstream 'fake'" in error.message
    record = gateway.usage(request_id)
    assert (record.partial, record.status_code, record.endpoint) == (True, 502, "responses")
    assert record.prompt_tokens > 0 and record.completion_tokens > 0  # estimated: the upstream never counted
    if TIKTOKEN_EXACT:
        assert (record.prompt_tokens, record.completion_tokens) == (QUESTION_TOKENS, 1)


def test_input_tokens_are_counted_by_the_target_with_the_prompt_injected_and_spend_nothing(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    raw = client(gateway).responses.input_tokens.with_raw_response.count(model="prompted-prepend", input=QUESTION)

    assert raw.parse().input_tokens == 3 + (3 + 1 + 3) + 9  # what the response would count, the prompt included
    assert (raw.headers["x-tunegate-model"], raw.headers["x-tunegate-served-by"]) == ("gpt-4o-mini", "model")
    sent = fake_upstream.requests(1)[-1]
    assert (sent["path"], sent["json"]["model"], sent["json"]["instructions"]) == (
        "/v1/responses/input_tokens",
        "gpt-4o-mini",
        BRIEF,
    )
    fake_upstream.fault(model=FT_FLAKY, status=503)
    fallen = client(gateway).responses.input_tokens.with_raw_response.count(model="fallback-demo", input=QUESTION)
    assert (fallen.parse().input_tokens, fallen.headers["x-tunegate-served-by"]) == (3 + 7 + 9, "fallback")
    with pytest.raises(openai.NotFoundError) as unknown_alias:
        client(gateway).responses.input_tokens.count(model="no-such-alias", input=QUESTION)
    assert unknown_alias.value.code == "model_not_found"

    # Counting spends nothing: the next call's record is written, the counts' never are.
    after = client(gateway).responses.with_raw_response.create(model="pudong-support", input=QUESTION, store=False)
    gateway.usage(after.headers["x-request-id"])
    with Session(gateway.engine) as session:
        counted = [raw.headers["x-request-id"], fallen.headers["x-request-id"]]
        assert session.exec(select(UsageRecord).where(col(UsageRecord.request_id).in_(counted))).all() == []


def test_an_upstream_that_echoes_its_key_has_it_removed_from_error_events_and_refusals(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    created = client(gateway).responses.create(model="pudong-support", input=QUESTION)
    fake_upstream.fault(echo_authorization=True)  # the upstream puts the Authorization it received in its errors
    fake_upstream.fault(model=FT_PUDONG, error_after_chunks=4)
    with httpx.stream(
        "POST",
        gateway.base_url + "/responses",
        headers={"authorization": f"Bearer {gateway.keys['airport-cs']}"},
        json={"model": "pudong-support", "input": QUESTION, "stream": True},
        timeout=10,
    ) as response:
        request_id = response.headers["x-request-id"]
        lines = [line for line in response.iter_lines() if line]
    assert lines[-2:] == [
        "event: error",
        'data: {"type":"error","code":"server_error","message":"The server had an error while streaming. '
        '(Authorization: Bearer ***)","param":null,"sequence_number":4}',
    ]
    record = gateway.usage(request_id)
    assert (record.status_code, record.partial) == (502, True)

    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).responses.cancel(created.id)  # not a background one: the upstream refuses
    assert UPSTREAM_KEY not in str(refused.value.body)
    assert refused.value.body == {
        "message": "Only responses created with background=true can be cancelled. (Authorization: Bearer ***)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_a_stored_response_is_its_teams_only(gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle) -> None:
    mine, theirs = client(gateway), client(gateway, "other-team")
    created = mine.responses.create(
        model="pudong-support", input=[{"role": "user", "content": "First"}, {"role": "user", "content": QUESTION}]
    )

    kept = mine.responses.retrieve(created.id)
    assert (kept.id, kept.model, kept.output_text) == (created.id, "pudong-support", ANSWER)
    items = mine.responses.input_items.list(created.id, order="asc")
    assert [item.content[0].text for item in items.data] == ["First", QUESTION]  # type: ignore[union-attr,index]
    follow_up = mine.responses.create(model="pudong-support", input="And gate E?", previous_response_id=created.id)
    assert fake_upstream.last_json()["previous_response_id"] == created.id

    # Another team: every call on the id is answered as for an id that never existed.
    asked = len(fake_upstream.requests(200))
    for call in (
        lambda: theirs.responses.retrieve(created.id),
        lambda: theirs.responses.delete(created.id),
        lambda: theirs.responses.cancel(created.id),
        lambda: theirs.responses.input_items.list(created.id),
    ):
        with pytest.raises(openai.NotFoundError) as refused:
            call()
        assert refused.value.body == unknown(created.id)
    with pytest.raises(openai.NotFoundError) as never:
        theirs.responses.retrieve("resp_0123456789abcdef")
    assert never.value.body == unknown("resp_0123456789abcdef")
    with pytest.raises(openai.NotFoundError) as previous:
        theirs.responses.create(model="pudong-support", input="Mine now?", previous_response_id=created.id)
    assert previous.value.code == "previous_response_not_found"
    assert previous.value.param == "previous_response_id"
    assert len(fake_upstream.requests(200)) == asked  # none of them reached the upstream

    with pytest.raises(openai.BadRequestError, match="background"):
        mine.responses.cancel(follow_up.id)  # the upstream's own refusal, passed on
    background = mine.responses.create(model="pudong-support", input=QUESTION, background=True)
    assert (background.status, mine.responses.cancel(background.id).status) == ("queued", "cancelled")

    mine.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as deleted:
        mine.responses.retrieve(created.id)
    assert deleted.value.body == unknown(created.id)
    unstored = mine.responses.create(model="pudong-support", input=QUESTION, store=False)
    with pytest.raises(openai.NotFoundError):
        mine.responses.retrieve(unstored.id)


def test_a_streamed_response_belongs_to_its_team_once_created(gateway: GatewayHandle) -> None:
    with client(gateway).responses.stream(model="pudong-support", input=QUESTION) as stream:
        final = stream.get_final_response()
    assert client(gateway).responses.retrieve(final.id).output_text == ANSWER
    with pytest.raises(openai.NotFoundError):
        client(gateway, "other-team").responses.retrieve(final.id)


def test_input_is_required_and_a_team_over_its_budget_is_refused_before_anything_is_spent(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    with pytest.raises(openai.BadRequestError) as missing:
        client(gateway).responses.create(model="pudong-support")
    assert (missing.value.param, missing.value.code) == ("input", "missing_required_parameter")

    team, key = gateway.new_team_key("responses-budget")
    budget = gateway.admin("PUT", f"/admin/budgets/{team}", json={"monthly_usd": "0.00000001"})
    assert budget.status_code in (200, 201), budget.text
    broke = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    httpx.delete(fake_upstream.url + "/_cache").raise_for_status()  # no cached tokens: the price is the list price
    spent = broke.responses.with_raw_response.create(model="prompted-replace", input=QUESTION)
    # gpt-4o-mini: 19 input tokens at $0.15 and 7 output tokens at $0.60 per million
    assert gateway.usage(spent.headers["x-request-id"]).cost_usd == Decimal("0.00000705")
    asked = len(fake_upstream.requests(200))
    with pytest.raises(openai.RateLimitError) as refused:
        broke.responses.create(model="prompted-replace", input=QUESTION)
    assert refused.value.code == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert len(fake_upstream.requests(200)) == asked

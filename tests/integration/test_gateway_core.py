"""The gateway core, driven by the openai SDK against real servers on loopback."""

from __future__ import annotations

import base64
import logging
import struct
from typing import Any, Protocol

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.utils.gateways import GatewayHandle
from tests.utils.openai_schema import validate
from tests.utils.tokens import TIKTOKEN_EXACT
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is gate D?"}]
# The fake upstream's documented count: 3 + per message (3 + role + content); "Where is gate D?" is 5 tokens.
QUESTION_TOKENS = 3 + (3 + 1 + 5)
ANSWER_TOKENS = 7  # "Echo: Where is gate D?"
BRIEF_TOKENS = 3 + 1 + 3  # the injected {"role": "system", "content": "Answer briefly."}


def client(gateway: GatewayHandle, team: str = "airport-cs", **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.keys[team], max_retries=0, **kwargs)


def aclient(gateway: GatewayHandle, team: str = "airport-cs") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=gateway.keys[team], max_retries=0)


def test_alias_resolves_to_its_target_and_answers_under_the_alias(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(model="pudong-support", messages=QUESTION)
    completion = raw.parse()

    assert completion.model == "pudong-support"
    assert completion.choices[0].message.content == "Echo: Where is gate D?"
    assert raw.headers["x-tunegate-model"] == "ft:gpt-3.5-turbo-0613:pudong::8abc123"
    assert raw.headers["x-tunegate-served-by"] == "model"
    sent = fake_upstream.requests(1)[-1]
    assert sent["json"]["model"] == "ft:gpt-3.5-turbo-0613:pudong::8abc123"
    assert sent["json"]["messages"] == QUESTION  # the fine-tune needs no prompt
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the upstream's key, not the client's
    validate(raw.http_response.json(), "CreateChatCompletionResponse")

    record = gateway.usage(raw.headers["x-request-id"])
    stats = fake_upstream.stats()
    assert (record.prompt_tokens, record.completion_tokens) == (QUESTION_TOKENS, ANSWER_TOKENS)
    assert (record.prompt_tokens, record.completion_tokens) == (stats["prompt_tokens"], stats["completion_tokens"])
    assert (record.alias, record.served_by, record.upstream, record.status_code) == (
        "pudong-support",
        "model",
        "fake",
        200,
    )
    assert record.injected_tokens == 0
    assert record.saved_tokens > 0  # the fallback's prompt was not needed


def test_unknown_fields_reach_the_upstream_untouched(gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle) -> None:
    client(gateway).chat.completions.create(
        model="pudong-support", messages=QUESTION, temperature=0.2, extra_body={"vendor_knob": {"x": [1, 2]}}
    )
    sent = fake_upstream.last_json()
    assert sent["temperature"] == 0.2
    assert sent["vendor_knob"] == {"x": [1, 2]}


@pytest.mark.parametrize(
    ("alias", "client_messages", "expected_upstream_messages"),
    [
        (
            "prompted-prepend",
            [{"role": "system", "content": "Mine."}, *QUESTION],
            [{"role": "system", "content": "Answer briefly."}, {"role": "system", "content": "Mine."}, *QUESTION],
        ),
        ("prompted-if-absent", QUESTION, [{"role": "system", "content": "Answer briefly."}, *QUESTION]),
        (
            "prompted-if-absent",
            [{"role": "developer", "content": "Mine."}, *QUESTION],
            [{"role": "developer", "content": "Mine."}, *QUESTION],
        ),
        (
            "prompted-replace",
            [{"role": "system", "content": "Mine."}, *QUESTION],
            [{"role": "system", "content": "Answer briefly."}, *QUESTION],
        ),
    ],
)
def test_system_prompt_injection_policies(
    gateway: GatewayHandle,
    fake_upstream: FakeUpstreamHandle,
    alias: str,
    client_messages: list[ChatCompletionMessageParam],
    expected_upstream_messages: list[dict[str, str]],
) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(model=alias, messages=client_messages)
    assert fake_upstream.last_json()["messages"] == expected_upstream_messages
    injected = expected_upstream_messages[0]["content"] == "Answer briefly."
    record = gateway.usage(raw.headers["x-request-id"])
    assert (record.injected_tokens > 0) == injected
    if TIKTOKEN_EXACT:
        assert record.injected_tokens == (BRIEF_TOKENS if injected else 0)  # tiktoken agrees with the fake here


def _fallback_case(fake_upstream: FakeUpstreamHandle, kind: str) -> str:
    model = "ft:gpt-4o-mini-2024-07-18:pudong::flaky"
    if kind == "connection":
        return "unreachable-primary"
    if kind == "timeout":
        fake_upstream.fault(model=model, delay_ms=2500)  # the test gateway's read timeout is 1.5 s
    elif kind == "404":
        fake_upstream.fault(model=model, status=404)
    else:
        fake_upstream.fault(model=model, status=int(kind))
    return "fallback-demo"


@pytest.mark.parametrize("kind", ["503", "500", "404", "connection", "timeout"])
def test_failed_target_falls_back_with_the_prompt(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle, kind: str
) -> None:
    alias = _fallback_case(fake_upstream, kind)
    raw = client(gateway).chat.completions.with_raw_response.create(model=alias, messages=QUESTION)
    assert raw.headers["x-tunegate-served-by"] == "fallback"
    assert raw.headers["x-tunegate-model"] == "gpt-4o-mini"
    assert raw.parse().model == alias
    sent = fake_upstream.last_json()
    assert sent["model"] == "gpt-4o-mini"
    assert [m["content"] for m in sent["messages"]].count("Answer briefly.") == 1
    record = gateway.usage(raw.headers["x-request-id"])
    assert (record.served_by, record.prompt_tokens) == ("fallback", QUESTION_TOKENS + BRIEF_TOKENS)


@pytest.mark.parametrize("kind", ["503", "connection"])
def test_stream_falls_back_before_the_first_byte(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle, kind: str
) -> None:
    alias = _fallback_case(fake_upstream, kind)
    with client(gateway).chat.completions.with_streaming_response.create(
        model=alias, messages=QUESTION, stream=True
    ) as response:
        assert response.headers["x-tunegate-served-by"] == "fallback"
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
    assert text == "Echo: Where is gate D?"


def test_stream_relays_chunks_and_hides_the_usage_chunk_it_asked_for(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    with client(gateway).chat.completions.with_streaming_response.create(
        model="pudong-support", messages=QUESTION, stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    assert all(chunk.model == "pudong-support" for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk: the client did not ask for one
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: Where is gate D?"
    assert fake_upstream.last_json()["stream_options"] == {"include_usage": True}
    record = gateway.usage(request_id)
    assert (record.prompt_tokens, record.completion_tokens, record.partial) == (QUESTION_TOKENS, ANSWER_TOKENS, False)
    assert record.ttft_ms is not None


def test_stream_with_include_usage_gets_exactly_what_openai_sends(gateway: GatewayHandle) -> None:
    with client(gateway).chat.completions.with_streaming_response.create(
        model="pudong-support", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    ) as raw:
        events = [line for line in raw.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    import json

    chunks = [json.loads(line[6:]) for line in events[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == QUESTION_TOKENS
    assert all("usage" in chunk for chunk in chunks)


async def test_async_client_non_stream_and_stream(gateway: GatewayHandle) -> None:
    async with aclient(gateway) as api:
        completion = await api.chat.completions.create(model="pudong-support", messages=QUESTION)
        assert completion.choices[0].message.content == "Echo: Where is gate D?"
        stream = await api.chat.completions.create(
            model="pudong-support", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
        assert usage is not None and usage.completion_tokens == ANSWER_TOKENS


def test_upstream_dropping_mid_stream_becomes_an_error_event_and_a_partial_record(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    fake_upstream.fault(model="ft:gpt-3.5-turbo-0613:pudong::8abc123", drop_after_chunks=3)
    with client(gateway).chat.completions.with_streaming_response.create(
        model="pudong-support", messages=QUESTION, stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        with pytest.raises(openai.APIError, match="Upstream 'fake'"):
            for _ in response.parse():
                pass
    record = gateway.usage(request_id)
    assert record.partial is True
    assert record.status_code == 502
    assert record.prompt_tokens > 0


def test_abandoned_stream_still_gets_a_partial_record(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle, caplog: pytest.LogCaptureFixture
) -> None:
    fake_upstream.fault(model="ft:gpt-3.5-turbo-0613:pudong::8abc123", chunk_delay_ms=50)
    caplog.set_level(logging.INFO)
    with httpx.stream(
        "POST",
        gateway.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {gateway.keys['airport-cs']}"},
        json={"model": "pudong-support", "messages": QUESTION, "stream": True},
        timeout=10,
    ) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    record = gateway.usage(request_id)
    assert record.partial is True
    if TIKTOKEN_EXACT:
        assert record.prompt_tokens == QUESTION_TOKENS  # estimated with tiktoken: same figure for this message
    assert record.completion_tokens < ANSWER_TOKENS
    # A client that leaves is no error of the gateway's: nothing logged above INFO (no "Exception in ASGI app").
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []


def test_completions_and_its_stream(gateway: GatewayHandle) -> None:
    api = client(gateway)
    completion = api.completions.create(model="legacy", prompt="Say hi")
    assert completion.model == "legacy"
    assert completion.choices[0].text == "Echo: Say hi"
    validate(
        api.completions.with_raw_response.create(model="legacy", prompt="Hi").http_response.json(),
        "CreateCompletionResponse",
    )
    text = "".join(
        chunk.choices[0].text for chunk in api.completions.create(model="legacy", prompt="Say hi", stream=True)
    )
    assert text == "Echo: Say hi"


def test_embeddings_float_and_base64(gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle) -> None:
    api = client(gateway)
    default = api.embeddings.create(model="embed", input=["hello world", "浦东"])  # the SDK asks for base64
    assert fake_upstream.last_json()["encoding_format"] == "base64"
    as_float = api.embeddings.create(model="embed", input=["hello world", "浦东"], encoding_format="float")
    assert default.model == as_float.model == "embed"
    assert default.usage.prompt_tokens == 2 + 2
    for a, b in zip(default.data, as_float.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    raw = httpx.post(
        gateway.base_url + "/embeddings",
        headers={"authorization": f"Bearer {gateway.keys['airport-cs']}"},
        json={"model": "embed", "input": "hi", "encoding_format": "base64"},
    ).json()
    vector = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert len(vector) == 8
    validate(
        api.embeddings.with_raw_response.create(
            model="embed", input="hi", encoding_format="float"
        ).http_response.json(),
        "CreateEmbeddingResponse",
    )


def test_models_lists_exactly_what_the_team_may_call(gateway: GatewayHandle) -> None:
    mine = {model.id for model in client(gateway).models.list()}
    theirs = {model.id for model in client(gateway, "other-team").models.list()}
    assert "pudong-support" in mine and "pudong-support" in theirs
    assert "other-only" in theirs and "other-only" not in mine
    assert client(gateway).models.retrieve("pudong-support").id == "pudong-support"
    page = httpx.get(gateway.base_url + "/models", headers={"authorization": f"Bearer {gateway.keys['airport-cs']}"})
    validate(page.json(), "ListModelsResponse")
    with pytest.raises(openai.NotFoundError):
        client(gateway).models.retrieve("other-only")


# -- bad input ------------------------------------------------------------------------------------------


def _post(
    gateway: GatewayHandle, body: bytes | None = None, key: str | None = "airport-cs", **kw: Any
) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {gateway.keys.get(key, key)}"
    return httpx.post(gateway.base_url + "/chat/completions", content=body, headers=headers, **kw)


class _Answer(Protocol):  # an httpx response, or the one the SDK's error carries (its own HTTP client's)
    def json(self) -> Any: ...


def _error(response: _Answer) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def test_malformed_json_and_missing_fields_are_400(gateway: GatewayHandle) -> None:
    response = _post(gateway, b"{not json")
    assert response.status_code == 400 and _error(response)["type"] == "invalid_request_error"
    assert _error(_post(gateway, b"[1, 2]"))["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as missing_model:
        client(gateway).chat.completions.create(model="", messages=QUESTION)
    assert missing_model.value.status_code == 400 and missing_model.value.param == "model"
    missing_messages = _post(gateway, b'{"model": "pudong-support"}')
    assert missing_messages.status_code == 400 and _error(missing_messages)["param"] == "messages"


def test_missing_or_unknown_key_is_401(gateway: GatewayHandle) -> None:
    assert _post(gateway, b"{}", key=None).status_code == 401
    with pytest.raises(openai.AuthenticationError) as unknown:
        openai.OpenAI(base_url=gateway.base_url, api_key="tg-nope", max_retries=0).chat.completions.create(
            model="pudong-support", messages=QUESTION
        )
    assert unknown.value.code == "invalid_api_key"


def test_unknown_alias_and_other_teams_alias_get_the_same_404(gateway: GatewayHandle) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client(gateway).chat.completions.create(model="no-such-alias", messages=QUESTION)
    with pytest.raises(openai.NotFoundError) as foreign:
        client(gateway).chat.completions.create(model="other-only", messages=QUESTION)
    assert unknown.value.code == foreign.value.code == "model_not_found"
    assert str(unknown.value.message).replace("no-such-alias", "X") == str(foreign.value.message).replace(
        "other-only", "X"
    )


def test_unreachable_upstream_without_fallback_is_502_naming_it_not_its_key(gateway: GatewayHandle) -> None:
    with pytest.raises(openai.InternalServerError) as error:
        client(gateway).chat.completions.create(model="unreachable", messages=QUESTION)
    assert error.value.status_code == 502
    assert "'down'" in error.value.message
    assert UPSTREAM_KEY not in error.value.response.text


def test_body_over_the_limit_is_413(gateway: GatewayHandle) -> None:
    big: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * 70_000}]
    with pytest.raises(openai.APIStatusError) as error:
        client(gateway).chat.completions.create(model="pudong-support", messages=big)
    assert error.value.status_code == 413
    assert _error(error.value.response)["code"] == "request_too_large"


def test_model_calls_answer_the_same_through_litestar_and_around_it(gateway: GatewayHandle) -> None:
    """`/v1/chat/completions` is served ahead of litestar's router (tunegate.proxy.app.ModelCalls); with a trailing
    slash it goes through litestar's router and handler: the same answer, error and headers either way."""
    auth = {"authorization": f"Bearer {gateway.keys['airport-cs']}"}
    body = {"model": "pudong-support", "messages": QUESTION}
    answers = [
        httpx.post(gateway.base_url + path, json=body, headers=auth)
        for path in ("/chat/completions", "/chat/completions/")
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["choices"] == answers[1].json()["choices"]
    assert {a.headers["content-type"] for a in answers} == {"application/json"}
    assert all(a.headers["x-request-id"].startswith("req_") for a in answers)
    errors = [
        httpx.post(gateway.base_url + path, json={"model": "pudong-support"}, headers=auth)
        for path in ("/chat/completions", "/chat/completions/")
    ]
    assert [e.status_code for e in errors] == [400, 400]
    assert _error(errors[0]) == _error(errors[1])
    assert _error(errors[0])["code"] == "missing_required_parameter"
    wrong_method = httpx.put(gateway.base_url + "/chat/completions", headers=auth)  # GET lists stored ones
    assert wrong_method.status_code == 405 and _error(wrong_method)["message"].startswith("Method PUT is not allowed")


def test_upstream_client_error_is_passed_on(gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle) -> None:
    fake_upstream.fault(model="gpt-4o-mini", status=400, message="'temperature' must be at most 2")
    with pytest.raises(openai.BadRequestError, match="'temperature' must be at most 2"):
        client(gateway).chat.completions.create(model="prompted-replace", messages=QUESTION, temperature=5)


# -- admin bootstrap and health ---------------------------------------------------------------------------


def test_admin_creates_a_team_and_a_key_that_works(gateway: GatewayHandle) -> None:
    team, key = gateway.new_team_key("bootstrap")
    api = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    assert key.startswith("tg-")
    assert {m.id for m in api.models.list()} >= {"pudong-support"}
    duplicate = gateway.admin("POST", "/admin/teams", json={"name": team})
    assert duplicate.status_code == 409 and team in _error(duplicate)["message"]
    unknown_team = gateway.admin("POST", "/admin/keys", json={"team": "no-such-team"})
    assert unknown_team.status_code == 404
    bad_name = gateway.admin("POST", "/admin/teams", json={"nme": "x"})
    assert bad_name.status_code == 400


def test_admin_needs_the_admin_key(gateway: GatewayHandle) -> None:
    for key in (None, gateway.keys["airport-cs"], "wrong"):
        headers = {"authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(gateway.url + "/admin/teams", json={"name": "x"}, headers=headers)
        assert response.status_code == 401
        assert _error(response)["code"] == "invalid_api_key"


def test_health_and_readiness(gateway: GatewayHandle) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(gateway.url + "/readyz").json() == {"status": "ready"}


def test_unknown_route_is_an_openai_shaped_404(gateway: GatewayHandle) -> None:
    response = httpx.get(gateway.base_url + "/nope")
    assert response.status_code == 404 and _error(response)["type"] == "invalid_request_error"

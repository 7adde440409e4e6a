"""The fake OpenAI upstream, driven over real HTTP by the official SDK and checked against OpenAI's schemas."""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)

from tests.utils.openai_schema import validate
from tests.utils.waiting import eventually
from tunegate.proxy.fake_upstream import FakeUpstream, count_tokens, server

KEY = "sk-test-fake-upstream"
# 3 + 1 + 4 ("You", "are", "terse", ".") = 8
SYSTEM: ChatCompletionSystemMessageParam = {"role": "system", "content": "You are terse."}
# 3 + 1 + 4 ("Hello", ",", "world", "!") = 8
USER: ChatCompletionUserMessageParam = {"role": "user", "content": "Hello, world!"}
REPLY = "Echo: Hello, world!"  # "Echo", ":", "Hello", ",", "world", "!" = 6
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # port 0: the OS picks a free port; uvicorn serves on this very socket
    port = sock.getsockname()[1]
    srv = server(FakeUpstream(api_key=KEY), host="127.0.0.1", port=port)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    eventually(lambda: srv.started, what="the fake upstream to start", interval=0.01)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {KEY}"}) as client:
        yield client


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(autouse=True)
def _reset(http: httpx.Client) -> None:
    for path in ("/_faults", "/_stats", "/_cache"):
        http.delete(path).raise_for_status()


def _sse(http: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", path, json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def _training_file() -> bytes:
    rows = [
        # 3 + (3 + 1 + 1) + (3 + 1 + 2) = 14
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        # 3 + (3 + 1 + 3) + (3 + 1 + 4: "2", "+", "2", "?") + (3 + 1 + 1) = 23
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
    ]
    return b"".join(json.dumps({"messages": m}).encode() + b"\n" for m in rows)


# --- token rule -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("   ", 0), ("Hello, world!", 4), ("it's 42", 4), ("你好, world", 4), ('{"a": 1}', 7)],
)
def test_count_tokens(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


# --- chat -------------------------------------------------------------------------------------------------


def test_chat_echo_usage_and_prompt_cache(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=[SYSTEM, USER])
    assert first.id.startswith("chatcmpl-") and first.model == "gpt-4o-mini"
    assert first.choices[0].message.content == REPLY and first.choices[0].finish_reason == "stop"
    assert first.usage is not None and first.usage.prompt_tokens_details is not None
    assert (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.total_tokens) == (19, 6, 25)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # The same system prompt again: 3 + count("system") + count("You are terse.") = 8 tokens are cached.
    second = client.chat.completions.create(model="any-model-name", messages=[SYSTEM, USER])
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == 8


def test_chat_prompt_rule_counts_names_parts_and_tool_calls(client: openai.OpenAI) -> None:
    messages: list[Any] = [
        {"role": "user", "name": "bob", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " you"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "user", "content": "Thanks"},
    ]
    reply = client.chat.completions.create(model="gpt-4o", messages=messages)
    # 3 + (3+1+2+1 name) + (3+1+0 + 3 "get_weather" + 9 '{"city": "Paris"}') + (3+1+1) + (3+1+1)
    assert reply.usage is not None and reply.usage.prompt_tokens == 36
    assert reply.choices[0].message.content == "Echo: Thanks"


def test_chat_max_tokens_truncates_and_n_multiplies(client: openai.OpenAI) -> None:
    cut = client.chat.completions.create(model="gpt-4o-mini", messages=[USER], max_tokens=3)
    assert cut.choices[0].message.content == "Echo: Hello" and cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 3
    cut = client.chat.completions.create(model="gpt-4o-mini", messages=[USER], max_completion_tokens=5)
    assert cut.choices[0].message.content == "Echo: Hello, world"
    many = client.chat.completions.create(model="gpt-4o-mini", messages=[USER], n=2)
    assert [c.index for c in many.choices] == [0, 1]
    assert all(c.message.content == REPLY for c in many.choices)
    assert many.usage is not None and (many.usage.prompt_tokens, many.usage.completion_tokens) == (11, 12)


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[SYSTEM, USER], stream=True, stream_options={"include_usage": True}
        )
    )
    assert len(chunks) == 1 + 6 + 1 + 1  # role, one per token, finish, usage
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:7]] == ["Echo", ":", " Hello", ",", " world", "!"]
    assert chunks[7].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (19, 6)


def test_chat_tool_calls(client: openai.OpenAI) -> None:
    auto = client.chat.completions.create(model="gpt-4o", messages=[USER], tools=TOOLS)
    choice = auto.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert (call.function.name, call.function.arguments) == ("get_weather", "{}")
    assert auto.usage is not None and auto.usage.completion_tokens == 5  # "get", "_", "weather", "{", "}"

    named = client.chat.completions.create(
        model="gpt-4o",
        messages=[USER],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert named.choices[0].message.tool_calls is not None
    assert isinstance(named.choices[0].message.tool_calls[0], ChatCompletionMessageFunctionToolCall)
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"

    none = client.chat.completions.create(model="gpt-4o", messages=[USER], tools=TOOLS, tool_choice="none")
    assert none.choices[0].message.content == REPLY

    stream = client.chat.completions.create(model="gpt-4o", messages=[USER], tools=TOOLS, stream=True)
    name, arguments, finish = "", "", None
    for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            assert delta_call.index == 0
            if delta_call.function:
                name += delta_call.function.name or ""
                arguments += delta_call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, arguments, finish) == ("get_weather", "{}", "tool_calls")


# --- legacy completions and embeddings --------------------------------------------------------------------


def test_completions(client: openai.OpenAI) -> None:
    done = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert done.object == "text_completion" and done.choices[0].text == "Echo: Say hi"
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (2, 4)
    cut = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=["Say hi", "Bye"], max_tokens=2)
    assert (cut.choices[0].text, cut.choices[0].finish_reason) == ("Echo:", "length")
    assert cut.usage is not None and cut.usage.prompt_tokens == 3
    ids = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=[[1, 2, 3], [4]])
    assert ids.usage is not None and ids.usage.prompt_tokens == 4

    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: Say hi"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1] and floats.usage.prompt_tokens == 3
    vector = floats.data[0].embedding
    assert len(vector) == 8 and all(-1 <= v <= 1 for v in vector)
    assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-9)
    assert floats.data[0].embedding != floats.data[1].embedding
    # The SDK asks for base64 by default and decodes it; float32 must match the float answer.
    decoded = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    for a, b in zip(decoded.data, floats.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    wide = client.embeddings.create(model="text-embedding-3-small", input="Hello, world!", dimensions=1536)
    assert len(wide.data[0].embedding) == 1536 and wide.usage.total_tokens == 4
    tokens = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2], [3]], encoding_format="float")
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 3


def test_embeddings_raw_base64(http: httpx.Client) -> None:
    body = {"model": "e", "input": "a b", "encoding_format": "base64", "dimensions": 4}
    raw = http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]
    floats = http.post("/v1/embeddings", json={**body, "encoding_format": "float"}).json()["data"][0]["embedding"]
    assert list(struct.unpack("<4f", base64.b64decode(raw))) == pytest.approx(floats, abs=1e-6)


# --- models, files, fine-tuning ---------------------------------------------------------------------------


def test_models(client: openai.OpenAI, http: httpx.Client) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"gpt-3.5-turbo", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= set(ids)
    assert client.models.retrieve("gpt-4o").object == "model"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("nope")
    assert err.value.code == "model_not_found"

    http.post("/_models", json={"id": "gpt-old", "shutdown_date": "2027-01-14"}).raise_for_status()
    assert http.get("/v1/models/gpt-old").json()["shutdown_date"] == "2027-01-14"
    http.post("/_models", json={"id": "gpt-old", "shutdown_date": None}).raise_for_status()
    assert "shutdown_date" not in http.get("/v1/models/gpt-old").json()


def test_files(client: openai.OpenAI) -> None:
    created = client.files.create(file=("train.jsonl", _training_file()), purpose="fine-tune")
    assert created.id.startswith("file-") and created.filename == "train.jsonl"
    assert (created.bytes, created.purpose, created.status) == (len(_training_file()), "fine-tune", "processed")
    assert created.id in [f.id for f in client.files.list(purpose="fine-tune")]
    assert created.id not in [f.id for f in client.files.list(purpose="batch")]
    assert client.files.retrieve(created.id).id == created.id
    assert client.files.content(created.id).read() == _training_file()
    deleted = client.files.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_fine_tuning_lifecycle(client: openai.OpenAI) -> None:
    training = client.files.create(file=("train.jsonl", _training_file()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        training_file=training.id,
        model="gpt-4o-mini-2024-07-18",
        suffix="demo",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        metadata={"team": "search"},
    )
    assert job.id.startswith("ftjob-") and job.status == "validating_files" and job.fine_tuned_model is None
    statuses = [client.fine_tuning.jobs.retrieve(job.id).status for _ in range(3)]
    assert statuses == ["queued", "running", "succeeded"]
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.finished_at is not None and done.error is None
    assert done.fine_tuned_model == f"ft:gpt-4o-mini-2024-07-18:fake-org:demo:{job.id[-6:]}"
    assert done.trained_tokens == 2 * (14 + 23)
    assert done.fine_tuned_model in [m.id for m in client.models.list()]

    events = list(client.fine_tuning.jobs.list_events(job.id))
    assert len(events) == 4 and "successfully completed" in events[0].message  # newest first
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert len(checkpoints) == 1 and checkpoints[0].fine_tuning_job_id == job.id
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)

    default = client.fine_tuning.jobs.create(training_file=training.id, model="gpt-4o-mini")
    assert default.hyperparameters.n_epochs == 3
    assert client.fine_tuning.jobs.cancel(default.id).status == "cancelled"
    listed = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in listed.data] == [default.id] and listed.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "search"})] == [job.id]

    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(training_file="file-missing", model="gpt-4o-mini")
    assert err.value.param == "training_file"


def test_fine_tune_fail_fault(client: openai.OpenAI, http: httpx.Client) -> None:
    training = client.files.create(file=("train.jsonl", _training_file()), purpose="fine-tune")
    http.post("/_faults", json={"fine_tune": "fail"}).raise_for_status()
    job = client.fine_tuning.jobs.create(training_file=training.id, model="gpt-4o-mini")
    for _ in range(3):
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "failed" and job.fine_tuned_model is None and job.error is not None
    assert (job.error.code, job.error.param) == ("invalid_training_file", "training_file")
    again = client.fine_tuning.jobs.create(training_file=training.id, model="gpt-4o-mini")
    for _ in range(3):
        again = client.fine_tuning.jobs.retrieve(again.id)
    assert again.status == "succeeded"  # the fault applies to one job only


# --- faults, auth, observability --------------------------------------------------------------------------


def test_status_faults(client: openai.OpenAI, http: httpx.Client) -> None:
    http.post("/_faults", json={"model": "flaky", "status": 503}).raise_for_status()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as server_error:
            client.chat.completions.create(model="flaky", messages=[USER])
    assert server_error.value.status_code == 503 and server_error.value.type == "server_error"
    assert client.chat.completions.create(model="other", messages=[USER]).choices  # matching is exact

    http.post("/_faults", json={"model": "gone", "status": 404, "times": 1}).raise_for_status()
    with pytest.raises(openai.NotFoundError) as not_found:
        client.embeddings.create(model="gone", input="x")
    assert not_found.value.code == "model_not_found"
    assert not_found.value.body == {
        "message": "The model `gone` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    assert client.embeddings.create(model="gone", input="x").data  # times=1: the next request passes

    http.post("/_faults", json={"model": "busy", "status": 429}).raise_for_status()
    with pytest.raises(openai.RateLimitError) as limited:
        client.completions.create(model="busy", prompt="x")
    assert (limited.value.code, limited.value.type) == ("rate_limit_exceeded", "requests")

    http.delete("/_faults").raise_for_status()
    assert client.chat.completions.create(model="flaky", messages=[USER]).choices


def test_drop_and_delay_faults(client: openai.OpenAI, http: httpx.Client) -> None:
    http.post("/_faults", json={"model": "dropper", "drop_after_chunks": 2}).raise_for_status()
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="dropper", messages=[USER], stream=True):
            received.append(chunk)
    assert len(received) == 2
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="dropper", messages=[USER])

    http.post("/_faults", json={"model": "slow", "delay_ms": 200}).raise_for_status()
    start = time.monotonic()
    client.chat.completions.create(model="slow", messages=[USER])
    assert time.monotonic() - start >= 0.2

    http.post("/_faults", json={"model": "trickle", "chunk_delay_ms": 20}).raise_for_status()
    start = time.monotonic()
    assert len(list(client.chat.completions.create(model="trickle", messages=[USER], stream=True))) == 8
    assert time.monotonic() - start >= 7 * 0.02
    assert http.get("/_stats").json()["by_endpoint"] == {"chat.completions": 2}  # the drops are not counted


def test_auth(base_url: str) -> None:
    wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong-key-0000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.models.list()
    assert err.value.code == "invalid_api_key"
    missing = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "m", "messages": [USER]})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"


def test_stats_and_recorded_requests(client: openai.OpenAI, http: httpx.Client) -> None:
    http.post("/_faults", json={"model": "broken", "status": 500}).raise_for_status()
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken", messages=[USER])
    client.chat.completions.create(model="gpt-4o-mini", messages=[USER])  # 11 + 6
    http.post("/_faults", json={"model": "gpt-4o-mini", "chunk_delay_ms": 50}).raise_for_status()  # ≈ 0.4 s stream
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[USER], stream=True, stream_options={"include_usage": True}
    )
    assert http.get("/_stats").json()["requests"] == 1  # a stream counts once it completes
    list(stream)
    client.embeddings.create(model="text-embedding-3-small", input="Hello, world!")  # 4
    stats = http.get("/_stats").json()
    assert stats["requests"] == 3
    assert stats["by_endpoint"] == {"chat.completions": 2, "embeddings": 1}
    assert (stats["prompt_tokens"], stats["completion_tokens"], stats["total_tokens"]) == (26, 12, 38)
    assert stats["by_model"]["gpt-4o-mini"] == {
        "requests": 2,
        "prompt_tokens": 22,
        "completion_tokens": 12,
        "cached_tokens": 0,
        "total_tokens": 34,
    }

    recorded = http.get("/_requests", params={"limit": 2}).json()
    assert [r["path"] for r in recorded] == ["/v1/chat/completions", "/v1/embeddings"]
    assert recorded[-1]["method"] == "POST" and recorded[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    assert recorded[-1]["json"]["input"] == "Hello, world!"
    http.delete("/_stats").raise_for_status()
    assert http.get("/_stats").json()["requests"] == 0 and http.get("/_requests").json() == []


def test_openai_shaped_errors(http: httpx.Client) -> None:
    cases = [
        (http.post("/v1/chat/completions", content=b"{not json"), 400, None),
        (http.post("/v1/chat/completions", json={"model": "m"}), 400, "messages"),
        (http.post("/v1/chat/completions", json={"messages": [USER]}), 400, "model"),
        (http.post("/v1/embeddings", json={"model": "m", "input": [True]}), 400, "input"),
        (http.get("/v1/nowhere"), 404, None),
        (http.get("/v1/files/file-missing"), 404, "id"),
    ]
    for response, status, param in cases:
        assert response.status_code == status
        error = response.json()["error"]
        assert error["param"] == param and error["message"]
        assert error["type"] == "invalid_request_error"


async def test_each_sse_chunk_is_its_own_asgi_message() -> None:
    app, sent = FakeUpstream(), []
    body = json.dumps({"model": "m", "messages": [USER], "stream": True}).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"", "headers": []}
    await app(scope, receive, send)
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == 1 + 6 + 1 + 1  # role, tokens, finish, [DONE]
    assert all(b.startswith(b"data: ") and b.endswith(b"\n\n") and b.count(b"data: ") == 1 for b in bodies)


# --- published schemas ------------------------------------------------------------------------------------


def test_inference_responses_match_published_schemas(http: httpx.Client) -> None:
    chat = {"model": "gpt-4o-mini", "messages": [SYSTEM, USER]}
    validate(http.post("/v1/chat/completions", json=chat).json(), "CreateChatCompletionResponse")
    validate(http.post("/v1/chat/completions", json={**chat, "n": 2}).json(), "CreateChatCompletionResponse")
    tool = http.post("/v1/chat/completions", json={**chat, "tools": TOOLS}).json()
    validate(tool, "CreateChatCompletionResponse")
    for extra in ({}, {"tools": TOOLS}):
        body = {**chat, **extra, "stream": True, "stream_options": {"include_usage": True}}
        for chunk in _sse(http, "/v1/chat/completions", body):
            validate(chunk, "CreateChatCompletionStreamResponse")
    completion = http.post("/v1/completions", json={"model": "m", "prompt": "Say hi", "max_tokens": 1}).json()
    validate(completion, "CreateCompletionResponse")
    validate(http.post("/v1/embeddings", json={"model": "e", "input": ["a", "b"]}).json(), "CreateEmbeddingResponse")
    error = http.post("/v1/chat/completions", json={"model": "m"}).json()
    validate(error, "ErrorResponse")


def test_resource_responses_match_published_schemas(http: httpx.Client) -> None:
    validate(http.get("/v1/models").json(), "ListModelsResponse")
    http.post("/_models", json={"id": "gpt-dated", "shutdown_date": "2027-01-14"}).raise_for_status()
    validate(http.get("/v1/models/gpt-dated").json(), "Model")
    files = {"file": ("train.jsonl", _training_file())}
    file = http.post("/v1/files", data={"purpose": "fine-tune"}, files=files).json()
    validate(file, "OpenAIFile")
    validate(http.get("/v1/files").json(), "ListFilesResponse")
    job = http.post("/v1/fine_tuning/jobs", json={"training_file": file["id"], "model": "gpt-4o-mini"}).json()
    validate(job, "FineTuningJob")
    for _ in range(3):
        validate(http.get(f"/v1/fine_tuning/jobs/{job['id']}").json(), "FineTuningJob")
    validate(http.get("/v1/fine_tuning/jobs").json(), "ListPaginatedFineTuningJobsResponse")
    validate(http.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json(), "ListFineTuningJobEventsResponse")
    checkpoints = http.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()
    validate(checkpoints, "ListFineTuningJobCheckpointsResponse")
    validate(http.delete(f"/v1/files/{file['id']}").json(), "DeleteFileResponse")


# --- responses --------------------------------------------------------------------------------------------

# 3 + (3 + 1 ("developer") + 4 ("You are terse.")) + (3 + 1 + 4 ("Hello, world!")) = 19
RESPONSE_INPUT_TOKENS = 19
RESPONSE_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 6,  # "Echo", ":", " Hello", ",", " world", "!"
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_responses_echo_usage_and_instructions_cache(client: openai.OpenAI) -> None:
    first = client.responses.create(model="gpt-4o-mini", input="Hello, world!", instructions="You are terse.")
    again = client.responses.create(model="gpt-4o-mini", input="Hello, world!", instructions="You are terse.")

    assert (first.output_text, first.status, first.model) == (REPLY, "completed", "gpt-4o-mini")
    assert first.usage is not None and again.usage is not None
    assert (first.usage.input_tokens, first.usage.output_tokens, first.usage.total_tokens) == (19, 6, 25)
    assert first.usage.input_tokens_details.cached_tokens == 0
    assert again.usage.input_tokens_details.cached_tokens == 3 + 1 + 4  # the instructions, seen before
    assert first.usage.output_tokens_details.reasoning_tokens == 0
    no_instructions = client.responses.create(model="gpt-4o-mini", input=[{"role": "user", "content": REPLY[6:]}])
    assert no_instructions.usage is not None and no_instructions.usage.input_tokens == 3 + 8
    counted = client.responses.input_tokens.count(
        model="gpt-4o-mini", input="Hello, world!", instructions="You are terse."
    )
    assert counted.input_tokens == RESPONSE_INPUT_TOKENS
    cut = client.responses.create(model="gpt-4o-mini", input="Hello, world!", max_output_tokens=2)
    assert (cut.status, cut.output_text) == ("incomplete", "Echo:")
    assert cut.incomplete_details is not None and cut.incomplete_details.reason == "max_output_tokens"


def test_responses_stream_sends_each_event_with_its_event_line(client: openai.OpenAI, http: httpx.Client) -> None:
    body = {"model": "gpt-4o-mini", "input": "Hello, world!", "instructions": "You are terse.", "stream": True}
    with http.stream("POST", "/v1/responses", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines[0::2]]
    events = [json.loads(line.removeprefix("data: ")) for line in lines[1::2]]
    assert names == [event["type"] for event in events] == RESPONSE_EVENTS
    assert [event["sequence_number"] for event in events] == list(range(len(RESPONSE_EVENTS)))
    assert "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta") == REPLY
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["usage"] is None
    assert events[-1]["response"]["usage"]["input_tokens"] == RESPONSE_INPUT_TOKENS
    assert events[-1]["response"]["usage"]["output_tokens"] == 6

    with client.responses.stream(model="gpt-4o-mini", input="Hello, world!") as stream:
        final = stream.get_final_response()
    assert final.output_text == REPLY
    assert client.responses.retrieve(final.id).output_text == REPLY  # stored once the stream was sent
    assert http.get("/_stats").json()["by_endpoint"] == {"responses": 2}


def _item_text(item: Any) -> str:
    text: str = item.content[0].text
    return text


def test_responses_store_retrieve_input_items_delete_and_cancel(client: openai.OpenAI) -> None:
    created = client.responses.create(
        model="gpt-4o-mini", input=[{"role": "user", "content": "First"}, {"role": "user", "content": "Second"}]
    )
    assert client.responses.retrieve(created.id).output_text == "Echo: Second"
    items = client.responses.input_items.list(created.id)
    assert [_item_text(item) for item in items.data] == ["Second", "First"]
    ascending = client.responses.input_items.list(created.id, order="asc", limit=1)
    assert [_item_text(item) for item in ascending.data] == ["First"]
    assert ascending.has_more is True
    follow_up = client.responses.create(model="gpt-4o-mini", input="Third", previous_response_id=created.id)
    assert follow_up.previous_response_id == created.id

    client.responses.delete(created.id)  # the SDK returns nothing for OpenAI's {"id", "object", "deleted": true}
    with pytest.raises(openai.NotFoundError, match=f"Response with id '{created.id}' not found"):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="gpt-4o-mini", input="x", previous_response_id=created.id)
    assert unknown.value.code == "previous_response_not_found"
    unstored = client.responses.create(model="gpt-4o-mini", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)

    with pytest.raises(openai.BadRequestError, match="background"):
        client.responses.cancel(follow_up.id)
    background = client.responses.create(model="gpt-4o-mini", input="x", background=True)
    assert background.status == "queued"
    assert client.responses.cancel(background.id).status == "cancelled"
    finished = client.responses.create(model="gpt-4o-mini", input="Later", background=True)
    assert client.responses.retrieve(finished.id).output_text == "Echo: Later"


def test_responses_faults(client: openai.OpenAI, http: httpx.Client) -> None:
    http.post("/_faults", json={"model": "down", "status": 503}).raise_for_status()
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="down", input="x")
    http.post("/_faults", json={"model": "gone", "status": 404}).raise_for_status()
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="gone", input="x")
    assert missing.value.code == "model_not_found"
    http.post("/_faults", json={"model": "dropper", "drop_after_chunks": 3}).raise_for_status()
    received = []
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.create(model="dropper", input="x", stream=True):
            received.append(event.type)
    assert received == RESPONSE_EVENTS[:3]
    with pytest.raises(openai.APIConnectionError):
        client.responses.create(model="dropper", input="x")
    http.post("/_faults", json={"model": "slow", "delay_ms": 200}).raise_for_status()
    start = time.monotonic()
    client.responses.create(model="slow", input="x")
    assert time.monotonic() - start >= 0.2
    assert http.get("/_stats").json()["by_endpoint"] == {"responses": 1}  # the failures are not counted


# --- stored chat completions ------------------------------------------------------------------------------


def test_stored_chat_completions_list_retrieve_update_messages_and_delete(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    run = {"run": f"fake-{time.time_ns()}"}
    kept = [
        client.chat.completions.create(model=model, messages=[SYSTEM, USER], store=True, metadata={**run, "n": n})
        for n, model in (("1", "gpt-4o-mini"), ("2", "gpt-4o"), ("3", "gpt-4o-mini"))
    ]
    unstored = client.chat.completions.create(model="gpt-4o-mini", messages=[USER], metadata=run)
    with pytest.raises(openai.NotFoundError, match=f"Chat completion with id '{unstored.id}' not found"):
        client.chat.completions.retrieve(unstored.id)
    streamed = client.chat.completions.create(
        model="gpt-4o-mini", messages=[USER], store=True, metadata={**run, "n": "4"}, stream=True
    )
    streamed_id = {chunk.id for chunk in streamed}.pop()  # stored once the stream is sent whole

    got = client.chat.completions.retrieve(kept[0].id)
    assert (got.id, got.model, got.choices[0].message.content, got.metadata) == (
        kept[0].id,
        "gpt-4o-mini",
        REPLY,
        {**run, "n": "1"},
    )
    listing = http.get("/v1/chat/completions", params={"metadata[run]": run["run"]}).json()
    validate(listing, "ChatCompletionList")
    assert [c["id"] for c in listing["data"]] == [*(c.id for c in kept), streamed_id]  # oldest first
    one = client.chat.completions.list(metadata={**run, "n": "2"})
    assert [c.id for c in one.data] == [kept[1].id]
    minis = client.chat.completions.list(metadata=run, model="gpt-4o-mini", order="desc", limit=1)
    assert ([c.id for c in minis.data], minis.has_more) == ([streamed_id], True)
    after = client.chat.completions.list(metadata=run, model="gpt-4o-mini", order="desc", after=streamed_id)
    assert ([c.id for c in after.data], after.has_more) == ([kept[2].id, kept[0].id], False)

    messages = client.chat.completions.messages.list(kept[0].id)
    assert [(m.id, m.role, m.content) for m in messages.data] == [
        (f"{kept[0].id}-0", "system", "You are terse."),
        (f"{kept[0].id}-1", "user", "Hello, world!"),
    ]
    last = client.chat.completions.messages.list(kept[0].id, order="desc", limit=1)
    assert ([m.content for m in last.data], last.has_more) == (["Hello, world!"], True)

    updated = client.chat.completions.update(kept[0].id, metadata={"run": run["run"], "n": "one"})
    assert updated.metadata == {"run": run["run"], "n": "one"}
    assert client.chat.completions.list(metadata={**run, "n": "1"}).data == []
    bad = http.post(f"/v1/chat/completions/{kept[0].id}", json={"metadata": {"n": 1}})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "metadata")

    deleted = http.delete(f"/v1/chat/completions/{kept[1].id}").json()
    assert deleted == {"object": "chat.completion.deleted", "id": kept[1].id, "deleted": True}
    assert client.chat.completions.delete(kept[2].id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.messages.list(kept[1].id)
    assert [c.id for c in client.chat.completions.list(metadata=run).data] == [kept[0].id, streamed_id]

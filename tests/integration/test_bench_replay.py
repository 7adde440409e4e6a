"""bench/replay.py, the upstream of the benchmark's 2-worker comparison: the fake upstream's answers, replayed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from bench.replay import save_answers, sse_events
from tests.utils.processes import serving
from tests.utils.servers import free_port
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle

pytestmark = pytest.mark.slow  # the replay server as a subprocess
ROOT = Path(__file__).resolve().parents[2]
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is gate D1?"},
]


@pytest.fixture(scope="module")
def recorded(
    fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, bytes]]:
    """What the fake upstream answered to a chat completion and to the same one streamed with timestamps."""
    fake_upstream.fault(model="gpt-4o-mini", timestamp_chunks=True)
    url = f"{fake_upstream.base_url}/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    auth = {"authorization": f"Bearer {UPSTREAM_KEY}"}
    completion = httpx.post(url, json=body, headers=auth, timeout=10)
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    stream = httpx.post(url, json=streamed, headers=auth, timeout=10)
    assert completion.status_code == stream.status_code == 200
    fake_upstream.reset()
    path = tmp_path_factory.mktemp("replay") / "answers.json"
    save_answers(path, completion.content, stream.content)
    return path, {"completion": completion.content, "stream": stream.content}


@pytest.fixture(scope="module")
def replay_url(recorded: tuple[Path, dict[str, bytes]]) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.replay", "--port", str(port), "--answers", str(recorded[0])]
    log = recorded[0].with_name("replay.log")
    with serving(argv, port=port, cwd=ROOT, log=log) as served:  # /readyz: any GET is answered 200
        yield served.url + "/v1"


def test_replays_the_completion_byte_for_byte(replay_url: str, recorded: tuple[Path, dict[str, bytes]]) -> None:
    with httpx.Client() as client:  # one keep-alive connection, three answers on it
        answers = [
            client.post(f"{replay_url}/chat/completions", json={"model": "x", "messages": MESSAGES}) for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.content for a in answers} == {recorded[1]["completion"]}
    sdk = openai.OpenAI(base_url=replay_url, api_key="sk-any", max_retries=0)
    completion = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == "Echo: Where is gate D1?"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        19,
        7,
    )  # 3 + (3+1+3) + (3+1+5); Echo : Where is gate D1 ?


def test_replays_the_stream_without_stale_timestamps(replay_url: str, recorded: tuple[Path, dict[str, bytes]]) -> None:
    assert b'"x_sent_ns":' in recorded[1]["stream"]  # the recording had them
    sdk = openai.OpenAI(base_url=replay_url, api_key="sk-any", max_retries=0)
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: Where is gate D1?"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    assert all(not hasattr(c, "x_sent_ns") and "x_sent_ns" not in (c.model_extra or {}) for c in chunks)
    raw = httpx.post(f"{replay_url}/chat/completions", json={"model": "x", "messages": MESSAGES, "stream": True})
    expected = b"".join(e for e in sse_events(recorded[1]["stream"]))
    assert raw.content.count(b"data: ") == expected.count(b"data: ")
    assert raw.content.endswith(b"data: [DONE]\n\n") and b"x_sent_ns" not in raw.content

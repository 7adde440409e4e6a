"""The upstream transport (httpx's API on aiohttp's pool): each upstream failure keeps the answer it had with
httpx's own pool — a timeout is a 504, a refused or dropped connection a 502 — and connections are reused."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from tests.conftest import FakeUpstreamHandle, GatewayHandle

QUESTION = [{"role": "user", "content": "Where is gate D?"}]


def client(gateway: GatewayHandle, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.keys["airport-cs"], max_retries=0, **kwargs)


def test_a_slow_upstream_without_fallback_is_504_upstream_timeout(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    fake_upstream.fault(model="gpt-4o-mini", delay_ms=2500)  # the test gateway's read timeout is 1.5 s
    with pytest.raises(openai.APIStatusError) as error:
        client(gateway).chat.completions.create(model="prompted-prepend", messages=QUESTION)
    assert error.value.status_code == 504
    assert error.value.code == "upstream_timeout"
    assert error.value.body["message"] == "Upstream 'fake' timed out."  # type: ignore[index]


def test_a_refused_connection_without_fallback_is_502_upstream_unreachable(gateway: GatewayHandle) -> None:
    with pytest.raises(openai.APIStatusError) as error:
        client(gateway).chat.completions.create(model="unreachable", messages=QUESTION)
    assert error.value.status_code == 502
    assert error.value.code == "upstream_unreachable"
    assert error.value.body["message"] == "Upstream 'down' is unreachable (ConnectError)."  # type: ignore[index]


def test_a_connection_dropped_before_the_answer_is_502_and_the_next_request_is_served(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    fake_upstream.fault(model="gpt-4o-mini", drop_after_chunks=0)  # headers sent, then the connection is cut
    with pytest.raises(openai.APIStatusError) as error:
        client(gateway).chat.completions.create(model="prompted-prepend", messages=QUESTION)
    assert error.value.status_code == 502
    assert error.value.code == "upstream_unreachable"
    fake_upstream.reset()
    answer = client(gateway).chat.completions.create(model="prompted-prepend", messages=QUESTION)
    assert answer.choices[0].message.content == "Echo: Where is gate D?"


async def test_concurrent_requests_all_answer_and_stream_chunks_arrive_whole(gateway: GatewayHandle) -> None:
    aclient = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=gateway.keys["airport-cs"], max_retries=0)

    async def ask(i: int) -> str:
        if i % 2:
            stream = await aclient.chat.completions.create(
                model="prompted-prepend", messages=[{"role": "user", "content": f"gate {i}"}], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        answer = await aclient.chat.completions.create(
            model="prompted-prepend", messages=[{"role": "user", "content": f"gate {i}"}]
        )
        return answer.choices[0].message.content or ""

    answers = await asyncio.gather(*(ask(i) for i in range(40)))
    await aclient.close()
    assert answers == [f"Echo: gate {i}" for i in range(40)]

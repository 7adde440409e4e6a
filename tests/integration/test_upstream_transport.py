"""The upstream transport (httpx's API on its own HTTP/1.1 connections): each upstream failure keeps the answer
it had with httpx's own pool — a timeout is a 504, a refused or dropped connection a 502 — and connections are
reused; against raw servers, what a real upstream may do that the fake one does not."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.utils.gateways import GatewayHandle
from tests.utils.servers import free_port
from tests.utils.upstreams import FakeUpstreamHandle
from tunegate.proxy.upstream.transport import UpstreamTransport

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is gate D?"}]


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


# -- the transport against raw HTTP servers: what a real upstream may do that the fake one does not ----------


class RawServer:
    """A loopback server that answers each request with ``answer(n)`` (n: the request's number), as raw bytes."""

    def __init__(self, answer: Any, *, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after  # close the connection after each answer (without saying so)
        self.connections = 0
        self.ended = 0  # connections the client closed
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.01)  # the handlers see their connections end

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                self.requests.append(head + await reader.readexactly(length))
                for part in self.answer(len(self.requests)):
                    if isinstance(part, float):
                        await asyncio.sleep(part)
                    else:
                        writer.write(part)
                        await writer.drain()
                if self.close_after:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.ended += 1
            writer.close()


def ok(body: bytes) -> list[Any]:
    return [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)]


async def test_connections_are_reused_and_the_request_goes_out_as_sent() -> None:
    transport = UpstreamTransport()
    raw = RawServer(lambda n: ok(b'{"n": %d}' % n))
    async with raw as url:
        answers = [await transport.post(url, b'{"model": "m"}', {"authorization": "Bearer sk-x"}) for _ in range(3)]
    await transport.aclose()
    assert [json.loads(a.content) for a in answers] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert raw.connections == 1
    head, body = raw.requests[0].split(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"authorization: Bearer sk-x" in head.split(b"\r\n") and body == b'{"model": "m"}'


async def test_a_connection_the_upstream_closed_while_idle_is_not_used_again() -> None:
    transport = UpstreamTransport()
    raw = RawServer(lambda n: ok(b'{"n": %d}' % n), close_after=True)
    async with raw as url:
        first = await transport.post(url, b"{}", {})
        await asyncio.sleep(0.05)
        second = await transport.post(url, b"{}", {})
    await transport.aclose()
    assert (json.loads(first.content), json.loads(second.content)) == ({"n": 1}, {"n": 2})
    assert raw.connections == 2


async def test_a_chunked_answer_arrives_piece_by_piece_and_a_large_one_whole() -> None:
    """What arrives apart is handed on apart, at once; HTTP chunks that arrive together (an upstream's SSE events
    sent back to back) are handed on as one piece, so the gateway relays them in one write."""
    big = b"x" * (3 * 1024 * 1024)  # past the read-pause threshold many times over

    def answer(n: int) -> list[Any]:
        if n == 1:
            return [
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                b"5\r\nhello\r\n",
                0.05,
                b"6\r\n world\r\n",
                0.05,
                b"1\r\n,\r\n2\r\n a\r\n3\r\nnd \r\n",  # three chunks in one write
                0.05,
                b"4\r\nmore\r\n0\r\n\r\n",
            ]
        return ok(big)

    transport = UpstreamTransport()
    async with RawServer(answer) as url:
        stream = await transport.stream(url, b"{}", {})
        pieces = [piece async for piece in stream.aiter_raw()]
        await stream.aclose()
        large = await transport.post(url, b"{}", {})
    await transport.aclose()
    assert pieces == [b"hello", b" world", b", and ", b"more"]
    assert large.content == big


async def test_a_request_given_up_on_closes_its_connection() -> None:
    transport = UpstreamTransport()
    raw = RawServer(lambda n: [0.3, *ok(b"{}")])  # the answer comes late: the client has left by then
    async with raw as url:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(transport.post(url, b"{}", {}), 0.1)
        await asyncio.sleep(0.5)
        assert (raw.connections, raw.ended) == (1, 1)  # closed, not left open (nor put back in the pool)
        assert json.loads((await transport.post(url, b"{}", {})).content) == {}
    await transport.aclose()
    assert raw.connections == 2


async def test_a_compressed_answer_is_handed_on_decoded() -> None:
    packed = gzip.compress(b'{"compressed": true}')
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(packed)
    transport = UpstreamTransport()
    async with RawServer(lambda n: [head + packed]) as url:
        answer = await transport.post(url, b"{}", {})
    await transport.aclose()
    assert (answer.status_code, json.loads(answer.content)) == (200, {"compressed": True})


async def test_an_answer_without_a_length_ends_with_the_connection() -> None:
    transport = UpstreamTransport()
    async with RawServer(
        lambda n: [b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"], close_after=True
    ) as url:
        answer = await transport.post(url, b"{}", {})
    await transport.aclose()
    assert answer.content == b"until the end"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ([b"SMTP ready\r\n\r\n"], httpx.RemoteProtocolError),  # not HTTP
        ([b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\ntoo short"], httpx.RemoteProtocolError),  # cut short
        ([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nslow", 1.0, b"ly sent"], httpx.ReadTimeout),  # stalls
    ],
)
async def test_a_broken_answer_is_the_httpx_error_the_gateway_maps(answer: list[Any], error: type[Exception]) -> None:
    transport = UpstreamTransport(timeout=httpx.Timeout(0.3, connect=1.0))
    raw = RawServer(lambda n: answer, close_after=error is httpx.RemoteProtocolError)
    async with raw as url:
        with pytest.raises(error):
            await transport.post(url, b"{}", {})
    await transport.aclose()


async def test_a_refused_connection_is_a_connect_error() -> None:
    transport = UpstreamTransport()
    with pytest.raises(httpx.ConnectError):
        await transport.post(f"http://127.0.0.1:{free_port()}/v1/chat/completions", b"{}", {})
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.post("ftp://127.0.0.1/v1", b"{}", {})

"""An upstream that costs the machine next to nothing: it replays the fake upstream's answers, byte for byte.

``python -m bench.replay --port P --answers answers.json`` answers every POST with the answer the fake upstream
gave to the benchmark's request (``bench.run`` records them first): the chat completion for a JSON body, the
stream's events (as chunked HTTP, one write per event, as the fake upstream sends them) when the body asks for
``"stream": true``; any GET gets ``{}`` (the readiness check). HTTP/1.1 keep-alive on asyncio (uvloop) with
httptools' parser, like the load generator: ~30 µs of CPU a request, against ~100 µs for the fake upstream,
which parses and counts every request.

What it is for: two workers can only scale into the cores the load generator and the upstream leave them, and
on a 2-core machine the fake upstream takes a quarter of a core per thousand requests a second. With this
upstream the 2-worker comparison measures the gateway, not its test double (``bench/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path

import httptools
import orjson

_STAMP = re.compile(rb',"x_sent_ns":\d+')  # a chunk's send time is stale in a replay: dropped


def _framed(events: list[bytes]) -> list[bytes]:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    chunks = [b"%x\r\n%s\r\n" % (len(event), event) for event in events]
    pieces = [head + chunks[0], *chunks[1:]] if chunks else [head]
    pieces[-1] += b"0\r\n\r\n"
    return pieces


class Answers:
    def __init__(self, completion: bytes, stream_events: list[bytes]) -> None:
        self.completion = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(completion)
            + completion
        )
        self.stream = _framed([_STAMP.sub(b"", event) for event in stream_events])

    @classmethod
    def load(cls, path: Path) -> Answers:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["completion"].encode(), [e.encode() for e in data["stream_events"]])


def save_answers(path: Path, completion: bytes, stream: bytes) -> None:
    """Write the fake upstream's answers (a chat completion's body, a stream's body) where :meth:`Answers.load`
    reads them."""
    events = [event.decode() for event in sse_events(stream)]
    path.write_text(json.dumps({"completion": completion.decode(), "stream_events": events}), encoding="utf-8")


def sse_events(body: bytes) -> list[bytes]:
    """The events of a ``text/event-stream`` body, each with its ``data: `` prefix and blank line."""
    return [part + b"\n\n" for part in body.split(b"\n\n") if part.strip()]


_READY = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class _Protocol(asyncio.Protocol):
    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        assert transport is not None
        if self.parser.get_method() != b"POST":
            transport.write(_READY)
            return
        try:
            stream = orjson.loads(b"".join(self.body)).get("stream") is True
        except (orjson.JSONDecodeError, AttributeError):
            stream = False
        if stream:
            for piece in self.answers.stream:
                transport.write(piece)
        else:
            transport.write(self.answers.completion)


async def _serve(port: int, answers: Answers) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Protocol(answers), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answers", type=Path, required=True, help="JSON: completion, stream_events")
    args = parser.parse_args()
    answers = Answers.load(args.answers)
    try:
        import uvloop

        uvloop.run(_serve(args.port, answers))
    except ImportError:
        asyncio.run(_serve(args.port, answers))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

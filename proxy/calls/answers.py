"""What a model call sends: a JSON answer or an SSE stream, written as ASGI messages directly.

Both are ASGI apps litestar sends as they are; their headers may be added to until they are sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from litestar.types import HTTPResponseStartEvent, Receive, Scope, Send


class JSONAnswer:
    """A JSON answer sent as its two ASGI messages: what litestar's ``Response`` would send, without the conversion
    to its ``ASGIResponse`` on the way."""

    __slots__ = ("body", "headers", "status_code")
    stream = False

    def __init__(self, status_code: int, body: bytes, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.body = body
        self.headers = headers  # more may be added until it is sent (rate-limit headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]
        headers += _encoded(self.headers)
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": self.status_code, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


class SSEAnswer:
    """A stream sent as ASGI messages, each group of events the moment it arrives: what litestar's ``Stream``
    would send, with one asyncio task watching for the client to leave instead of an anyio task group. When the
    client leaves, the relay is cancelled where it waits, and ends as its ``finally`` says (the upstream closed,
    a partial usage record)."""

    __slots__ = ("events", "headers", "status_code")
    stream = True

    def __init__(self, events: AsyncGenerator[bytes, None], headers: dict[str, str]) -> None:
        self.status_code = 200
        self.events = events
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _SSE_HEADERS + _encoded(self.headers)
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 200, "headers": headers}
        await send(start)
        relay = asyncio.current_task()
        assert relay is not None
        ended = False

        def client_left(watcher: asyncio.Future[None]) -> None:
            if not ended and not watcher.cancelled():
                relay.cancel()

        watcher = asyncio.ensure_future(_until_disconnect(receive))
        watcher.add_done_callback(client_left)
        try:
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not watcher.done() or watcher.cancelled():
                raise  # cancelled by something else (the server stopping)
            relay.uncancel()  # the client left: nothing more to send
        finally:
            ended = True
            watcher.cancel()
            await self.events.aclose()  # the relay's end, if the cancel found it outside (in ``send``)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


Answer = JSONAnswer | SSEAnswer  # what a model call answers: a JSON answer or a stream (errors are raised)

"""A stream relayed event by event, for every model call that streams (chat, completions, responses: what differs
is the endpoint's Shape): the model renamed to the alias, the usage the gateway asked for on its own behalf taken
out again, each event's ``event:`` line kept, and what the stream spent handed back when it ends, however it ends."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import httpx
import orjson

from tunegate.proxy.calls.exchange import Attempt, Exchange, Outcome, Own, Record
from tunegate.proxy.upstream.calls import answered_badly, error_event, redacted, unreachable


class Named(bytes):
    """An event's ``data:`` payload that came with an ``event:`` line (the Responses API's): its name, to send on."""

    name: bytes


class Events:
    """The ``data:`` payloads of an SSE body, in the groups the network delivers them: the events that arrive
    together are relayed together, at once (one write to the client, not one per event), none is held back.
    ``named``: the body's events have ``event:`` lines to keep (the Responses API's), and a payload whose event
    had one is :class:`Named`; else only ``data:`` lines are read (chat: looking for names costs ~0.4 µs a read)."""

    def __init__(self, body: AsyncIterator[bytes], *, named: bool = False) -> None:
        self._body = body
        self._rest = b""
        self._named_events = named
        self._name = b""  # the ``event:`` line of the event being read

    async def next(self) -> list[bytes] | None:
        """The payloads completed by the next bytes to arrive (waiting for them); None at the body's end."""
        while True:
            data = await anext(self._body, None)
            if data is None:
                rest, self._rest = self._rest, b""
                if not rest.startswith(b"data:"):
                    return None
                return self._named([rest]) if self._named_events else [rest[5:].strip()]
            *lines, self._rest = (self._rest + data).split(b"\n")
            if self._named_events:
                events = self._named(lines)
            else:
                events = [line[5:].strip() for line in lines if line.startswith(b"data:")]
            if events:
                return events

    def _named(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        for line in lines:
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if self._name:
                    payload = Named(payload)
                    payload.name = self._name
                events.append(payload)
            elif line.startswith(b"event:"):
                self._name = line[6:].strip()
            elif not line.strip():
                self._name = b""  # a blank line ends the event
        return events


def _event(payload: bytes, name: bytes | None) -> bytes:
    return (b"event: " + name + b"\n" if name else b"") + b"data: " + payload + b"\n\n"


async def relay(
    exchange: Exchange,
    attempt: Attempt,
    upstream: httpx.Response,
    events: Events,
    first: list[bytes],
    record: Record,
    own: Own | None = None,
) -> AsyncGenerator[bytes, None]:
    """The client's stream, from the first group of events on; ``record`` gets what it spent when it ends, ``own``
    the id of an object the upstream stores, before its event is sent."""
    shape = exchange.shape
    client_wants_usage = not shape.asks_usage or bool((exchange.body.get("stream_options") or {}).get("include_usage"))
    alias = exchange.alias.name
    name: bytes | None = None
    usage: dict[str, Any] | None = None
    ttft_ms: float | None = None
    text: list[str] = []
    status = 200
    finished = ended = False
    group: list[bytes] | None = first
    try:
        while group is not None and not ended:
            out: list[bytes] = []
            for event in group:
                name = event.name if isinstance(event, Named) else None
                if event == b"[DONE]":
                    finished = ended = True
                    out.append(b"data: [DONE]\n\n")
                    break
                chunk = orjson.loads(event if name is None else memoryview(event))  # orjson takes bytes exactly
                if isinstance(chunk, dict):
                    if shape.failed(chunk):
                        status, ended = 502, True
                        if name is None:
                            out.append(b"data: " + orjson.dumps(error_event(chunk)) + b"\n\n")
                        else:  # the Responses API's own error event, without any upstream key
                            out.append(_event(orjson.dumps(redacted(chunk)), name))
                        break
                    usage = shape.usage(chunk) or usage
                    if ttft_ms is None and shape.started(chunk):
                        ttft_ms = (time.perf_counter() - exchange.started) * 1000
                    text.append(shape.text(chunk))
                    if not client_wants_usage:
                        chunk.pop("usage", None)
                        if not chunk.get("choices"):
                            continue  # the usage chunk the gateway asked for on its own behalf
                    if own is not None and (stored := shape.stored(chunk)) is not None:
                        await own(attempt, stored)  # the team owns it before the client can name it
                        own = None  # once: each chunk of a chat stream names it
                    shape.rename(chunk, alias)
                    out.append(_event(orjson.dumps(chunk), name))
            if out:
                yield b"".join(out)
            if not ended:
                group = await events.next()
        if not ended:
            finished = usage is not None  # the upstream ended without [DONE]
    except (httpx.TransportError, orjson.JSONDecodeError) as exc:
        error = (
            unreachable(attempt.upstream, exc)
            if isinstance(exc, httpx.TransportError)
            else answered_badly(attempt.upstream, 502, b"")
        )
        status = error.status
        yield shape.error_event(error.payload())
    finally:
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
        partial = not finished or usage is None
        record(attempt, Outcome(status, usage, ttft_ms, partial, "".join(text)))

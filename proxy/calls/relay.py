"""A stream relayed event by event: the model renamed to the alias, the usage the gateway asked for on its own
behalf taken out again, and what the stream spent handed back when it ends, however it ends."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import httpx
import orjson

from tunegate.proxy.calls.exchange import Attempt, Exchange, Outcome, Record
from tunegate.proxy.upstream.calls import answered_badly, error_event, unreachable


class Events:
    """The ``data:`` payloads of an SSE body, in the groups the network delivers them: the events that arrive
    together are relayed together, at once (one write to the client, not one per event), none is held back."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._rest = b""

    async def next(self) -> list[bytes] | None:
        """The payloads completed by the next bytes to arrive (waiting for them); None at the body's end."""
        while True:
            data = await anext(self._body, None)
            if data is None:
                rest, self._rest = self._rest, b""
                return [rest[5:].strip()] if rest.startswith(b"data:") else None
            *lines, self._rest = (self._rest + data).split(b"\n")
            events = [line[5:].strip() for line in lines if line.startswith(b"data:")]
            if events:
                return events


async def relay(
    exchange: Exchange,
    attempt: Attempt,
    upstream: httpx.Response,
    events: Events,
    first: list[bytes],
    record: Record,
) -> AsyncGenerator[bytes, None]:
    """The client's stream, from the first group of events on; ``record`` gets what it spent when it ends."""
    client_wants_usage = bool((exchange.body.get("stream_options") or {}).get("include_usage"))
    alias = exchange.alias.name
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
                if event == b"[DONE]":
                    finished = ended = True
                    out.append(b"data: [DONE]\n\n")
                    break
                chunk = orjson.loads(event)
                if isinstance(chunk, dict):
                    if "error" in chunk:
                        status, ended = 502, True
                        out.append(b"data: " + orjson.dumps(error_event(chunk)) + b"\n\n")
                        break
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    if ttft_ms is None and chunk.get("choices"):
                        ttft_ms = (time.perf_counter() - exchange.started) * 1000
                    _collect_text(chunk, text)
                    if not client_wants_usage:
                        chunk.pop("usage", None)
                        if not chunk.get("choices"):
                            continue  # the usage chunk the gateway asked for on its own behalf
                    chunk["model"] = alias
                    out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
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
        yield b"data: " + orjson.dumps(error.payload()) + b"\n\n"
    finally:
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
        partial = not finished or usage is None
        record(attempt, Outcome(status, usage, ttft_ms, partial, "".join(text)))


def _collect_text(chunk: dict[str, Any], text: list[str]) -> None:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        piece = delta.get("content") if isinstance(delta, dict) else None
        if piece is None:
            piece = choice.get("text")
        if isinstance(piece, str):
            text.append(piece)

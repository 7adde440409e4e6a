"""The load generator: closed-loop HTTP/1.1 keep-alive connections on asyncio (uvloop) with httptools' parser.

Each connection sends one request, waits for the whole response, and sends the next: ``connections`` is the
number of requests in flight. Parsing is done in C (httptools, which uvicorn uses too), so one Python process
drives several thousand requests a second; ``bench.run`` checks that against the fake upstream directly.

Streams: the time to the first body bytes is the time to first token (the gateway answers a stream only once
the upstream's first event is there). When the upstream stamps its chunks (``x_sent_ns``, the fake upstream's
``timestamp_chunks`` fault), each stamp is compared with the wall clock when the bytes arrive: the relay time.
"""

from __future__ import annotations

import asyncio
import resource
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools

MARK = b'"x_sent_ns":'
_DIGITS = frozenset(b"0123456789")


@dataclass(frozen=True)
class Call:
    """One request, sent again and again."""

    host: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False

    def raw(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"host: {self.host}:{self.port}",
            "content-type: application/json",
            f"content-length: {len(self.body)}",
            *(f"{k}: {v}" for k, v in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class Samples:
    latency_ns: array[int] = field(default_factory=lambda: array("q"))
    ttft_ns: array[int] = field(default_factory=lambda: array("q"))
    relay_ns: array[int] = field(default_factory=lambda: array("q"))
    statuses: Counter[int] = field(default_factory=Counter)
    incomplete_streams: int = 0
    completed: int = 0  # every answered request, warm-up included (the gateway records usage for each)
    connects: int = 0  # connections opened (keep-alive: one per connection unless the server closed one)
    errors: int = 0
    first_error: str = ""


class _Connection(asyncio.Protocol):
    def __init__(self, stream: bool, relay: Callable[[], array[int] | None]) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.stream = stream
        self.relay = relay  # where relay times go while recording; None otherwise
        self.status = 0
        self.first_body_ns = 0
        self.carry = b""
        self.done_seen = False
        self.keep_alive = False
        self.tail = b""

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    # -- httptools callbacks -------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self.first_body_ns:
            self.first_body_ns = time.perf_counter_ns()
        if not self.stream:
            return
        self.tail = (self.tail + body)[-32:]
        sink = self.relay()
        if sink is None:
            return
        now = time.time_ns()
        buf = self.carry + body if self.carry else body
        pos = 0
        while True:
            idx = buf.find(MARK, pos)
            if idx < 0:
                # keep what could be the start of a mark cut by the read
                self.carry = buf[max(pos, len(buf) - len(MARK) + 1) :]
                return
            start = end = idx + len(MARK)
            while end < len(buf) and buf[end] in _DIGITS:
                end += 1
            if end == len(buf):  # the number may go on in the next read
                self.carry = buf[idx:]
                return
            sink.append(now - int(buf[start:end]))
            pos = end

    def on_message_complete(self) -> None:
        self.done_seen = b"[DONE]" in self.tail
        self.keep_alive = self.parser.should_keep_alive()  # only true here: the parser resets after the message
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- one exchange --------------------------------------------------------------------------------
    def begin(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        self.waiter = loop.create_future()
        self.status = 0
        self.first_body_ns = 0
        self.carry = b""
        self.tail = b""
        self.done_seen = False
        return self.waiter


@dataclass
class _State:
    recording: bool = False
    stop: bool = False
    samples: Samples = field(default_factory=Samples)

    def relay_sink(self) -> array[int] | None:
        return self.samples.relay_ns if self.recording else None


async def _worker(call: Call, raw: bytes, state: _State) -> None:
    loop = asyncio.get_running_loop()
    conn: _Connection | None = None
    samples = state.samples
    while not state.stop:
        if conn is None or conn.transport is None or conn.transport.is_closing():
            samples.connects += 1
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(call.stream, state.relay_sink), call.host, call.port
                )
            except OSError as exc:
                samples.errors += 1
                samples.first_error = samples.first_error or repr(exc)
                await asyncio.sleep(0.05)
                continue
        transport = conn.transport
        assert transport is not None
        waiter = conn.begin(loop)
        started = time.perf_counter_ns()
        transport.write(raw)
        try:
            await waiter
        except Exception as exc:
            if state.recording:
                samples.errors += 1
                samples.first_error = samples.first_error or repr(exc)
            transport.close()
            conn = None
            continue
        finished = time.perf_counter_ns()
        samples.completed += 1
        if state.recording:
            samples.latency_ns.append(finished - started)
            samples.statuses[conn.status] += 1
            if call.stream:
                if conn.first_body_ns:
                    samples.ttft_ns.append(conn.first_body_ns - started)
                if conn.status == 200 and not conn.done_seen:
                    samples.incomplete_streams += 1
        if not conn.keep_alive:
            transport.close()
            conn = None
    if conn is not None and conn.transport is not None:
        conn.transport.close()


@dataclass
class LoadResult:
    connections: int
    seconds: float
    samples: Samples
    client_cpu_s: float
    snapshots: dict[str, Any]

    @property
    def requests(self) -> int:
        return len(self.samples.latency_ns)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> int:
        return self.samples.statuses.get(200, 0)


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_load(
    call: Call,
    *,
    connections: int,
    warmup: float,
    duration: float,
    snapshot: Callable[[], Any] | None = None,
) -> LoadResult:
    """``connections`` closed loops for ``warmup`` + ``duration`` seconds; only ``duration`` is recorded.

    ``snapshot`` is called when recording starts and when it stops (e.g. to read a server's CPU time).
    """
    state = _State()
    raw = call.raw()
    workers = [asyncio.create_task(_worker(call, raw, state)) for _ in range(connections)]
    await asyncio.sleep(warmup)
    before = snapshot() if snapshot else None
    cpu0 = _cpu_self()
    t0 = time.perf_counter()
    state.recording = True
    await asyncio.sleep(duration)
    state.recording = False
    seconds = time.perf_counter() - t0
    cpu1 = _cpu_self()
    after = snapshot() if snapshot else None
    state.stop = True
    _, pending = await asyncio.wait(workers, timeout=30)
    for task in pending:
        task.cancel()
    return LoadResult(
        connections, seconds, state.samples, cpu1 - cpu0, {"before": before, "after": after} if snapshot else {}
    )

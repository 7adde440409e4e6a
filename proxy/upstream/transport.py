"""The upstream client: HTTP/1.1 on asyncio protocols and httptools' parser, with httpx's API and exceptions.

A model call is a POST of bytes the gateway already has, answered by JSON or an SSE stream; the rest of a
general-purpose client (redirects, cookies, auth flows, tracing, URL objects per request) is CPU on every
request (the figures against httpx's own pool and aiohttp are in the README's Performance section).

What it does: a pool of keep-alive connections per origin (the most recently used first; a connection the
upstream closed is dropped from it), TLS for ``https`` with the system's and certifi's authorities, a
connect timeout, a read timeout on every wait for bytes, the answer's body handed on as it arrives, what
arrived together in one piece (reading pauses while more than ``_HIGH_WATER`` bytes wait), and one retry on
a fresh connection when a pooled one turns out closed before any byte of the answer came. No proxies
(requests go straight to the upstream).

Errors are httpx's: ``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError`` (the
upstream closed the connection or answered something that is not HTTP), ``UnsupportedProtocol``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from functools import lru_cache
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import httptools
import httpx

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
KEEPALIVE_SECONDS = 60.0  # an idle connection older than this is closed rather than reused
MAX_IDLE_PER_ORIGIN = 256
_HIGH_WATER = 256 * 1024  # bytes of an answer waiting to be read before reading from the socket pauses

Origin = tuple[str, str, int]  # scheme, host, port


class Answer(NamedTuple):
    """A model call's answer read whole: its status and its (decoded) body."""

    status_code: int
    content: bytes


@lru_cache(maxsize=1024)
def _split(url: str) -> tuple[Origin, bytes, bytes]:
    """``url`` → its origin, the request target (path and query) and the Host header's value."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise httpx.UnsupportedProtocol(f"cannot send a request to {url!r}: only http:// and https:// URLs")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, host, port), target.encode(), host_header.encode()


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()  # the system's authorities (and SSL_CERT_FILE / SSL_CERT_DIR)
    try:
        import certifi

        context.load_verify_locations(certifi.where())  # and the bundle httpx and the OpenAI SDK trust
    except (ImportError, OSError):
        pass
    return context


class _Connection(asyncio.Protocol):
    """One connection to an upstream, carrying one request at a time."""

    def __init__(self, pool: UpstreamTransport, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.status = 0
        self.received = False  # any byte of the current answer
        self.complete = False
        self.keep_alive = False
        self.error: httpx.TransportError | None = None
        self._framed = False  # content-length or chunked: the end is in the bytes, not the connection's close
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._head: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"the upstream's answer is not valid HTTP/1.1 ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._open.discard(self)
        if self.status and not self.complete and not self._framed and exc is None:
            self.on_message_complete()  # an answer without a length ends where the connection does
        elif not self.complete:
            self._fail(httpx.RemoteProtocolError("the upstream closed the connection before the answer ended"))

    # -- httptools callbacks -----------------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()  # llhttp knows it here, not after the body
        if self.status == 204 or self.status == 304:
            self._framed = True
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        if self._head is not None and not self._head.done():
            self._head.set_result(None)
        self._wake()

    # -- the request ---------------------------------------------------------------------------------
    def _fail(self, error: httpx.TransportError) -> None:
        self.error = error
        if self._head is not None and not self._head.done():
            self._head.set_result(None)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, future: asyncio.Future[None], timeout: float | None, what: str) -> None:
        timer = None
        if timeout is not None:
            timer = asyncio.get_running_loop().call_later(timeout, _expire, future, what, timeout)
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()

    async def send(self, head: bytes, body: bytes, read_timeout: float | None) -> None:
        """Write the request and wait for the answer's status line and headers."""
        self._reset()
        assert self.transport is not None
        self.transport.write(head + body)
        self._head = asyncio.get_running_loop().create_future()
        try:
            await self._wait(self._head, read_timeout, "answer")
        except httpx.ReadTimeout:
            self.close()
            raise
        if self.error is not None:
            raise self.error

    async def chunks(self, read_timeout: float | None) -> AsyncIterator[bytes]:
        """The answer's body as it arrives."""
        while True:
            if self._chunks:
                # All that has arrived, as one piece: the HTTP chunks of one read (an SSE event each, as upstreams
                # send them) go on to the client in one write, not one each; nothing is held back for more.
                chunk = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield chunk
                continue
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._wait(self._waiter, read_timeout, "bytes")
            finally:
                self._waiter = None

    def release(self) -> None:
        """After the answer: back to the pool when it was read to its end on a reusable connection, else closed."""
        if self.complete and self.keep_alive and not self.closed and self.error is None:
            self.pool._idle(self)
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(future: asyncio.Future[None], what: str, timeout: float) -> None:
    if not future.done():  # the error is built here, only when it happens (building one a request costs ~1%)
        future.set_exception(httpx.ReadTimeout(f"no {what} from the upstream within {timeout:g} s"))


async def _sent(connection: _Connection, head: bytes, body: bytes, read_timeout: float | None) -> None:
    """:meth:`_Connection.send`; a request that fails or is given up on (the client left) closes its connection,
    whose answer nobody will read."""
    try:
        await connection.send(head, body, read_timeout)
    except BaseException:
        connection.close()
        raise


class _Body(httpx.AsyncByteStream):
    def __init__(self, connection: _Connection, read_timeout: float | None) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._connection.chunks(self._read_timeout):
            yield chunk

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._connection.release()


class UpstreamTransport(httpx.AsyncBaseTransport):
    """httpx's transport interface, plus :meth:`post` and :meth:`stream` for the model calls on the request path:
    they skip httpx's client layer (and :meth:`post` its response machinery too) and answer from the connection."""

    def __init__(self, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> None:
        self._timeout = timeout.as_dict()
        self._pools: dict[Origin, deque[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def post(self, url: str, content: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``content`` and read the answer whole (decoded, should the upstream have compressed it)."""
        connection, read_timeout = await self._exchange("POST", url, headers.items(), content, self._timeout)
        try:
            chunks = [chunk async for chunk in connection.chunks(read_timeout)]
        finally:
            connection.release()
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if any(
            name.lower() == b"content-encoding" and value.lower() != b"identity" for name, value in connection.headers
        ):
            body = httpx.Response(connection.status, headers=connection.headers, content=body).read()
        return Answer(connection.status, body)

    async def stream(self, url: str, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``content``; the answer's body is read as it comes (``aiter_lines``), then ``aclose()``."""
        return await self._send("POST", url, headers.items(), content, self._timeout)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streamed body (a multipart upload): read it whole
            body = await request.aread()
        timeout = request.extensions.get("timeout") or self._timeout
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in ("host", "content-length")]
        response = await self._send(request.method, str(request.url), headers, body, timeout)
        response.request = request
        return response

    async def _send(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        timeout: Mapping[str, float | None],
    ) -> httpx.Response:
        connection, read_timeout = await self._exchange(method, url, headers, body, timeout)
        return httpx.Response(
            status_code=connection.status,
            headers=connection.headers,
            stream=_Body(connection, read_timeout),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason.strip()},
        )

    async def _exchange(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        timeout: Mapping[str, float | None],
    ) -> tuple[_Connection, float | None]:
        """Send the request (on a pooled connection when there is one) and read the answer's head."""
        origin, target, host = _split(url)
        lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n" % (method.encode(), target, host, len(body))]
        lines += [f"{name}: {value}\r\n".encode() for name, value in headers]
        lines.append(b"\r\n")
        head = b"".join(lines)
        read_timeout = timeout.get("read")
        connection = self._pooled(origin)
        if connection is not None:
            try:
                await _sent(connection, head, body, read_timeout)
            except httpx.RemoteProtocolError:
                if connection.received:
                    raise
                connection = None  # the upstream had closed it while it was idle: once more, on a new one
        if connection is None:
            connection = await self._connect(origin, timeout.get("connect"))
            await _sent(connection, head, body, read_timeout)
        return connection, read_timeout

    def _pooled(self, origin: Origin) -> _Connection | None:
        idle = self._pools.get(origin)
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = _tls() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, origin), host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} took over {timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        self._open.add(connection)
        return connection

    def _idle(self, connection: _Connection) -> None:
        idle = self._pools.setdefault(connection.origin, deque())
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)

    async def aclose(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._pools.clear()

    def __repr__(self) -> str:
        return f"UpstreamTransport({sum(len(p) for p in self._pools.values())} idle)"

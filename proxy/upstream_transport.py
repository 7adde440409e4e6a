"""The upstream client's transport: httpx's API on aiohttp's connection pool.

httpx's own pool looks at every idle connection (a ``select()`` each) on every request (encode/httpx#3215):
with 64 requests in flight that was half of the gateway's CPU (see bench/RESULTS.md). aiohttp keeps idle
connections per host in a queue. The rest of the gateway keeps httpx's API and exceptions: aiohttp's errors are
mapped to the httpx exception a timeout, a refused connection or a dropped one would have raised.

The model calls on the request path skip httpx's client layer (URL parsing, cookies, auth and redirect flows,
a log line): :meth:`AiohttpTransport.post` and :meth:`AiohttpTransport.stream` hand back an ``httpx.Response``
straight from aiohttp's answer, which saved another sixth of a request's CPU.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping

import aiohttp
import httpx

DEFAULT_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=60)
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


def _aiohttp_timeout(timeout: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, connect=timeout.get("pool"), sock_connect=timeout.get("connect"), sock_read=timeout.get("read")
    )


def _httpx_error(exc: BaseException) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, TimeoutError):  # aiohttp's read timeouts are TimeoutErrors too
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientResponseError):  # the upstream's answer was not valid HTTP
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    return httpx.ReadError(message)


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():  # whatever has arrived: chunks are not held
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _httpx_error(exc) from exc

    async def aclose(self) -> None:
        # Back to the pool when the body was read to its end; closed when it was not (a client that left).
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, limits: httpx.Limits = DEFAULT_LIMITS, timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> None:
        self._limits = limits
        self._timeout = _aiohttp_timeout(timeout.as_dict())
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the event loop that runs the requests.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry or 15.0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def post(self, url: str, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``content`` and read the answer whole (the transport's timeouts)."""
        response = await self._send("POST", url, headers.items(), content, self._timeout)
        await response.aread()
        return response

    async def stream(self, url: str, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``content``; the answer's body is read as it comes (``aiter_lines``), then ``aclose()``."""
        return await self._send("POST", url, headers.items(), content, self._timeout)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streamed body (a multipart upload): read it whole
            body = await request.aread()
        timeout = _aiohttp_timeout(request.extensions.get("timeout", {}))
        response = await self._send(request.method, str(request.url), request.headers.multi_items(), body, timeout)
        response.request = request
        return response

    async def _send(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        timeout: aiohttp.ClientTimeout,
    ) -> httpx.Response:
        try:
            response = await self._client().request(
                method, url, headers=list(headers), data=body or None, allow_redirects=False, timeout=timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _httpx_error(exc) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

"""The gateway's client connections: uvicorn's httptools protocol with the bounds it lacks (it has none for
header bytes, and its keep-alive timer starts only after a first answer): an idle connection is closed from
the moment it opens, a request's headers must arrive within a deadline and stay under a size (431 beyond), and
a body that stops arriving for too long is answered 408 (the app sees the client gone).

Used by ``tunegate serve`` through ``proxy.serving.uvicorn_config``; the limits travel on the uvicorn config,
which ``serve --workers N`` hands to each worker process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request whose refusal is written."""


class GatewayConfig(uvicorn.Config):
    """uvicorn's config, carrying the header bounds the protocol reads (picklable: workers get a copy)."""

    def __init__(
        self, app: Any, *, max_header_bytes: int, header_timeout: float, body_timeout: float, **kwargs: Any
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        super().__init__(app, http=GatewayHttpProtocol, **kwargs)


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._max_header_bytes: int | None = getattr(config, "max_header_bytes", None)
        self._header_timeout: float | None = getattr(config, "header_timeout", None)
        self._in_headers = False  # from a request's first byte to the end of its headers
        self._parsed_bytes = 0  # the request line and header lines parsed so far
        self._unparsed_bytes = 0  # bytes received while the headers were incomplete (one header may be huge)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body_timeout: float | None = getattr(config, "body_timeout", None)
        self._body_deadline: asyncio.TimerHandle | None = None
        self._body_seen = 0.0  # loop time of the body's last bytes (or of the headers' end)
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Idle from the start, as between requests: closed unless a request begins within the keep-alive timeout.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._cancel_body_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_headers:
            self._unparsed_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # the gateway serves no WebSocket
        except httptools.HttpParserError:
            if self._refused:
                return
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
            return
        limit = self._max_header_bytes
        if self._in_headers and limit is not None and self._unparsed_bytes > limit:
            self._refuse(431, f"The request's headers exceed {limit} bytes.", "request_headers_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._parsed_bytes = self._unparsed_bytes = 0
        if self._header_timeout is not None:
            self._header_deadline = self.loop.call_later(self._header_timeout, self._headers_late)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # "name: value\r\n", as sent
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_deadline()
        super().on_headers_complete()
        if self._body_timeout is not None:
            self._body_seen = self.loop.time()
            self._cancel_body_deadline()
            self._body_deadline = self.loop.call_later(self._body_timeout, self._body_late)

    def on_body(self, body: bytes) -> None:
        self._body_seen = self.loop.time()  # one clock read a chunk; the timer is re-armed only when it fires
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_body_deadline()
        super().on_message_complete()

    def _body_late(self) -> None:
        self._body_deadline = None
        cycle, timeout = self.cycle, self._body_timeout
        if cycle is None or timeout is None or not cycle.more_body or self.transport.is_closing():
            return
        waited = self.loop.time() - self._body_seen
        if waited < timeout or self.flow.read_paused:  # bytes came since, or the app is not reading: not the client
            self._body_deadline = self.loop.call_later(max(timeout - waited, 0.05), self._body_late)
        elif cycle.response_started:
            self.transport.close()
        else:
            self._refuse(408, f"The request's body stopped arriving for {timeout:g} s.", "timeout")

    def _cancel_body_deadline(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _count(self, size: int) -> None:
        self._parsed_bytes += size
        limit = self._max_header_bytes
        if limit is not None and self._parsed_bytes > limit:
            self._refuse(431, f"The request's headers exceed {limit} bytes.", "request_headers_too_large")
            raise _HeadersTooLarge

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self._in_headers and not self.transport.is_closing():
            self._refuse(408, f"The request's headers did not arrive within {self._header_timeout:g} s.", "timeout")

    def _cancel_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer in OpenAI's error shape and close: the request never reaches the app."""
        self._refused = True
        self._in_headers = False
        self._cancel_deadline()
        body = orjson.dumps(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
        )
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()

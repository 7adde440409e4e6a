"""The access log: one line per HTTP request on the ``tunegate.access`` logger (request id, team, alias, served
target, status, tokens, duration), never a prompt or an answer. A model call's line carries its usage record's
figures (``Gateway.record`` hands every record to :func:`model_call`); the ASGI wrapper :class:`AccessLog` writes
the line of every request when its answer ends."""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType

from tunegate.proxy.calls.exchange import new_request_id

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from tunegate.registry.usage import Usage

log = logging.getLogger("tunegate.access")

# The line of the request being answered, for the usage record made while it is (a stream's, at its end).
_current: ContextVar[dict[str, Any] | None] = ContextVar("tunegate_access_line", default=None)


class Line:
    """An access log line's fields; ``str()`` gives them as ``key=value`` (the text format), the JSON format takes
    its ``fields`` as they are (proxy.serving.JsonFormatter)."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return " ".join(f"{key}={_text(value)}" for key, value in self.fields.items() if value is not None)


def _text(value: object) -> str:
    text = str(value)
    return f'"{text}"' if not text or " " in text or '"' in text else text


def _record_fields(record: Usage, team: str | None) -> dict[str, Any]:
    return {
        "team": team,
        "team_id": record.team_id,
        "alias": record.alias,
        "alias_version": record.alias_version,
        "served_by": record.served_by,
        "upstream": record.upstream,
        "model": record.model,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cached_tokens": record.cached_tokens,
        **({"partial": True} if record.partial else {}),  # the client left before the end: tokens as far as known
    }


def model_call(record: Usage, team: str | None = None) -> None:
    """A usage record kept: its figures go in the line of the request it belongs to, or in a line of their own when
    there is none (a record made outside a request, or after its answer ended)."""
    if not log.isEnabledFor(logging.INFO):
        return
    line = _current.get()
    if line is not None and "duration_ms" not in line:
        line.update(_record_fields(record, team))
        return
    log.info(
        Line(
            {
                "request_id": record.request_id,
                "endpoint": record.endpoint,
                "status": record.status_code,
                **_record_fields(record, team),
                "duration_ms": round(record.latency_ms, 2),
            }
        )
    )


class AccessLog:
    """ASGI wrapper: one line per HTTP request when its answer ends (a stream's at its last chunk). An answer
    without an ``x-request-id`` (model calls have theirs) gets one, so that the client can quote the line's."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not log.isEnabledFor(logging.INFO):
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        line: dict[str, Any] = {"request_id": None, "method": scope["method"], "path": scope["path"], "status": 500}

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                line["status"] = message["status"]
                headers = message.setdefault("headers", [])
                request_id = next((v for k, v in headers if k.lower() == b"x-request-id"), None)
                if request_id is None:
                    request_id = new_request_id().encode()
                    message["headers"] = [*headers, (b"x-request-id", request_id)]
                line["request_id"] = request_id.decode("latin-1")
            await send(message)

        token = _current.set(line)
        try:
            await self._app(scope, receive, send_status)
        finally:
            _current.reset(token)
            line["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
            log.info(Line(line))

"""The one way to address an upstream: its endpoint (URL and key), the headers a call carries, and what an
upstream's answer may pass on to a client: its refusals rebuilt in the gateway's words, and every configured
upstream key removed (``redact``) from whatever of the upstream's words leaves the gateway or is stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from tunegate.proxy.errors import GatewayError, UpstreamFailed, UpstreamTimeout, UpstreamUnreachable

REDACTED = "***"
# Every upstream key this process has resolved: an upstream may echo any of them, not only its own.
_SECRETS: set[str] = set()


@dataclass(frozen=True)
class UpstreamEndpoint:
    name: str
    base_url: str
    api_key: str | None  # resolved from the environment; never logged, never echoed

    def __post_init__(self) -> None:
        if self.api_key:
            _SECRETS.add(self.api_key)


def redact(text: str) -> str:
    """``text`` without the bytes of any configured upstream key (longest first: one key may hold another)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redacted(value: Any) -> Any:
    """A JSON value with :func:`redact` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def auth_headers(upstream: UpstreamEndpoint) -> dict[str, str]:
    return {"authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}


def model_call_headers(upstream: UpstreamEndpoint, request_id: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-request-id": request_id, **auth_headers(upstream)}


def unreachable(upstream: UpstreamEndpoint, exc: Exception) -> GatewayError:
    """A call that got no answer: 504 on a timeout, else 502."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"Upstream '{upstream.name}' timed out.")
    return UpstreamUnreachable(f"Upstream '{upstream.name}' is unreachable ({type(exc).__name__}).")


@dataclass(frozen=True)
class UpstreamError:
    """What the gateway keeps of an upstream's ``{"error": {...}}``: its strings, redacted (empty when absent)."""

    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | None = None


def upstream_error(body: bytes | dict[str, Any] | None) -> UpstreamError:
    """The error an upstream's body (or SSE event) states, with every configured key removed."""
    try:
        data = orjson.loads(body) if isinstance(body, bytes) else body
    except orjson.JSONDecodeError:
        return UpstreamError()
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return UpstreamError(redact(error) if isinstance(error, str) else "")

    def text(name: str) -> str | None:
        value = error.get(name)
        return redact(value) if isinstance(value, str) else None

    return UpstreamError(text("message") or "", text("type"), text("param"), text("code"))


def answered_badly(upstream: UpstreamEndpoint, status: int, body: bytes) -> GatewayError:
    """An answer the gateway cannot pass on (a 5xx, or no JSON): a 502 with the upstream's message, if any."""
    message = upstream_error(body).message
    detail = f": {message}" if message else ""
    return UpstreamFailed(f"Upstream '{upstream.name}' answered {status}{detail}")


def refused(upstream: UpstreamEndpoint, status: int, body: bytes, what: str | None = None) -> GatewayError:
    """An upstream's 4xx to a request, rebuilt from what the gateway knows: the status, the error's type, param
    and code, and its message without any key. Its 401/403 concern the gateway's own key, not the client's: a 502.
    ``what`` names the request in the message (fine-tuning work); a model call passes the message as it is."""
    if status in (401, 403):
        about = f" for {what}" if what else ""
        return UpstreamFailed(f"Upstream '{upstream.name}' did not accept the gateway's credentials{about}.")
    if status < 400 or status >= 500:
        return answered_badly(upstream, status, body)
    error = upstream_error(body)
    message = f"Upstream '{upstream.name}' refused {what}: {error.message}" if what else error.message
    return GatewayError(status, message, type=error.type, param=error.param, code=error.code)


def error_event(event: dict[str, Any]) -> dict[str, Any]:
    """An upstream's SSE error event as the client gets it: rebuilt from its fields, without any key."""
    error = upstream_error(event)
    kind = error.type or "server_error"
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}

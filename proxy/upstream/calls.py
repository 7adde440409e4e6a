"""The one way to address an upstream: its endpoint (URL and key), the headers a call carries, and what a failed
call means in the gateway's words (a 502 or 504 naming the upstream, never its key)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import orjson

from tunegate.proxy.errors import GatewayError, UpstreamFailed, UpstreamTimeout, UpstreamUnreachable


@dataclass(frozen=True)
class UpstreamEndpoint:
    name: str
    base_url: str
    api_key: str | None  # resolved from the environment; never logged, never echoed


def auth_headers(upstream: UpstreamEndpoint) -> dict[str, str]:
    return {"authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}


def model_call_headers(upstream: UpstreamEndpoint, request_id: str) -> dict[str, str]:
    return {"content-type": "application/json", "x-request-id": request_id, **auth_headers(upstream)}


def unreachable(upstream: UpstreamEndpoint, exc: Exception) -> GatewayError:
    """A call that got no answer: 504 on a timeout, else 502."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"Upstream '{upstream.name}' timed out.")
    return UpstreamUnreachable(f"Upstream '{upstream.name}' is unreachable ({type(exc).__name__}).")


def answered_badly(upstream: UpstreamEndpoint, status: int, body: bytes) -> GatewayError:
    """An answer the gateway cannot pass on (a 5xx, or no JSON): a 502 with the upstream's message, if any."""
    try:
        message = str((orjson.loads(body).get("error") or {}).get("message") or "")
    except (orjson.JSONDecodeError, AttributeError):
        message = ""
    detail = f": {message}" if message else ""
    return UpstreamFailed(f"Upstream '{upstream.name}' answered {status}{detail}")

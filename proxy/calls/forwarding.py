"""Forwarding one model call to its alias's targets in turn: the prompt injected, a failed target followed by the
fallback, the first answer that serves sent on (JSON, or a stream relayed as it comes).

The body is parsed once; only ``model`` (and ``messages`` for chat, ``instructions`` for responses,
``stream_options`` for chat streams) is touched, everything else reaches the upstream as the client sent it.
Forwarding is given what it needs: the transport, the upstream table, the shutdown dates, ``record``, which gets
what the answer spent, and ``own``, which gets the id of an object the upstream stored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import orjson

from tunegate.proxy.calls.answers import Answer, JSONAnswer, SSEAnswer
from tunegate.proxy.calls.exchange import Attempt, Exchange, Outcome, Own, Record
from tunegate.proxy.calls.parsing import encode
from tunegate.proxy.calls.relay import Events, relay
from tunegate.proxy.errors import GatewayError, UpstreamFailed
from tunegate.proxy.upstream.calls import UpstreamEndpoint, answered_badly, model_call_headers, refused, unreachable
from tunegate.proxy.upstream.transport import UpstreamTransport
from tunegate.registry.aliases import Target
from tunegate.registry.finetune.retirement import ShutdownDates

_SYSTEM_ROLES = ("system", "developer")


def inject(messages: list[Any], prompt: str, policy: str) -> tuple[list[Any], bool]:
    """The messages with the target's system prompt applied under ``policy``; True when it was added."""
    system = {"role": "system", "content": prompt}
    has_system = any(isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES for m in messages)
    if policy == "if_absent":
        return (messages, False) if has_system else ([system, *messages], True)
    if policy == "replace":
        return [system, *(m for m in messages if not (isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES))], True
    return [system, *messages], True


def instruct(instructions: Any, prompt: str, policy: str) -> tuple[str, bool]:
    """A Responses call's ``instructions`` with the target's system prompt applied under ``policy``: prepended to
    the client's (a blank line between), only when it sent none (if_absent), or instead of them (replace); True
    when the prompt was added."""
    given = instructions if isinstance(instructions, str) and instructions else None
    if policy == "if_absent" and given is not None:
        return given, False
    if policy == "replace" or given is None:
        return prompt, True
    return f"{prompt}\n\n{given}", True


def attempts(
    exchange: Exchange, upstreams: Mapping[str, UpstreamEndpoint], retired: ShutdownDates
) -> Iterator[Attempt]:
    """The targets to try, in turn: each is prepared only when the one before it has failed."""
    spec = exchange.alias.spec
    sticky = exchange.body.get("user")
    target, served_by, weight = spec.choose(sticky if isinstance(sticky, str) and sticky else exchange.request_id)
    # A target past its shutdown date would only fail: its fallback serves at once.
    if spec.fallback is None or not retired.passed(target.upstream, target.model):
        yield _attempt(exchange, upstreams, target, served_by, weight)
    if spec.fallback:
        yield _attempt(exchange, upstreams, spec.fallback, "fallback", None)


def _attempt(
    exchange: Exchange, upstreams: Mapping[str, UpstreamEndpoint], target: Target, served_by: str, weight: int | None
) -> Attempt:
    payload = dict(exchange.body)
    payload["model"] = target.model
    injected = 0
    if target.system_prompt and exchange.endpoint == "chat.completions":
        payload["messages"], added = inject(exchange.body["messages"], target.system_prompt, exchange.alias.spec.policy)
        injected = exchange.alias.system_prompt_tokens(target) if added else 0
    elif target.system_prompt and exchange.endpoint in ("responses", "responses.input_tokens"):
        payload["instructions"], added = instruct(
            exchange.body.get("instructions"), target.system_prompt, exchange.alias.spec.policy
        )
        injected = exchange.alias.system_prompt_tokens(target) if added else 0
    if payload.get("stream") and exchange.shape.asks_usage:
        payload["stream_options"] = {**(exchange.body.get("stream_options") or {}), "include_usage": True}
    upstream = upstreams.get(target.upstream)
    if upstream is None:
        raise UpstreamFailed(f"The alias points at upstream '{target.upstream}', which is not configured.")
    return Attempt(target, served_by, upstream, payload, injected, weight)


async def forward(
    exchange: Exchange,
    *,
    transport: UpstreamTransport,
    upstreams: Mapping[str, UpstreamEndpoint],
    retired: ShutdownDates,
    record: Record,
    own: Own | None = None,
) -> Answer:
    """Try each target in turn; answer from the first that serves. ``record`` gets what the answer spent (for a
    stream, when it ends), ``own`` the id of an object the upstream stored (before the client has it); when no
    target serves, what the last one failed with is recorded and raised."""
    last_error: GatewayError | None = None
    attempt: Attempt | None = None
    for attempt in attempts(exchange, upstreams, retired):
        url = attempt.upstream.base_url + exchange.path
        headers = model_call_headers(attempt.upstream, exchange.request_id)
        content = encode(attempt.payload)
        try:
            if exchange.stream:
                return await _open_stream(exchange, attempt, transport, url, headers, content, record, own)
            upstream = await transport.post(url, content, headers)
            answer, stored = _answer(exchange, attempt, upstream.status_code, upstream.content, record, own is not None)
            if own is not None and stored is not None:
                await own(attempt, stored)
            return answer
        except _FallBack as fall_back:
            last_error = fall_back.error
        except httpx.TransportError as exc:
            last_error = unreachable(attempt.upstream, exc)
    # One record per request: a target that failed and was followed by another spent nothing worth keeping.
    assert last_error is not None and attempt is not None
    record(attempt, Outcome(last_error.status))
    last_error.headers = {"x-request-id": exchange.request_id}
    raise last_error


class _FallBack(Exception):
    """This target failed in a way the next one may not: try it."""

    def __init__(self, error: GatewayError) -> None:
        self.error = error


def _should_fall_back(status: int, body: bytes) -> bool:
    if status >= 500:
        return True
    if status == 404:
        try:
            error = orjson.loads(body).get("error") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return True
        return bool(error.get("code") == "model_not_found" or "does not exist" in str(error.get("message", "")))
    return False


def _answer(
    exchange: Exchange, attempt: Attempt, status: int, body: bytes, record: Record, owned: bool
) -> tuple[JSONAnswer, str | None]:
    """The answer to send, and (when ``owned``: someone notes the owner) the id of the object the upstream stored
    with it (if any)."""
    if _should_fall_back(status, body):
        raise _FallBack(answered_badly(attempt.upstream, status, body))
    headers = attempt.headers(exchange.request_id)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _FallBack(answered_badly(attempt.upstream, 502, b"")) from None
    if status >= 400:
        # The client's own mistake (a bad parameter): the upstream's error rebuilt (never its body as it is).
        error = refused(attempt.upstream, status, body)
        record(attempt, Outcome(error.status))
        return JSONAnswer(error.status, error.body(), headers), None
    stored = None
    if isinstance(data, dict):
        shape = exchange.shape
        shape.rename(data, exchange.alias.name)
        stored = shape.stored(data) if owned else None
        record(attempt, Outcome(status, shape.usage(data)))
    return JSONAnswer(status, orjson.dumps(data), headers), stored


async def _open_stream(
    exchange: Exchange,
    attempt: Attempt,
    transport: UpstreamTransport,
    url: str,
    headers: dict[str, Any],
    content: bytes,
    record: Record,
    own: Own | None,
) -> Answer:
    upstream = await transport.stream(url, content, headers)
    try:
        if upstream.status_code != 200:
            body = await upstream.aread()
            await upstream.aclose()
            return _answer(exchange, attempt, upstream.status_code, body, record, False)[0]
        events = Events(upstream.aiter_bytes(), named=exchange.shape.named_events)
        first = await events.next()  # nothing has reached the client yet: a failure here can still fall back
        if first is None:
            raise _FallBack(answered_badly(attempt.upstream, 502, b""))
    except BaseException:
        await upstream.aclose()
        raise
    events_out = relay(exchange, attempt, upstream, events, first, record, own)
    return SSEAnswer(events_out, attempt.headers(exchange.request_id))

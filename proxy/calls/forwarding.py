"""Forwarding one OpenAI request to an alias's targets: injection, fallback, SSE relay and the usage record.

The body is parsed once; only ``model`` (and ``messages`` for chat, ``stream_options`` for streams) is
touched, everything else reaches the upstream as the client sent it.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import orjson

from proxy.calls.answers import Answer, JSONAnswer, SSEAnswer
from proxy.errors import GatewayError
from proxy.state import Gateway
from proxy.upstream.calls import UpstreamEndpoint, answered_badly, model_call_headers, unreachable
from registry.aliases import ResolvedAlias, Target
from registry.models import utcnow
from registry.teams import Caller
from registry.tokens import count_messages, count_text
from registry.usage import Usage

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


@dataclass
class Attempt:
    """One target tried for a request."""

    target: Target
    served_by: str
    upstream: UpstreamEndpoint
    payload: dict[str, Any]
    injected_tokens: int = 0
    weight: int | None = None  # percent of the alias's traffic this target takes (canaries)


@dataclass
class Exchange:
    """A request on its way through the gateway, and the figures its usage record will carry."""

    gateway: Gateway
    caller: Caller
    endpoint: str  # chat.completions | completions | embeddings
    path: str  # upstream path below base_url
    alias: ResolvedAlias
    body: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=lambda: "req_" + os.urandom(16).hex())  # uuid4's 1.5 µs, a fifth

    def attempts(self) -> Iterator[Attempt]:
        """The targets to try, in turn: each is prepared only when the one before it has failed."""
        spec = self.alias.spec
        sticky = self.body.get("user")
        target, served_by, weight = spec.choose(sticky if isinstance(sticky, str) and sticky else self.request_id)
        # A target past its shutdown date would only fail: its fallback serves at once.
        retired = spec.fallback is not None and self.gateway.shutdown_dates.passed(target.upstream, target.model)
        if not retired:
            yield self._attempt(target, served_by, weight)
        if spec.fallback:
            yield self._attempt(spec.fallback, "fallback", None)

    def _attempt(self, target: Target, served_by: str, weight: int | None) -> Attempt:
        payload = dict(self.body)
        payload["model"] = target.model
        injected = 0
        if target.system_prompt and self.endpoint == "chat.completions":
            payload["messages"], added = inject(self.body["messages"], target.system_prompt, self.alias.spec.policy)
            injected = self.alias.system_prompt_tokens(target) if added else 0
        if payload.get("stream"):
            payload["stream_options"] = {**(self.body.get("stream_options") or {}), "include_usage": True}
        return Attempt(target, served_by, self.gateway.upstream(target.upstream), payload, injected, weight)

    def headers(self, attempt: Attempt) -> dict[str, str]:
        return {
            "x-request-id": self.request_id,
            "x-tunegate-model": attempt.target.model,
            "x-tunegate-served-by": attempt.served_by,
            **({"x-tunegate-weight": str(attempt.weight)} if attempt.weight is not None else {}),
        }

    def saved_tokens(self, attempt: Attempt) -> int:
        # A fine-tuned target served without the prompt its fallback needs: those tokens were saved.
        fallback = self.alias.spec.fallback
        if attempt.served_by == "fallback" or fallback is None or not fallback.system_prompt or attempt.injected_tokens:
            return 0
        return self.alias.system_prompt_tokens(fallback)

    def record(
        self,
        attempt: Attempt,
        *,
        status: int,
        usage: dict[str, Any] | None,
        ttft_ms: float | None = None,
        partial: bool = False,
        completion_text: str = "",
    ) -> None:
        prompt = completion = cached = 0
        if usage:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        elif partial:
            # The upstream never sent its count: estimate what was spent with the model's own encoding.
            messages = attempt.payload.get("messages")
            if isinstance(messages, list):
                prompt = count_messages(messages, attempt.target.model).tokens
            completion = count_text(completion_text, attempt.target.model).tokens
        now = utcnow()
        self.gateway.limits.submit(  # to the usage writer, and charged to the team's budget and limits
            Usage(
                created_at=now,
                day=now.date(),
                request_id=self.request_id,
                endpoint=self.endpoint,
                team_id=self.caller.team_id,
                key_id=self.caller.key_id,
                alias=self.alias.name,
                alias_version=self.alias.version,
                upstream=attempt.upstream.name,
                model=attempt.target.model,
                served_by=attempt.served_by,
                canary_weight=attempt.weight,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=cached,
                injected_tokens=attempt.injected_tokens,
                saved_tokens=self.saved_tokens(attempt) if status < 400 else 0,
                status_code=status,
                latency_ms=(time.perf_counter() - self.started) * 1000,
                ttft_ms=ttft_ms,
                partial=partial,
            )
        )


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


def _upstream_error(
    attempt: Attempt, exc: Exception | None, status: int | None = None, body: bytes = b""
) -> GatewayError:
    return (
        unreachable(attempt.upstream, exc) if exc is not None else answered_badly(attempt.upstream, status or 502, body)
    )


async def forward(exchange: Exchange) -> Answer:
    """Try each target in turn; answer from the first that serves."""
    stream = bool(exchange.body.get("stream"))
    last_error: GatewayError | None = None
    attempt: Attempt | None = None
    for attempt in exchange.attempts():
        url = attempt.upstream.base_url + exchange.path
        headers = model_call_headers(attempt.upstream, exchange.request_id)
        content = orjson.dumps(attempt.payload)
        try:
            if stream:
                response = await _open_stream(exchange, attempt, url, headers, content)
            else:
                upstream = await exchange.gateway.transport.post(url, content, headers)
                response = _answer(exchange, attempt, upstream.status_code, upstream.content)
        except _FallBack as fall_back:
            last_error = fall_back.error
            continue
        except httpx.TransportError as exc:
            last_error = _upstream_error(attempt, exc)
            continue
        return response
    # One record per request: a target that failed and was followed by another spent nothing worth keeping.
    assert last_error is not None and attempt is not None
    exchange.record(attempt, status=last_error.status, usage=None)
    last_error.headers = {"x-request-id": exchange.request_id}
    raise last_error


class _FallBack(Exception):
    def __init__(self, error: GatewayError) -> None:
        self.error = error


def _answer(exchange: Exchange, attempt: Attempt, status: int, body: bytes) -> JSONAnswer:
    if _should_fall_back(status, body):
        raise _FallBack(_upstream_error(attempt, None, status, body))
    headers = exchange.headers(attempt)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _FallBack(_upstream_error(attempt, None, 502, b"")) from None
    if status >= 400:
        # The client's own mistake (a bad parameter): the upstream's words, under the gateway's status.
        exchange.record(attempt, status=status, usage=None)
        return JSONAnswer(status, body, headers)
    if isinstance(data, dict):
        data["model"] = exchange.alias.name
        exchange.record(attempt, status=status, usage=data.get("usage"))
    return JSONAnswer(status, orjson.dumps(data), headers)


async def _open_stream(
    exchange: Exchange, attempt: Attempt, url: str, headers: dict[str, Any], content: bytes
) -> Answer:
    upstream = await exchange.gateway.transport.stream(url, content, headers)
    try:
        if upstream.status_code != 200:
            body = await upstream.aread()
            await upstream.aclose()
            return _answer(exchange, attempt, upstream.status_code, body)
        events = _Events(upstream.aiter_bytes())
        first = await events.next()  # nothing has reached the client yet: a failure here can still fall back
        if first is None:
            raise _FallBack(_upstream_error(attempt, None, 502, b""))
    except BaseException:
        await upstream.aclose()
        raise
    return SSEAnswer(_relay(exchange, attempt, upstream, events, first), exchange.headers(attempt))


class _Events:
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


async def _relay(
    exchange: Exchange, attempt: Attempt, upstream: httpx.Response, events: _Events, first: list[bytes]
) -> AsyncGenerator[bytes, None]:
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
                        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
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
        error = _upstream_error(attempt, exc if isinstance(exc, httpx.TransportError) else None, 502)
        status = error.status
        yield b"data: " + orjson.dumps(error.payload()) + b"\n\n"
    finally:
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
        exchange.record(
            attempt,
            status=status,
            usage=usage,
            ttft_ms=ttft_ms,
            partial=not finished or usage is None,
            completion_text="".join(text),
        )


def _collect_text(chunk: dict[str, Any], text: list[str]) -> None:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        piece = delta.get("content") if isinstance(delta, dict) else None
        if piece is None:
            piece = choice.get("text")
        if isinstance(piece, str):
            text.append(piece)

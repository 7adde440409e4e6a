"""The usage record of a model call: the tokens the upstream counted (or, for a stream it never counted, an
estimate with the model's own encoding), the prompt tokens injected and saved, the latency."""

from __future__ import annotations

import time
from collections.abc import Collection

from tunegate.proxy.calls.exchange import Attempt, Exchange, Outcome
from tunegate.registry.models import utcnow
from tunegate.registry.tokens import count_messages, count_text
from tunegate.registry.usage import Usage, kept_metadata, kept_user


def usage_record(
    exchange: Exchange, attempt: Attempt, outcome: Outcome, *, metadata_keys: Collection[str] = ()
) -> Usage:
    """The record of ``exchange`` answered by ``attempt`` (costed when it is kept: :meth:`Gateway.record`), with the
    request's ``user`` and the ``metadata_keys`` of its ``metadata`` (the config's ``usage.metadata_keys``)."""
    prompt = completion = cached = 0
    usage = outcome.usage
    if usage:
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    elif outcome.partial:
        # The upstream never sent its count: estimate what was spent with the model's own encoding.
        messages = exchange.shape.prompt(attempt.payload)
        if messages is not None:
            prompt = count_messages(messages, attempt.target.model).tokens
        completion = count_text(outcome.completion_text, attempt.target.model).tokens
    now = utcnow()
    return Usage(
        created_at=now,
        day=now.date(),
        request_id=exchange.request_id,
        endpoint=exchange.endpoint,
        team_id=exchange.caller.team_id,
        key_id=exchange.caller.key_id,
        end_user=kept_user(exchange.body.get("user")),
        request_metadata=kept_metadata(exchange.body.get("metadata"), metadata_keys),
        alias=exchange.alias.name,
        alias_version=exchange.alias.version,
        upstream=attempt.upstream.name,
        model=attempt.target.model,
        served_by=attempt.served_by,
        canary_weight=attempt.weight,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        injected_tokens=attempt.injected_tokens,
        saved_tokens=saved_tokens(exchange, attempt) if outcome.status < 400 else 0,
        status_code=outcome.status,
        latency_ms=(time.perf_counter() - exchange.started) * 1000,
        ttft_ms=outcome.ttft_ms,
        partial=outcome.partial,
    )


def saved_tokens(exchange: Exchange, attempt: Attempt) -> int:
    """A fine-tuned target served without the prompt its fallback needs: those tokens were saved."""
    fallback = exchange.alias.spec.fallback
    if attempt.served_by == "fallback" or fallback is None or not fallback.system_prompt or attempt.injected_tokens:
        return 0
    return exchange.alias.system_prompt_tokens(fallback)

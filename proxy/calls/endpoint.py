"""The one function that owns a model call, its steps in the order they happen:

    authenticate → parse → resolve the alias → admit (budget, rate limits) → forward (attempts, fallback)
    → record usage (and charge it) → settle (wait for the charge) → send

Each step is a leaf that returns its value here; forwarding gets what it needs, not the process's state.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from tunegate.proxy.auth import team_caller
from tunegate.proxy.calls.answers import Answer
from tunegate.proxy.calls.exchange import Attempt, Exchange, Outcome
from tunegate.proxy.calls.forwarding import forward
from tunegate.proxy.calls.parsing import check_streaming, metadata_of, optional, parse_json, require
from tunegate.proxy.calls.recording import usage_record
from tunegate.proxy.calls.stored import check_previous, owner
from tunegate.proxy.state import Gateway
from tunegate.registry.stored import CHAT_COMPLETION, RESPONSE

# The model calls: the path after /v1, the endpoint their usage records name, and the fields they must have.
MODEL_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "/chat/completions": ("chat.completions", {"messages": (list, "a non-empty array of messages")}),
    "/completions": ("completions", {"prompt": ((str, list), "a string or an array")}),
    "/embeddings": ("embeddings", {"input": ((str, list), "a string or an array")}),
    "/responses": ("responses", {"input": ((str, list), "a string or an array of input items")}),
}


async def model_call(state: Gateway, request: Request[Any, Any, Any], path: str) -> Answer:
    """The model call at ``path`` (one of MODEL_CALLS): its answer, to send as it is (an ASGI app)."""
    endpoint, required = MODEL_CALLS[path]
    caller = await team_caller(state.keys, request.headers.get("authorization"), cannot="call models")
    body = parse_json(await request.body())
    name = require(body, "model", str, "the name of a model (an alias)")
    for field, (kind, what) in required.items():
        require(body, field, kind, what)
    check_streaming(body, endpoint)
    own = None  # who owns what the upstream stores: a response, or a chat completion asked to be stored
    if endpoint == "responses":  # it may build on a stored response: the team's own only
        optional(body, "instructions", str, "a string")
        await check_previous(state, caller, body)
    alias = await state.resolve_alias(caller, name)
    if endpoint == "responses":
        own = owner(state, caller, alias.name, RESPONSE)
    elif body.get("store") is True and endpoint == "chat.completions":
        own = owner(state, caller, alias.name, CHAT_COMPLETION, metadata_of(body))
    upstreams = await state.upstreams()
    exchange = Exchange(caller, endpoint, path, alias, body)

    def spent(attempt: Attempt, outcome: Outcome) -> None:  # record usage: when the answer (or stream) ends
        state.record(usage_record(exchange, attempt, outcome, metadata_keys=state.settings.usage.metadata_keys))

    with state.budgets.calling():
        quota = await state.budgets.admit(caller)  # a 429 before anything is spent
        answer = await forward(
            exchange,
            transport=state.transport,
            upstreams=upstreams,
            retired=state.shutdown_dates,
            record=spent,
            own=own,
        )
        answer.headers.update(quota.headers)
        if quota.settle and not exchange.stream:  # the next request must see this one's charge; a stream's ends later
            await state.budgets.settled(exchange.request_id)
    return answer

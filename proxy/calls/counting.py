"""``POST /v1/responses/input_tokens`` on an alias: what a Responses call would count as input, asked of the target
that would serve it (the alias resolved, its prompt injected as ``instructions``, fallback as for a model call).
Counting spends nothing: no usage record, no budget or rate limit."""

from __future__ import annotations

from typing import Any

from litestar import Request

from tunegate.proxy.auth import team_caller
from tunegate.proxy.calls.answers import Answer
from tunegate.proxy.calls.exchange import Attempt, Exchange, Outcome
from tunegate.proxy.calls.forwarding import forward
from tunegate.proxy.calls.parsing import optional, parse_json, require
from tunegate.proxy.calls.stored import check_previous
from tunegate.proxy.state import Gateway

ENDPOINT = "responses.input_tokens"


async def count_input_tokens(state: Gateway, request: Request[Any, Any, Any]) -> Answer:
    """The upstream's count for this request, its answer sent on as it is (an ASGI app)."""
    caller = await team_caller(state.keys, request.headers.get("authorization"), cannot="call models")
    body = parse_json(await request.body())
    name = require(body, "model", str, "the name of a model (an alias)")
    optional(body, "instructions", str, "a string")
    body.pop("stream", None)  # a count is never streamed
    await check_previous(state, caller, body)
    alias = await state.resolve_alias(caller, name)
    exchange = Exchange(caller, ENDPOINT, "/responses/input_tokens", alias, body)

    def nothing_spent(attempt: Attempt, outcome: Outcome) -> None:
        pass

    return await forward(
        exchange,
        transport=state.transport,
        upstreams=await state.upstreams(),
        retired=state.shutdown_dates,
        record=nothing_spent,
    )

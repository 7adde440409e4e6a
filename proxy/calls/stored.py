"""The objects a model call leaves at the upstream (stored responses) and the team that owns them: noted before the
client has the id, checked when a call names one (``previous_response_id``), and read, deleted or cancelled at the
upstream that stored them for that team only; another team's id is answered exactly as an unknown one."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from tunegate.proxy.calls.exchange import Attempt, Own
from tunegate.proxy.errors import GatewayError, NotFound
from tunegate.proxy.state import Gateway, read, transaction
from tunegate.proxy.upstream.calls import answered_badly, model_call_headers, refused, unreachable
from tunegate.registry.responses import forget_response, keep_response, team_response
from tunegate.registry.teams import Caller


def owner(state: Gateway, caller: Caller, alias: str) -> Own:
    """What forwarding calls with the id of a response the upstream stored: the caller's team owns it."""

    async def own(attempt: Attempt, response_id: str) -> None:
        await transaction(
            state,
            lambda session: keep_response(
                session,
                response_id=response_id,
                team_id=caller.team_id,
                upstream=attempt.upstream.name,
                alias=alias,
                model=attempt.target.model,
            ),
        )

    return own


async def check_previous(state: Gateway, caller: Caller, body: dict[str, Any]) -> None:
    """A ``previous_response_id`` must name one of the caller's team's responses: another team's is refused as the
    upstream refuses an unknown one (404 previous_response_not_found)."""
    previous = body.get("previous_response_id")
    if previous is None:
        return
    found = None
    if isinstance(previous, str):
        found = await read(state, lambda session: team_response(session, response_id=previous, team_id=caller.team_id))
    if found is None:
        raise NotFound(
            f"Previous response with id '{previous}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )


def unknown_response(response_id: str) -> GatewayError:
    """OpenAI's words for an id it does not know: the same for another team's id."""
    return NotFound(f"Response with id '{response_id}' not found.", code=None)


async def at_upstream(
    state: Gateway, caller: Caller, response_id: str, method: str, suffix: str, query: Mapping[str, Any] | None
) -> tuple[int, bytes, dict[str, str]]:
    """``method`` on the caller's team's stored response (``suffix``: "", "/cancel", "/input_items"), made at the
    upstream that stored it: the answer's status, JSON body (``model`` the alias it was created on) and headers."""
    stored = await read(state, lambda session: team_response(session, response_id=response_id, team_id=caller.team_id))
    if stored is None:
        raise unknown_response(response_id)
    upstream = await state.upstream(stored.upstream)
    request_id = "req_" + os.urandom(16).hex()
    try:
        answer = await state.http.request(
            method,
            f"{upstream.base_url}/responses/{response_id}{suffix}",
            params=query,
            headers=model_call_headers(upstream, request_id),
        )
    except httpx.TransportError as exc:
        raise unreachable(upstream, exc) from None
    headers = {"x-request-id": request_id}
    if answer.status_code == 404:
        raise unknown_response(response_id)  # gone at the upstream too
    if answer.status_code >= 400:  # cancelling one not in the background: the upstream's words, without any key
        error = refused(upstream, answer.status_code, answer.content)
        error.headers = headers
        raise error
    try:
        data = orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        raise answered_badly(upstream, 502, b"") from None
    if method == "DELETE":
        await transaction(
            state, lambda session: forget_response(session, response_id=response_id, team_id=caller.team_id)
        )
    elif isinstance(data, dict) and data.get("object") == "response":
        data["model"] = stored.alias
    return answer.status_code, orjson.dumps(data), headers

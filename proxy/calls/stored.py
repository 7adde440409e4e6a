"""The objects a model call leaves at the upstream (stored responses) and the team that owns them: noted before the
client has the id, and checked when a call names one (``previous_response_id``), so a team only builds on its own."""

from __future__ import annotations

from typing import Any

from tunegate.proxy.calls.exchange import Attempt, Own
from tunegate.proxy.errors import NotFound
from tunegate.proxy.state import Gateway, read, transaction
from tunegate.registry.responses import keep_response, team_response
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

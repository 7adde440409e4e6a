"""Stored responses and the team that owns each: the gateway keeps who created a response the upstream stored,
so one team never reads, deletes, cancels or continues another's (an id it does not own is answered as unknown)."""

from __future__ import annotations

from sqlmodel import Session

from tunegate.registry.models import StoredResponse


def keep_response(session: Session, *, response_id: str, team_id: int, upstream: str, alias: str, model: str) -> None:
    """Note that ``team_id`` owns ``response_id``, stored at ``upstream`` (the first owner stays: ids are unique)."""
    if session.get(StoredResponse, response_id) is None:
        session.add(StoredResponse(id=response_id, team_id=team_id, upstream=upstream, alias=alias, model=model))


def team_response(session: Session, *, response_id: str, team_id: int) -> StoredResponse | None:
    """The stored response ``response_id`` if ``team_id`` owns it; None for another team's and for an unknown id."""
    stored = session.get(StoredResponse, response_id)
    return stored if stored is not None and stored.team_id == team_id else None


def forget_response(session: Session, *, response_id: str, team_id: int) -> None:
    """The response was deleted at its upstream: it is no one's any more."""
    stored = team_response(session, response_id=response_id, team_id=team_id)
    if stored is not None:
        session.delete(stored)

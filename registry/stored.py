"""Stored objects and the team that owns each: the gateway keeps who created a response or a chat completion the
upstream stored, so one team never reads, changes, deletes, lists or continues another's (an id it does not own
is answered as unknown). A chat completion's metadata is kept too: the list filters on it."""

from __future__ import annotations

from sqlmodel import Session, col, select

from tunegate.registry.models import StoredObject

RESPONSE = "response"
CHAT_COMPLETION = "chat.completion"


def keep_object(
    session: Session,
    *,
    kind: str,
    object_id: str,
    team_id: int,
    upstream: str,
    alias: str,
    model: str,
    metadata: dict[str, str] | None = None,
) -> None:
    """Note that ``team_id`` owns ``object_id``, stored at ``upstream`` (the first owner stays: ids are unique)."""
    if session.get(StoredObject, object_id) is None:
        session.add(
            StoredObject(
                id=object_id, kind=kind, team_id=team_id, upstream=upstream, alias=alias, model=model, meta=metadata
            )
        )


def team_object(session: Session, *, kind: str, object_id: str, team_id: int) -> StoredObject | None:
    """The stored ``kind`` object ``object_id`` if ``team_id`` owns it; None for another team's, another kind's
    and an unknown id."""
    stored = session.get(StoredObject, object_id)
    return stored if stored is not None and stored.team_id == team_id and stored.kind == kind else None


def team_objects(session: Session, *, kind: str, team_id: int) -> list[StoredObject]:
    """The team's stored ``kind`` objects, oldest first (the order the upstream lists them in)."""
    query = (
        select(StoredObject)
        .where(StoredObject.team_id == team_id, StoredObject.kind == kind)
        .order_by(col(StoredObject.created_at), col(StoredObject.id))
    )
    return list(session.exec(query))


def set_metadata(session: Session, *, kind: str, object_id: str, team_id: int, metadata: dict[str, str]) -> None:
    """The object's metadata was replaced at its upstream: the list filters on the new one."""
    stored = team_object(session, kind=kind, object_id=object_id, team_id=team_id)
    if stored is not None:
        stored.meta = metadata
        session.add(stored)


def forget_object(session: Session, *, kind: str, object_id: str, team_id: int) -> None:
    """The object was deleted at its upstream: it is no one's any more."""
    stored = team_object(session, kind=kind, object_id=object_id, team_id=team_id)
    if stored is not None:
        session.delete(stored)

"""The audit log: one entry per change, written in the change's own transaction, with who made it."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from tunegate.registry.models import AuditEntry


def record(*, session: Session, actor: str, action: str, target: str, **detail: Any) -> AuditEntry:
    entry = AuditEntry(actor=actor, action=action, target=target, detail=detail)
    session.add(entry)
    return entry


def list_audit(
    *,
    session: Session,
    limit: int = 50,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    before_id: int | None = None,
) -> list[AuditEntry]:
    """The newest entries first; ``action`` matches a whole action or a prefix ending in '.' (``alias.``)."""
    query = select(AuditEntry)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        query = query.where(
            col(AuditEntry.action).startswith(action) if action.endswith(".") else AuditEntry.action == action
        )
    if target is not None:
        query = query.where(AuditEntry.target == target)
    if before_id is not None:
        query = query.where(col(AuditEntry.id) < before_id)
    return list(session.exec(query.order_by(col(AuditEntry.id).desc()).limit(limit)).all())

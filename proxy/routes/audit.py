"""/admin/audit: who changed what, newest first."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.params import Parameter
from pydantic import BaseModel
from sqlmodel import Session

from tunegate.proxy.auth import admin_guard
from tunegate.proxy.routes.common import MAX_ID, AnyRequest, read
from tunegate.registry.audit import list_audit
from tunegate.registry.models import AuditEntry


class AuditOut(BaseModel):
    id: int
    created_at: str
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


def audit_out(entry: AuditEntry) -> AuditOut:
    assert entry.id is not None
    return AuditOut(
        id=entry.id,
        created_at=entry.created_at.isoformat(),
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        detail=entry.detail,
    )


class AuditController(Controller):
    path = "/admin/audit"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin: audit"]  # noqa: RUF012

    @get("/")
    async def list_audit(
        self,
        request: AnyRequest,
        limit: int = Parameter(default=50, ge=1, le=1000),
        actor: str | None = None,
        action: str | None = Parameter(default=None, description="an action, or a prefix ending in '.': alias."),
        target: str | None = None,
        before: int | None = Parameter(
            default=None, ge=1, le=MAX_ID, description="entries older than this id (paging)"
        ),
    ) -> list[AuditOut]:
        def work(session: Session) -> list[AuditOut]:
            entries = list_audit(
                session=session, limit=limit, actor=actor, action=action, target=target, before_id=before
            )
            return [audit_out(e) for e in entries]

        return await read(request, work)

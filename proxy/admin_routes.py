"""The admin API: teams and keys (the bootstrap calls), behind ``Authorization: Bearer $TUNEGATE_ADMIN_KEY``."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from pydantic import BaseModel, ConfigDict, Field

from proxy.gateway import Gateway
from registry.db import session_scope
from registry.models import AuditEntry
from registry.teams import create_key, create_team, get_team


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    gateway: Gateway = connection.app.state.gateway
    gateway.check_admin(connection.headers.get("authorization"))


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team: str = Field(min_length=1)
    name: str | None = Field(default=None, max_length=128)
    role: str = "team"


class AdminController(Controller):
    path = "/admin"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin"]  # noqa: RUF012

    @post("/teams", status_code=201)
    async def create_team(self, request: Request[Any, Any, Any], data: TeamCreate) -> dict[str, Any]:
        gateway: Gateway = request.app.state.gateway
        with session_scope(gateway.engine) as session:
            team = create_team(session=session, name=data.name)
            session.add(AuditEntry(actor="admin", action="team.create", target=data.name))
        return {"id": team.id, "name": team.name, "disabled": team.disabled, "created_at": team.created_at.isoformat()}

    @post("/keys", status_code=201)
    async def create_key(self, request: Request[Any, Any, Any], data: KeyCreate) -> dict[str, Any]:
        gateway: Gateway = request.app.state.gateway
        with session_scope(gateway.engine) as session:
            team = get_team(session=session, name=data.team)
            key, record = create_key(session=session, team=team, name=data.name, role=data.role)
            session.add(AuditEntry(actor="admin", action="key.create", target=data.team, detail={"key_id": record.id}))
        return {
            "key": key,
            "id": record.id,
            "team": team.name,
            "prefix": record.prefix,
            "name": record.name,
            "role": record.role,
        }

"""/admin/keys: team, finance (every team's or one team's) and admin keys (the plaintext shown once, at
creation), their limits and expiry."""

from __future__ import annotations

from datetime import datetime

from litestar import Controller, get, patch, post
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from tunegate.proxy.auth import admin_guard
from tunegate.proxy.routes.common import AnyRequest, KeyId, TeamQuery, read, stamp, write
from tunegate.registry.models import ApiKey, Team
from tunegate.registry.teams import (
    UNSET,
    create_key,
    get_key,
    get_team,
    key_status,
    list_keys,
    revoke_key,
    update_key,
)


class KeyOut(BaseModel):
    id: int
    prefix: str
    name: str | None
    team: str
    role: str
    allowed_aliases: list[str] | None
    expires_at: str | None
    revoked_at: str | None
    created_at: str
    status: str  # active | revoked | expired | team disabled


def key_out(record: ApiKey, team: Team) -> KeyOut:
    assert record.id is not None
    return KeyOut(
        id=record.id,
        prefix=record.prefix,
        name=record.name,
        team=team.name,
        role=record.role,
        allowed_aliases=record.allowed_aliases,
        expires_at=stamp(record.expires_at),
        revoked_at=stamp(record.revoked_at),
        created_at=record.created_at.isoformat(),
        status=key_status(record, team),
    )


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team: str = Field(min_length=1)
    name: str | None = Field(default=None, max_length=128)
    role: str = Field(
        default="team",
        description="team (calls models), finance (reads every team's usage, budgets and savings), team_finance"
        " (reads those of its own team only), admin (/admin)",
    )
    allowed_aliases: list[str] | None = Field(default=None, description="limit the key to these aliases")
    expires_at: datetime | None = Field(default=None, description="e.g. 2030-01-31T00:00:00Z")


class KeyChange(BaseModel):
    """The fields to change; a field sent as null is cleared (no alias limit, no expiry, no name)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=128)
    allowed_aliases: list[str] | None = None
    expires_at: datetime | None = None


class KeyCreated(KeyOut):
    key: str  # shown once: only its sha256 is stored


class KeyController(Controller):
    path = "/admin/keys"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin: keys"]  # noqa: RUF012

    @get("/")
    async def list_keys(self, request: AnyRequest, team: str | None = TeamQuery) -> list[KeyOut]:
        return await read(request, lambda s: [key_out(k, t) for k, t in list_keys(session=s, team=team)])

    @post("/", status_code=201)
    async def create_key(self, request: AnyRequest, data: KeyCreate) -> KeyCreated:
        def work(session: Session, actor: str) -> KeyCreated:
            team = get_team(session=session, name=data.team)
            key, record = create_key(
                session=session,
                team=team,
                name=data.name,
                role=data.role,
                allowed_aliases=data.allowed_aliases,
                expires_at=data.expires_at,
                actor=actor,
            )
            return KeyCreated(**key_out(record, team).model_dump(), key=key)

        return await write(request, work)

    @get("/{key_id:int}")
    async def show_key(self, request: AnyRequest, key_id: int = KeyId) -> KeyOut:
        return await read(request, lambda s: key_out(*get_key(session=s, key_id=key_id)))

    @patch("/{key_id:int}")
    async def change_key(self, request: AnyRequest, data: KeyChange, key_id: int = KeyId) -> KeyOut:
        given = data.model_fields_set

        def work(session: Session, actor: str) -> KeyOut:
            record, team = update_key(
                session=session,
                key_id=key_id,
                actor=actor,
                name=data.name if "name" in given else UNSET,
                allowed_aliases=data.allowed_aliases if "allowed_aliases" in given else UNSET,
                expires_at=data.expires_at if "expires_at" in given else UNSET,
            )
            return key_out(record, team)

        return await write(request, work)

    @post("/{key_id:int}/revoke", status_code=200)
    async def revoke_key(self, request: AnyRequest, key_id: int = KeyId) -> KeyOut:
        return await write(request, lambda s, actor: key_out(*revoke_key(session=s, key_id=key_id, actor=actor)))

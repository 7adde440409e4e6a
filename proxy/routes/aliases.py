"""/admin/aliases and /admin/alias-versions: aliases, their immutable versions, rollback, enable and disable."""

from __future__ import annotations

from typing import Any

from litestar import Controller, delete, get, patch, post, put
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from tunegate.proxy.auth import admin_guard
from tunegate.proxy.routes.common import MAX_ID, AnyRequest, TeamQuery, read, write
from tunegate.registry.aliases import (
    AliasChange,
    AliasRow,
    AliasSpec,
    AliasWrite,
    current_version,
    get_alias,
    lineage,
    list_aliases,
    rollback_alias,
    set_alias_disabled,
    team_id_of,
    versions_of,
    write_alias,
)
from tunegate.registry.aliases import delete_alias as delete_alias_record
from tunegate.registry.finetune.lineage import alias_lineage
from tunegate.registry.models import AliasVersion


class SplitOut(BaseModel):
    model: str
    upstream: str
    weight: int
    served_by: str  # model | canary


class AliasVersionOut(BaseModel):
    version: int
    based_on: int | None
    created_by: str
    reason: str
    created_at: str
    spec: AliasSpec


class AliasOut(BaseModel):
    name: str
    team: str | None  # the owning team; null: a global alias
    pattern: bool  # a pattern forwards the model name a client asks for
    version: int
    disabled: bool
    deleted: bool
    created_at: str
    updated_at: str
    spec: AliasSpec
    split: list[SplitOut]  # how traffic divides between the target and its canaries


class AliasDetail(AliasOut):
    lineage: list[AliasVersionOut]  # the current version, then each version it was made from
    # each target of the current version → the job that made it → its training file (sha256) → validation
    sources: dict[str, Any]


class AliasWriteOut(BaseModel):
    changed: bool  # false: the alias was already so, and no version was made
    created: bool
    alias: AliasOut


class AliasStateChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disabled: bool


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rollback_to: int = Field(ge=1, le=MAX_ID, description="the version to restore, as a new version")
    reason: str = Field(default="", max_length=480)


def version_out(version: AliasVersion) -> AliasVersionOut:
    return AliasVersionOut(
        version=version.version,
        based_on=version.based_on,
        created_by=version.created_by,
        reason=version.reason,
        created_at=version.created_at.isoformat(),
        spec=AliasSpec.model_validate(version.spec),
    )


def alias_out(row: AliasRow) -> AliasOut:
    spec, alias = row.spec, row.alias
    split = [
        SplitOut(model=spec.target.model, upstream=spec.target.upstream, weight=spec.target_weight, served_by="model")
    ]
    split += [SplitOut(model=c.model, upstream=c.upstream, weight=c.weight, served_by="canary") for c in spec.canary]
    return AliasOut(
        name=alias.name,
        team=row.team,
        pattern="*" in alias.name,
        version=alias.current_version,
        disabled=alias.disabled,
        deleted=alias.deleted_at is not None,
        created_at=alias.created_at.isoformat(),
        updated_at=alias.updated_at.isoformat(),
        spec=spec,
        split=split,
    )


def _row(session: Session, name: str, team: str | None) -> AliasRow:
    alias = get_alias(session=session, name=name, team_id=team_id_of(session=session, team=team), deleted=True)
    version = current_version(session=session, alias=alias)
    assert version is not None
    return AliasRow(alias, version, team)


def _write_out(session: Session, result: AliasWrite, team: str | None) -> AliasWriteOut:
    return AliasWriteOut(
        changed=result.changed, created=result.created, alias=alias_out(AliasRow(result.alias, result.version, team))
    )


class AliasController(Controller):
    path = "/admin"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin: aliases"]  # noqa: RUF012

    @get("/aliases")
    async def list_aliases(
        self, request: AnyRequest, team: str | None = TeamQuery, deleted: bool = False
    ) -> list[AliasOut]:
        return await read(
            request, lambda s: [alias_out(r) for r in list_aliases(session=s, team=team, deleted=deleted)]
        )

    @get("/aliases/{name:path}")
    async def show_alias(self, request: AnyRequest, name: str, team: str | None = TeamQuery) -> AliasDetail:
        def work(session: Session) -> AliasDetail:
            row = _row(session, name.lstrip("/"), team)
            chain = lineage(versions_of(session=session, alias=row.alias), row.alias.current_version)
            return AliasDetail(
                **alias_out(row).model_dump(),
                lineage=[version_out(v) for v in chain],
                sources=alias_lineage(session=session, alias=row.alias),
            )

        return await read(request, work)

    @put("/aliases/{name:path}")
    async def set_alias(
        self, request: AnyRequest, name: str, data: AliasChange, team: str | None = TeamQuery
    ) -> AliasWriteOut:
        """Create the alias, or make a new version from its current one with the fields given changed."""

        def work(session: Session, actor: str) -> AliasWriteOut:
            result = write_alias(session=session, name=name.lstrip("/"), team=team, change=data, actor=actor)
            return _write_out(session, result, team)

        return await write(request, work)

    @patch("/aliases/{name:path}")
    async def change_alias_state(
        self, request: AnyRequest, name: str, data: AliasStateChange, team: str | None = TeamQuery
    ) -> AliasOut:
        """Disable (it answers 404; a disabled team alias hides the global one too) or enable an alias."""

        def work(session: Session, actor: str) -> AliasOut:
            set_alias_disabled(session=session, name=name.lstrip("/"), team=team, disabled=data.disabled, actor=actor)
            return alias_out(_row(session, name.lstrip("/"), team))

        return await write(request, work)

    @delete("/aliases/{name:path}", status_code=200)
    async def delete_alias(self, request: AnyRequest, name: str, team: str | None = TeamQuery) -> AliasOut:
        """Delete an alias: it stops serving; its versions are kept and setting it again restores it."""

        def work(session: Session, actor: str) -> AliasOut:
            delete_alias_record(session=session, name=name.lstrip("/"), team=team, actor=actor)
            return alias_out(_row(session, name.lstrip("/"), team))

        return await write(request, work)

    @get("/alias-versions/{name:path}")
    async def alias_history(
        self, request: AnyRequest, name: str, team: str | None = TeamQuery
    ) -> list[AliasVersionOut]:
        """Every version of an alias, newest first."""

        def work(session: Session) -> list[AliasVersionOut]:
            alias = _row(session, name.lstrip("/"), team).alias
            return [version_out(v) for v in versions_of(session=session, alias=alias)]

        return await read(request, work)

    @post("/alias-versions/{name:path}", status_code=200)
    async def rollback_alias(
        self, request: AnyRequest, name: str, data: Rollback, team: str | None = TeamQuery
    ) -> AliasWriteOut:
        """Roll back: a new version copying version ``rollback_to``, with reason "rollback to vN"."""

        def work(session: Session, actor: str) -> AliasWriteOut:
            result = rollback_alias(
                session=session,
                name=name.lstrip("/"),
                team=team,
                version=data.rollback_to,
                actor=actor,
                reason=data.reason,
            )
            return _write_out(session, result, team)

        return await write(request, work)

"""The admin API under /admin: teams, keys, aliases, upstreams, the audit log and declarative apply.

Every route wants ``Authorization: Bearer <admin key>``: ``$TUNEGATE_ADMIN_KEY`` (recorded as "admin") or a
named admin key (recorded under its name). Each write is one transaction with its audit entry, and clears
this process's caches so the change is served by the next request.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import anyio.to_thread
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.params import Parameter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from tunegate.config import ConfigError, parse_settings
from tunegate.config.names import TEAM_NAME
from tunegate.proxy.auth import admin_guard
from tunegate.proxy.errors import InvalidRequest
from tunegate.proxy.state import gateway_of
from tunegate.proxy.state import read as read_session
from tunegate.proxy.state import write as write_session
from tunegate.registry.aliases import (
    AliasChange,
    AliasRow,
    AliasSpec,
    AliasWrite,
    current_version,
    get_alias,
    lineage,
    list_aliases,
    rename_team,
    rollback_alias,
    set_alias_disabled,
    team_id_of,
    versions_of,
    write_alias,
)
from tunegate.registry.aliases import delete_alias as delete_alias_record
from tunegate.registry.audit import list_audit
from tunegate.registry.bootstrap import apply_settings
from tunegate.registry.errors import Conflict
from tunegate.registry.finetune.lineage import alias_lineage
from tunegate.registry.models import AliasVersion, ApiKey, AuditEntry, Team, Upstream
from tunegate.registry.teams import (
    UNSET,
    create_key,
    create_team,
    get_key,
    get_team,
    key_status,
    list_keys,
    list_teams,
    revoke_key,
    set_team_disabled,
    update_key,
)
from tunegate.registry.upstreams import delete_upstream, get_upstream, list_upstreams, set_upstream, upstream_users

T = TypeVar("T")
AnyRequest = Request[Any, Any, Any]
MAX_ID = 2**31 - 1  # ids and versions are INTEGER columns: a bigger one is refused, not sent to the database
KeyId = Parameter(ge=1, le=MAX_ID, description="the key's id")
TeamQuery = Parameter(query="team", required=False, description="the owning team of a team alias; omit: global")


async def read(request: AnyRequest, work: Callable[[Session], T]) -> T:
    return await read_session(gateway_of(request), work)


async def write(request: AnyRequest, work: Callable[[Session, str], T]) -> T:
    """Run ``work`` in one transaction as the request's admin, then forget this process's cached lookups."""
    actor: str = request.state.actor
    return await write_session(gateway_of(request), lambda session: work(session, actor))


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- teams -------------------------------------------------------------------------------------------------


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=TEAM_NAME.pattern)


class TeamChange(BaseModel):
    """Rename a team, or disable it (its keys stop working at once) or enable it again."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=128, pattern=TEAM_NAME.pattern)
    disabled: bool | None = None


class TeamOut(BaseModel):
    id: int
    name: str
    disabled: bool
    created_at: str
    active_keys: int | None = None


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


class TeamDetail(TeamOut):
    keys: list[KeyOut]
    aliases: list[str]  # the team's own aliases


def team_out(team: Team, active_keys: int | None = None) -> TeamOut:
    assert team.id is not None
    return TeamOut(
        id=team.id,
        name=team.name,
        disabled=team.disabled,
        created_at=team.created_at.isoformat(),
        active_keys=active_keys,
    )


def key_out(record: ApiKey, team: Team) -> KeyOut:
    assert record.id is not None
    return KeyOut(
        id=record.id,
        prefix=record.prefix,
        name=record.name,
        team=team.name,
        role=record.role,
        allowed_aliases=record.allowed_aliases,
        expires_at=_time(record.expires_at),
        revoked_at=_time(record.revoked_at),
        created_at=record.created_at.isoformat(),
        status=key_status(record, team),
    )


class TeamController(Controller):
    path = "/admin/teams"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin: teams"]  # noqa: RUF012

    @get("/")
    async def list_teams(self, request: AnyRequest) -> list[TeamOut]:
        def work(session: Session) -> list[TeamOut]:
            active: dict[int, int] = {}
            for record, team in list_keys(session=session):
                if key_status(record, team) == "active":
                    active[record.team_id] = active.get(record.team_id, 0) + 1
            return [team_out(t, active.get(t.id or 0, 0)) for t in list_teams(session=session)]

        return await read(request, work)

    @post("/", status_code=201)
    async def create_team(self, request: AnyRequest, data: TeamCreate) -> TeamOut:
        return await write(request, lambda s, actor: team_out(create_team(session=s, name=data.name, actor=actor)))

    @get("/{name:str}")
    async def show_team(self, request: AnyRequest, name: str) -> TeamDetail:
        def work(session: Session) -> TeamDetail:
            team = get_team(session=session, name=name, param="name")
            keys = [key_out(k, t) for k, t in list_keys(session=session, team=name)]
            aliases = [row.alias.name for row in list_aliases(session=session, team=name)]
            active = sum(k.status == "active" for k in keys)
            return TeamDetail(**team_out(team, active).model_dump(), keys=keys, aliases=aliases)

        return await read(request, work)

    @patch("/{name:str}")
    async def change_team(self, request: AnyRequest, name: str, data: TeamChange) -> TeamOut:
        def work(session: Session, actor: str) -> TeamOut:
            team = get_team(session=session, name=name, param="name")
            if data.name is not None:
                team = rename_team(session=session, name=name, new_name=data.name, actor=actor)
            if data.disabled is not None:
                team = set_team_disabled(session=session, name=team.name, disabled=data.disabled, actor=actor)
            return team_out(team)

        return await write(request, work)


# -- keys --------------------------------------------------------------------------------------------------


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team: str = Field(min_length=1)
    name: str | None = Field(default=None, max_length=128)
    role: str = Field(default="team", description="team (calls models), finance (reads usage), admin (/admin)")
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


# -- aliases -----------------------------------------------------------------------------------------------


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


# -- upstreams ---------------------------------------------------------------------------------------------


class UpstreamSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str = Field(min_length=1, max_length=512)
    api_key: str | None = Field(default=None, description="a reference, $ENV_NAME, read on each replica")


class UpstreamOut(BaseModel):
    name: str
    base_url: str
    api_key: str | None
    created_at: str
    updated_at: str
    used_by: list[str]  # live aliases whose current version sends traffic here


class UpstreamWriteOut(BaseModel):
    changed: bool
    upstream: UpstreamOut


def upstream_out(session: Session, upstream: Upstream) -> UpstreamOut:
    return UpstreamOut(
        name=upstream.name,
        base_url=upstream.base_url,
        api_key=upstream.api_key_ref,
        created_at=upstream.created_at.isoformat(),
        updated_at=upstream.updated_at.isoformat(),
        used_by=upstream_users(session=session, name=upstream.name),
    )


class UpstreamController(Controller):
    path = "/admin/upstreams"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin: upstreams"]  # noqa: RUF012

    @get("/")
    async def list_upstreams(self, request: AnyRequest) -> list[UpstreamOut]:
        return await read(request, lambda s: [upstream_out(s, u) for u in list_upstreams(session=s)])

    @get("/{name:str}")
    async def show_upstream(self, request: AnyRequest, name: str) -> UpstreamOut:
        return await read(request, lambda s: upstream_out(s, get_upstream(session=s, name=name)))

    @put("/{name:str}")
    async def set_upstream(self, request: AnyRequest, name: str, data: UpstreamSet) -> UpstreamWriteOut:
        def work(session: Session, actor: str) -> UpstreamWriteOut:
            changed = set_upstream(
                session=session, name=name, base_url=data.base_url, api_key_ref=data.api_key, actor=actor
            )
            return UpstreamWriteOut(
                changed=changed, upstream=upstream_out(session, get_upstream(session=session, name=name))
            )

        return await write(request, work)

    @delete("/{name:str}", status_code=200)
    async def delete_upstream(self, request: AnyRequest, name: str) -> dict[str, str]:
        """Delete an upstream; refused (409) while a live alias points at it."""

        def work(session: Session, actor: str) -> dict[str, str]:
            delete_upstream(session=session, name=name, actor=actor)
            return {"deleted": name}

        return await write(request, work)


# -- audit -------------------------------------------------------------------------------------------------


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


# -- apply -------------------------------------------------------------------------------------------------


class ApplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] = Field(description="the parsed gateway YAML; its teams, upstreams and aliases are applied")
    source: str = Field(default="<apply>", max_length=256, description="the file's name, for messages")
    dry_run: bool = False
    prune: bool = Field(default=False, description="also delete aliases and upstreams the file does not name")


class ChangeOut(BaseModel):
    kind: str  # team | upstream | alias
    name: str
    action: str  # create | update | delete
    team: str | None
    fields: dict[str, dict[str, Any]]  # field → {"before", "after"}
    version: int | None


class ApplyOut(BaseModel):
    dry_run: bool
    changes: list[ChangeOut]


class ApplyController(Controller):
    path = "/admin/apply"
    guards = [admin_guard]  # noqa: RUF012
    tags = ["admin: apply"]  # noqa: RUF012

    @post("/", status_code=200)
    async def apply(self, request: AnyRequest, data: ApplyIn) -> ApplyOut:
        """Bring teams, upstreams and aliases to what the configuration says; the answer is the diff."""
        try:
            settings = parse_settings(data.config, data.source)
        except ConfigError as exc:
            raise InvalidRequest(str(exc), param="config", code="invalid_config") from None
        gateway = gateway_of(request)
        actor: str = request.state.actor

        def run() -> ApplyOut:
            try:
                changes = apply_settings(gateway.engine, settings, actor=actor, dry_run=data.dry_run, prune=data.prune)
            except IntegrityError:
                raise Conflict("another change was made at the same moment; apply again") from None
            return ApplyOut(dry_run=data.dry_run, changes=[ChangeOut(**c.as_dict()) for c in changes])

        try:
            return await anyio.to_thread.run_sync(run)
        finally:
            if not data.dry_run:
                gateway.invalidate()


ADMIN_CONTROLLERS = [
    TeamController,
    KeyController,
    AliasController,
    UpstreamController,
    AuditController,
    ApplyController,
]

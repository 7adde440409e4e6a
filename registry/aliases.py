"""Aliases: a friendly name a team calls, mapped to a target model (and a fallback) by immutable versions."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import and_
from sqlmodel import Session, col, select

from registry.errors import NotFound
from registry.models import Alias, AliasVersion, AuditEntry, utcnow

Policy = Literal["prepend", "if_absent", "replace"]


class Target(BaseModel):
    """Where a request goes: an upstream, the model id there, and a system prompt that stands in for tuning."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    upstream: str
    model: str
    system_prompt: str | None = None


class WeightedTarget(Target):
    """A canary: a target that takes ``weight`` percent of an alias's traffic."""

    weight: int = Field(ge=1, le=99)


class AliasSpec(BaseModel):
    """The content of one alias version."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    target: Target
    fallback: Target | None = None
    policy: Policy = "prepend"
    teams: tuple[str, ...] = Field(default=())  # a global alias limited to these teams; empty: every team
    canary: tuple[WeightedTarget, ...] = ()  # `target` serves what the canaries leave: 100 - their weights

    @model_validator(mode="after")
    def _weights_leave_room_for_the_target(self) -> AliasSpec:
        if self.canary and sum(c.weight for c in self.canary) >= 100:
            raise ValueError("canary weights must add up to less than 100: the target serves the rest")
        return self

    @property
    def target_weight(self) -> int:
        return 100 - sum(c.weight for c in self.canary)

    def choose(self, sticky: str) -> tuple[Target, str, int]:
        """The target for one request, the same for the same ``sticky`` value (a ``user`` or request id).

        Returns the target, how it serves ("model" or "canary") and its weight in percent.
        """
        if not self.canary:
            return self.target, "model", 100
        bucket = int.from_bytes(hashlib.blake2b(sticky.encode(), digest_size=8).digest(), "big") % 100
        edge = 0
        for canary in self.canary:
            edge += canary.weight
            if bucket < edge:
                return canary, "canary", canary.weight
        return self.target, "model", self.target_weight


class ResolvedAlias(BaseModel):
    """What the request path needs to serve an alias: read once, cached."""

    model_config = ConfigDict(frozen=True)
    name: str
    alias_id: int
    version: int
    spec: AliasSpec


def scope_of(team_id: int | None) -> str:
    return "global" if team_id is None else f"team:{team_id}"


def set_alias(
    *, session: Session, name: str, team_id: int | None, spec: AliasSpec, actor: str, reason: str
) -> AliasVersion | None:
    """Make ``spec`` the alias's current version; None when it is that already (nothing is written)."""
    alias = session.exec(select(Alias).where(Alias.name == name, Alias.scope == scope_of(team_id))).first()
    if alias is None:
        alias = Alias(name=name, team_id=team_id, scope=scope_of(team_id))
        session.add(alias)
        session.flush()
    else:
        current = current_version(session=session, alias=alias)
        if current is not None and AliasSpec.model_validate(current.spec) == spec:
            return None
    assert alias.id is not None
    alias.current_version += 1
    alias.updated_at = utcnow()
    version = AliasVersion(
        alias_id=alias.id,
        version=alias.current_version,
        spec=spec.model_dump(mode="json"),
        created_by=actor,
        reason=reason,
    )
    session.add(version)
    session.add(
        AuditEntry(
            actor=actor,
            action="alias.set",
            target=name,
            detail={"version": version.version, "scope": alias.scope, "reason": reason},
        )
    )
    session.flush()
    return version


def current_version(*, session: Session, alias: Alias) -> AliasVersion | None:
    return session.exec(
        select(AliasVersion).where(AliasVersion.alias_id == alias.id, AliasVersion.version == alias.current_version)
    ).first()


def _visible(alias: Alias, spec: AliasSpec, team_id: int, team: str) -> bool:
    if alias.disabled:
        return False
    if alias.team_id is not None:
        return alias.team_id == team_id
    return not spec.teams or team in spec.teams


def resolve(*, session: Session, name: str, team_id: int, team: str) -> ResolvedAlias | None:
    """The version of ``name`` that serves ``team``: its own alias first, else a global one it may use."""
    rows = session.exec(
        select(Alias, AliasVersion)
        .join(
            AliasVersion,
            and_(col(AliasVersion.alias_id) == col(Alias.id), col(AliasVersion.version) == col(Alias.current_version)),
        )
        .where(Alias.name == name, col(Alias.scope).in_([scope_of(team_id), scope_of(None)]))
    ).all()
    for alias, version in sorted(rows, key=lambda row: row[0].team_id is None):
        spec = AliasSpec.model_validate(version.spec)
        if alias.team_id is not None and alias.disabled:
            return None  # a disabled team alias hides the global one too: the team chose to switch it off
        if _visible(alias, spec, team_id, team):
            assert alias.id is not None
            return ResolvedAlias(name=name, alias_id=alias.id, version=version.version, spec=spec)
    return None


def visible_aliases(*, session: Session, team_id: int, team: str) -> list[tuple[Alias, AliasSpec]]:
    """Every alias ``team`` may call, a team alias hiding the global one of the same name."""
    rows = session.exec(
        select(Alias, AliasVersion)
        .join(
            AliasVersion,
            and_(col(AliasVersion.alias_id) == col(Alias.id), col(AliasVersion.version) == col(Alias.current_version)),
        )
        .where(col(Alias.scope).in_([scope_of(team_id), scope_of(None)]))
    ).all()
    chosen: dict[str, tuple[Alias, AliasSpec]] = {}
    for alias, version in sorted(rows, key=lambda row: row[0].team_id is None):
        if alias.name in chosen:
            continue
        spec = AliasSpec.model_validate(version.spec)
        if alias.team_id is not None and alias.disabled:
            chosen[alias.name] = (alias, spec)  # placeholder that hides the global one
            continue
        if _visible(alias, spec, team_id, team):
            chosen[alias.name] = (alias, spec)
    return sorted(((a, s) for a, s in chosen.values() if not a.disabled), key=lambda pair: pair[0].name)


def get_alias(*, session: Session, name: str, team_id: int | None) -> Alias:
    alias = session.exec(select(Alias).where(Alias.name == name, Alias.scope == scope_of(team_id))).first()
    if alias is None:
        raise NotFound(f"no alias named '{name}'", param="alias")
    return alias

"""Aliases: a friendly name a team calls, mapped to a target model (and a fallback) by immutable versions.

An alias is global or owned by one team (which then sees it instead of a global one of the same name).
Its name may be a pattern (``gpt-4o*``, ``*``) that forwards the model name a client asks for unchanged to
its upstream; exact aliases win over patterns, and the longest matching pattern wins. Every change makes a
new version; a rollback is a new version copying an old one; a deleted alias keeps its versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import and_
from sqlmodel import Session, col, select

from tunegate.config.names import WILDCARD, alias_name_problem
from tunegate.config.splits import ModelRepeated, SplitShare, WeightsOff, split_problem, target_and_canaries
from tunegate.registry.audit import record as audit
from tunegate.registry.errors import Conflict, Invalid, NotFound
from tunegate.registry.models import Alias, AliasVersion, Team, Upstream, utcnow
from tunegate.registry.prompt_counts import store_counts, stored_counts
from tunegate.registry.teams import check_team_name, get_team
from tunegate.registry.tokens import encoding_name, remembered_system_prompts, system_prompt_tokens

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

    @field_validator("teams")
    @classmethod
    def _teams_in_order(cls, teams: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(teams)))  # the same list in another order is the same version

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

    def upstreams(self) -> list[tuple[str, str]]:
        """Each upstream the version uses, with the field that names it (for messages)."""
        named = [("upstream", self.target.upstream)]
        named += [(f"split[{i}].upstream", c.upstream) for i, c in enumerate(self.canary, start=2)]
        if self.fallback is not None:
            named.append(("fallback.upstream", self.fallback.upstream))
        return named


class ResolvedAlias(BaseModel):
    """What the request path needs to serve an alias: read once, cached."""

    model_config = ConfigDict(frozen=True)
    name: str
    alias_id: int
    version: int
    spec: AliasSpec
    pattern: str | None = None  # the pattern alias that matched ``name``, which then is the model forwarded
    # (prompt, encoding, tokens) of each target's system prompt in its model's encoding: read when resolved
    prompt_tokens: tuple[tuple[str, str, int], ...] = ()

    def system_prompt_tokens(self, target: Target) -> int:
        """What ``target``'s system prompt costs in a chat request (0 without one)."""
        prompt = target.system_prompt
        if not prompt:
            return 0
        encoding = encoding_name(target.model)
        for known, known_encoding, tokens in self.prompt_tokens:
            if known_encoding == encoding and known == prompt:
                return tokens
        return system_prompt_tokens(prompt, target.model)  # not resolved with its counts: counted once a process


# -- what an admin sends: a partial change, turned into a complete spec by build_spec -------------------------


class FallbackChange(BaseModel):
    """The fallback's fields to set; those left out keep their values (a new fallback needs ``model``)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(default=None, min_length=1, max_length=256)
    upstream: str | None = Field(default=None, description="default: the alias's upstream")
    system_prompt: str | None = None


class SplitEntry(BaseModel):
    model: str = Field(min_length=1, max_length=256)
    weight: int = Field(ge=1, le=100, description="percent of the alias's traffic")
    upstream: str | None = Field(default=None, description="default: the alias's upstream")
    system_prompt: str | None = None

    model_config = ConfigDict(extra="forbid")


class AliasChange(BaseModel):
    """Create an alias, or make a new version from its current one: fields left out keep their values, a
    field sent as null is cleared (``system_prompt``, ``fallback``, ``split``)."""

    model_config = ConfigDict(extra="forbid")
    upstream: str | None = Field(default=None, description="required to create; the target's upstream")
    model: str | None = Field(
        default=None, min_length=1, max_length=256, description="the target model id; omit for a pattern alias"
    )
    system_prompt: str | None = Field(default=None, description="injected whenever the target serves")
    policy: Policy | None = None
    fallback: FallbackChange | None = None
    teams: list[str] | None = Field(default=None, description="a global alias limited to these teams")
    split: list[SplitEntry] | None = Field(
        default=None,
        description="weights adding up to 100: the first entry becomes the target, the others canaries; "
        "null removes the canaries",
    )
    reason: str = Field(default="", max_length=512)
    allow_catch_all: bool = Field(
        default=False, description="needed to create '*', or a pattern matching existing aliases"
    )


def is_pattern(name: str) -> bool:
    return WILDCARD in name


def check_alias_name(name: str) -> str:
    problem = alias_name_problem(name)
    if problem is not None:
        raise Invalid(problem, param="name")
    return name


class SplitSource(SplitShare, Protocol):
    """A split entry as the file and the admin API write it: a share, and the system prompt of its target."""

    @property
    def system_prompt(self) -> str | None: ...


def split_targets(entries: Sequence[SplitSource], default_upstream: str) -> tuple[Target, tuple[WeightedTarget, ...]]:
    """``split`` (weights adding up to 100) → the target (the first entry) and its canaries (the others)."""
    problem = split_problem(entries, default_upstream)
    if isinstance(problem, WeightsOff):
        raise Invalid(
            f"'split' weights add up to {problem.total}; they must add up to 100 "
            "(the first entry is the target, the others are canaries)",
            param="split",
        )
    if isinstance(problem, ModelRepeated):
        where = f"split[{problem.index + 1}]"  # counted from 1, as the split's upstreams are named
        raise Invalid(f"'{where}' repeats model '{problem.model}'; give each model once", param=where)
    first, rest = target_and_canaries(entries)
    target = Target(
        upstream=first.upstream or default_upstream, model=first.model, system_prompt=first.system_prompt or None
    )
    canary = tuple(
        WeightedTarget(
            upstream=e.upstream or default_upstream,
            model=e.model,
            system_prompt=e.system_prompt or None,
            weight=e.weight,
        )
        for e in rest
    )
    return target, canary


def build_spec(name: str, current: AliasSpec | None, change: AliasChange) -> AliasSpec:
    """The spec ``change`` makes of ``current`` (None: the alias is new). Pure: no database."""
    given = change.model_fields_set
    pattern = is_pattern(name)
    if change.split is not None and given & {"model", "system_prompt"}:
        raise Invalid("give either 'model' (and 'system_prompt') or 'split', not both", param="split")
    if pattern and "model" in given:
        raise Invalid(
            f"'{name}' is a pattern: it forwards the model name a client asks for unchanged; leave 'model' out",
            param="model",
        )
    if pattern and change.split:
        raise Invalid(f"'{name}' is a pattern and cannot split traffic; leave 'split' out", param="split")
    for field in ("upstream", "model", "policy"):
        if field in given and getattr(change, field) is None:
            raise Invalid(f"'{field}' cannot be null", param=field)

    if current is None:
        if not change.upstream:
            raise Invalid(f"alias '{name}' does not exist yet: 'upstream' is required to create it", param="upstream")
        if not pattern and not change.model and not change.split:
            raise Invalid(f"alias '{name}' does not exist yet: 'model' (or 'split') is required", param="model")
        target = Target(
            upstream=change.upstream, model=name if pattern else change.model or "", system_prompt=change.system_prompt
        )
        spec = AliasSpec(target=target)
    else:
        spec = current
        target = spec.target
        if change.upstream:
            target = target.model_copy(update={"upstream": change.upstream})
        if change.model:
            target = target.model_copy(update={"model": change.model})
    if "system_prompt" in given:
        target = target.model_copy(update={"system_prompt": change.system_prompt or None})
    canary = spec.canary
    if "split" in given:
        if change.split is None:
            canary = ()
        else:
            target, canary = split_targets(change.split, target.upstream)
    fallback = spec.fallback
    if "fallback" in given:
        fallback = _fallback(spec.fallback, change.fallback, target.upstream)
    policy = change.policy if change.policy is not None else spec.policy
    teams = tuple(change.teams) if change.teams is not None else spec.teams
    try:
        return AliasSpec(target=target, fallback=fallback, policy=policy, teams=teams, canary=canary)
    except ValidationError as exc:
        raise Invalid(f"alias '{name}': {exc.errors()[0]['msg']}", param="split") from None


def _fallback(current: Target | None, change: FallbackChange | None, default_upstream: str) -> Target | None:
    if change is None:
        return None
    given = change.model_fields_set
    for field in ("model", "upstream"):
        if field in given and not getattr(change, field):
            raise Invalid(
                f"'fallback.{field}' cannot be empty; send \"fallback\": null to remove the fallback",
                param=f"fallback.{field}",
            )
    if current is None:
        if not change.model:
            raise Invalid("'fallback.model' is required for a new fallback", param="fallback.model")
        return Target(
            upstream=change.upstream or default_upstream,
            model=change.model,
            system_prompt=change.system_prompt or None,
        )
    update: dict[str, Any] = {field: getattr(change, field) for field in given}
    if "system_prompt" in update:
        update["system_prompt"] = update["system_prompt"] or None
    return current.model_copy(update=update)


# -- storage ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AliasWrite:
    """What a write did: the alias, its current version, and whether anything changed."""

    alias: Alias
    version: AliasVersion
    changed: bool
    created: bool = False


def scope_of(team_id: int | None) -> str:
    return "global" if team_id is None else f"team:{team_id}"


def prompted_targets(spec: AliasSpec) -> list[Target]:
    """The targets of a version that inject a system prompt: of its target, canaries and fallback."""
    targets = (spec.target, *spec.canary, *([spec.fallback] if spec.fallback else []))
    return [target for target in targets if target.system_prompt]


def prompts_of(spec: AliasSpec) -> set[str]:
    return {target.system_prompt for target in prompted_targets(spec) if target.system_prompt}


def set_alias(
    *,
    session: Session,
    name: str,
    team_id: int | None,
    spec: AliasSpec,
    actor: str,
    reason: str,
    based_on: int | None = None,
    action: str = "alias.set",
) -> AliasVersion | None:
    """Make ``spec`` the alias's current version, with its system prompts' token counts; None when it is that
    already (nothing is written)."""
    alias = session.exec(select(Alias).where(Alias.name == name, Alias.scope == scope_of(team_id))).first()
    if alias is not None:
        current = current_version(session=session, alias=alias)
        if current is not None and AliasSpec.model_validate(current.spec) == spec:
            return None
    store_counts(session=session, prompts=prompts_of(spec))  # counted before this write's rows, not while they wait
    if alias is None:
        alias = Alias(name=name, team_id=team_id, scope=scope_of(team_id))
        session.add(alias)
        session.flush()
    assert alias.id is not None
    previous = alias.current_version or None
    alias.current_version += 1
    alias.updated_at = utcnow()
    version = AliasVersion(
        alias_id=alias.id,
        version=alias.current_version,
        spec=spec.model_dump(mode="json"),
        created_by=actor,
        reason=reason,
        based_on=based_on if based_on is not None else previous,
    )
    session.add(version)
    audit(
        session=session,
        actor=actor,
        action=action,
        target=name,
        version=version.version,
        scope=alias.scope,
        reason=reason,
    )
    session.flush()
    return version


def current_version(*, session: Session, alias: Alias) -> AliasVersion | None:
    return session.exec(
        select(AliasVersion).where(AliasVersion.alias_id == alias.id, AliasVersion.version == alias.current_version)
    ).first()


def team_id_of(*, session: Session, team: str | None) -> int | None:
    """The id of the team owning an alias (None: a global alias)."""
    return None if team is None else get_team(session=session, name=team).id


def find_alias(*, session: Session, name: str, team_id: int | None, deleted: bool = False) -> Alias | None:
    alias = session.exec(select(Alias).where(Alias.name == name, Alias.scope == scope_of(team_id))).first()
    if alias is None or (alias.deleted_at is not None and not deleted):
        return None
    return alias


def get_alias(*, session: Session, name: str, team_id: int | None, deleted: bool = False) -> Alias:
    alias = find_alias(session=session, name=name, team_id=team_id, deleted=deleted)
    if alias is None:
        where = "global alias" if team_id is None else "alias of that team"
        raise NotFound(f"no {where} named '{name}'", param="alias")
    return alias


def check_references(*, session: Session, spec: AliasSpec, team_id: int | None, what: str = "") -> None:
    """Every upstream and team a spec names exists; a team alias does not list teams."""
    known = set(session.exec(select(Upstream.name)).all())
    for field, upstream in spec.upstreams():
        if upstream not in known:
            raise Invalid(
                f"{what}unknown upstream '{upstream}' in '{field}'; create it first (tunegate upstream set {upstream} "
                "--base-url URL) or name one of: " + (", ".join(sorted(known)) or "(none yet)"),
                param=field,
            )
    if spec.teams and team_id is not None:
        raise Invalid("a team's own alias is visible to that team only: 'teams' is for global aliases", param="teams")
    if spec.teams:
        teams = set(session.exec(select(Team.name).where(col(Team.name).in_(spec.teams))).all())
        for team in spec.teams:
            if team not in teams:
                raise Invalid(f"{what}unknown team '{team}' in 'teams'", param="teams")


def check_pattern(*, session: Session, name: str, team_id: int | None, upstream: str, allow_catch_all: bool) -> None:
    """A pattern that takes every model name, or names existing aliases already use, must be asked for."""
    if not is_pattern(name) or allow_catch_all:
        return
    if not name.strip(WILDCARD):
        raise Invalid(
            f"'{name}' matches every model name: any model a team asks for that is not an alias would go to "
            f"upstream '{upstream}'. If that is what you want, pass allow_catch_all (--allow-catch-all)",
            param="allow_catch_all",
        )
    query = select(Alias.name).where(col(Alias.deleted_at).is_(None), col(Alias.name).not_like(f"%{WILDCARD}%"))
    if team_id is not None:
        query = query.where(col(Alias.scope).in_([scope_of(None), scope_of(team_id)]))
    matched = sorted({n for n in session.exec(query).all() if fnmatchcase(n, name)})
    if matched:
        shown = ", ".join(matched[:5]) + (f" and {len(matched) - 5} more" if len(matched) > 5 else "")
        raise Invalid(
            f"pattern '{name}' matches existing aliases ({shown}). Exact aliases still win, but one that is "
            "deleted or disabled would then be served by this pattern: pass allow_catch_all (--allow-catch-all) "
            "if that is intended",
            param="allow_catch_all",
        )


def put_alias(
    *,
    session: Session,
    name: str,
    team_id: int | None,
    spec: AliasSpec,
    actor: str,
    reason: str,
    allow_catch_all: bool = False,
) -> AliasWrite:
    """Make ``spec`` current, checking what it names; creates the alias, or restores a deleted one."""
    check_alias_name(name)
    alias = find_alias(session=session, name=name, team_id=team_id, deleted=True)
    creating = alias is None or alias.deleted_at is not None
    if creating:
        check_pattern(
            session=session, name=name, team_id=team_id, upstream=spec.target.upstream, allow_catch_all=allow_catch_all
        )
    check_references(session=session, spec=spec, team_id=team_id)
    restored = False
    if alias is not None and alias.deleted_at is not None:
        alias.deleted_at, alias.disabled, alias.updated_at = None, False, utcnow()
        session.add(alias)
        audit(session=session, actor=actor, action="alias.restore", target=name, scope=alias.scope)
        restored = True
    created = set_alias(session=session, name=name, team_id=team_id, spec=spec, actor=actor, reason=reason)
    alias = get_alias(session=session, name=name, team_id=team_id)
    version = current_version(session=session, alias=alias)
    assert version is not None
    return AliasWrite(alias, version, created is not None or restored, created=creating)


def write_alias(*, session: Session, name: str, team: str | None, change: AliasChange, actor: str) -> AliasWrite:
    """Create ``name`` from ``change``, or make a new version from its current one (nothing if unchanged)."""
    check_alias_name(name)
    team_id = team_id_of(session=session, team=team)
    alias = find_alias(session=session, name=name, team_id=team_id)
    current = None
    if alias is not None:
        version = current_version(session=session, alias=alias)
        current = AliasSpec.model_validate(version.spec) if version is not None else None
    spec = build_spec(name, current, change)
    return put_alias(
        session=session,
        name=name,
        team_id=team_id,
        spec=spec,
        actor=actor,
        reason=change.reason,
        allow_catch_all=change.allow_catch_all,
    )


def versions_of(*, session: Session, alias: Alias) -> list[AliasVersion]:
    """Every version, newest first."""
    return list(
        session.exec(
            select(AliasVersion).where(AliasVersion.alias_id == alias.id).order_by(col(AliasVersion.version).desc())
        ).all()
    )


def lineage(versions: list[AliasVersion], current: int) -> list[AliasVersion]:
    """The current version and the versions it was made from, back to the first: v5 ← v2 ← v1 after a rollback."""
    by_number = {v.version: v for v in versions}
    chain: list[AliasVersion] = []
    number: int | None = current
    while number is not None and number in by_number and len(chain) < len(by_number):
        version = by_number[number]
        chain.append(version)
        number = version.based_on if version.based_on is not None else (version.version - 1 or None)
    return chain


def rollback_alias(
    *, session: Session, name: str, team: str | None, version: int, actor: str, reason: str = ""
) -> AliasWrite:
    """A new version copying version ``version``'s spec, with reason "rollback to vN"."""
    team_id = team_id_of(session=session, team=team)
    alias = get_alias(session=session, name=name, team_id=team_id)
    old = session.exec(
        select(AliasVersion).where(AliasVersion.alias_id == alias.id, AliasVersion.version == version)
    ).first()
    if old is None:
        raise NotFound(
            f"alias '{name}' has no version {version}; its versions are 1 to {alias.current_version}",
            param="version",
        )
    spec = AliasSpec.model_validate(old.spec)
    check_references(session=session, spec=spec, team_id=team_id, what=f"version {version} cannot be restored: ")
    text = f"rollback to v{version}" + (f": {reason}" if reason else "")
    created = set_alias(
        session=session,
        name=name,
        team_id=team_id,
        spec=spec,
        actor=actor,
        reason=text,
        based_on=version,
        action="alias.rollback",
    )
    current = current_version(session=session, alias=alias)
    assert current is not None
    return AliasWrite(alias, current, created is not None)


def set_alias_disabled(*, session: Session, name: str, team: str | None, disabled: bool, actor: str) -> Alias:
    """A disabled alias answers 404 (a disabled team alias hides the global one too); its versions stay."""
    alias = get_alias(session=session, name=name, team_id=team_id_of(session=session, team=team))
    if alias.disabled != disabled:
        alias.disabled, alias.updated_at = disabled, utcnow()
        session.add(alias)
        action = "alias.disable" if disabled else "alias.enable"
        audit(session=session, actor=actor, action=action, target=name, scope=alias.scope)
        session.flush()
    return alias


def delete_alias(*, session: Session, name: str, team: str | None, actor: str) -> Alias:
    """Soft delete: the alias stops serving and leaves listings; its versions stay, and setting it again
    restores it with the next version number (so usage records keep pointing at the right version)."""
    alias = get_alias(session=session, name=name, team_id=team_id_of(session=session, team=team))
    alias.disabled, alias.deleted_at, alias.updated_at = True, utcnow(), utcnow()
    session.add(alias)
    audit(session=session, actor=actor, action="alias.delete", target=name, scope=alias.scope)
    session.flush()
    return alias


@dataclass(frozen=True)
class AliasRow:
    alias: Alias
    version: AliasVersion
    team: str | None  # the owning team's name

    @property
    def spec(self) -> AliasSpec:
        return AliasSpec.model_validate(self.version.spec)


def list_aliases(*, session: Session, team: str | None = None, deleted: bool = False) -> list[AliasRow]:
    """Every alias (``team``: that team's own only), with its current version."""
    query = (
        select(Alias, AliasVersion, Team)
        .join(
            AliasVersion,
            and_(col(AliasVersion.alias_id) == col(Alias.id), col(AliasVersion.version) == col(Alias.current_version)),
        )
        .join(Team, col(Team.id) == col(Alias.team_id), isouter=True)
    )
    if team is not None:
        query = query.where(Alias.scope == scope_of(team_id_of(session=session, team=team)))
    if not deleted:
        query = query.where(col(Alias.deleted_at).is_(None))
    rows = session.exec(query).all()
    return sorted(
        (AliasRow(a, v, t.name if t is not None else None) for a, v, t in rows),
        key=lambda row: (row.alias.name, row.team or ""),
    )


def rename_team(*, session: Session, name: str, new_name: str, actor: str) -> Team:
    """Rename a team; global aliases that list it in ``teams`` get a new version naming it anew."""
    team = get_team(session=session, name=name)
    check_team_name(new_name)
    if new_name == name:
        return team
    if session.exec(select(Team).where(Team.name == new_name)).first() is not None:
        raise Conflict(f"a team named '{new_name}' exists already; choose another name", param="name")
    team.name = new_name
    session.add(team)
    audit(session=session, actor=actor, action="team.rename", target=new_name, old_name=name)
    session.flush()
    rename_team_references(session=session, old=name, new=new_name, actor=actor)
    return team


def rename_team_references(*, session: Session, old: str, new: str, actor: str) -> None:
    """Global aliases limited to team ``old`` get a new version naming ``new`` instead."""
    for row in list_aliases(session=session):
        spec = row.spec
        if row.alias.team_id is None and old in spec.teams:
            teams = tuple(new if t == old else t for t in spec.teams)
            set_alias(
                session=session,
                name=row.alias.name,
                team_id=None,
                spec=spec.model_copy(update={"teams": tuple(sorted(teams))}),
                actor=actor,
                reason=f"team '{old}' renamed to '{new}'",
            )


# -- the request path --------------------------------------------------------------------------------------


def _visible(alias: Alias, spec: AliasSpec, team_id: int, team: str) -> bool:
    if alias.disabled:
        return False
    if alias.team_id is not None:
        return alias.team_id == team_id
    return not spec.teams or team in spec.teams


def _current_rows(session: Session, team_id: int, *conditions: Any) -> list[tuple[Alias, AliasVersion]]:
    """Live aliases in the team's scope and the global one, with their current versions, the team's first."""
    rows = session.exec(
        select(Alias, AliasVersion)
        .join(
            AliasVersion,
            and_(col(AliasVersion.alias_id) == col(Alias.id), col(AliasVersion.version) == col(Alias.current_version)),
        )
        .where(col(Alias.scope).in_([scope_of(team_id), scope_of(None)]), col(Alias.deleted_at).is_(None), *conditions)
    ).all()
    return sorted(((a, v) for a, v in rows), key=lambda row: (row[0].team_id is None, row[0].name))


def resolve(*, session: Session, name: str, team_id: int, team: str) -> ResolvedAlias | None:
    """The version of ``name`` that serves ``team``: its own alias first, else a global one it may use, else
    the longest pattern matching ``name`` (a team's pattern shadowing a global one of the same name)."""
    for alias, version in _current_rows(session, team_id, Alias.name == name):
        spec = AliasSpec.model_validate(version.spec)
        if alias.team_id is not None and alias.disabled:
            return None  # a disabled team alias hides the global one too: the team chose to switch it off
        if _visible(alias, spec, team_id, team):
            assert alias.id is not None
            return ResolvedAlias(
                name=name,
                alias_id=alias.id,
                version=version.version,
                spec=spec,
                prompt_tokens=_prompt_tokens(session, spec),
            )
    matches: list[tuple[Alias, AliasVersion, AliasSpec]] = []
    shadowed: set[str] = set()
    for alias, version in _current_rows(session, team_id, col(Alias.name).contains(WILDCARD)):
        if alias.name in shadowed or not fnmatchcase(name, alias.name):
            continue
        shadowed.add(alias.name)
        spec = AliasSpec.model_validate(version.spec)
        if _visible(alias, spec, team_id, team):
            matches.append((alias, version, spec))
    if not matches:
        return None
    alias, version, spec = max(matches, key=lambda m: (len(m[0].name), m[0].team_id is not None))
    assert alias.id is not None
    forwarded = spec.model_copy(update={"target": spec.target.model_copy(update={"model": name})})
    return ResolvedAlias(
        name=name,
        alias_id=alias.id,
        version=version.version,
        spec=forwarded,
        pattern=alias.name,
        prompt_tokens=_prompt_tokens(session, forwarded),
    )


def _prompt_tokens(session: Session, spec: AliasSpec) -> tuple[tuple[str, str, int], ...]:
    """Each target's prompt in its model's encoding, with its stored count; a count the table lacks (a version
    written before counts were stored) is counted by the installed counter, once a process."""
    wanted = sorted({(t.system_prompt, encoding_name(t.model)) for t in prompted_targets(spec) if t.system_prompt})
    if not wanted:
        return ()
    stored = stored_counts(session=session, prompts={prompt for prompt, _ in wanted})
    missing = [pair for pair in wanted if pair not in stored]
    stored.update(zip(missing, remembered_system_prompts(missing), strict=True))
    return tuple((prompt, encoding, stored[(prompt, encoding)]) for prompt, encoding in wanted)


def visible_aliases(*, session: Session, team_id: int, team: str) -> list[tuple[Alias, AliasSpec]]:
    """Every alias ``team`` may call by name, a team alias hiding the global one of the same name.

    Patterns are left out: their names are not model ids a client could call.
    """
    chosen: dict[str, tuple[Alias, AliasSpec]] = {}
    for alias, version in _current_rows(session, team_id, col(Alias.name).not_like(f"%{WILDCARD}%")):
        if alias.name in chosen:
            continue
        spec = AliasSpec.model_validate(version.spec)
        if alias.team_id is not None and alias.disabled:
            chosen[alias.name] = (alias, spec)  # placeholder that hides the global one
            continue
        if _visible(alias, spec, team_id, team):
            chosen[alias.name] = (alias, spec)
    return sorted(((a, s) for a, s in chosen.values() if not a.disabled), key=lambda pair: pair[0].name)

"""Bring the database to what a configuration says: its teams, upstreams and aliases.

One implementation for both uses: start-up applies the configured file (keeping alias versions made since
an unchanged entry was last applied), ``tunegate apply -f FILE`` (through POST /admin/apply) applies
another. Applying an unchanged file changes nothing; a changed alias gets a new
version with reason "apply"; a dry run makes the same changes in a transaction it then rolls back.
Nothing is removed unless ``prune`` is asked for (aliases and upstreams the file does not name; teams are
never removed, they hold keys and usage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from tunegate.config import AliasSettings, Settings
from tunegate.registry.aliases import (
    AliasSpec,
    Target,
    WeightedTarget,
    current_version,
    delete_alias,
    find_alias,
    is_pattern,
    list_aliases,
    prompts_of,
    put_alias,
    split_targets,
)
from tunegate.registry.audit import record as audit
from tunegate.registry.db import migrate, session_scope
from tunegate.registry.journal import journal_directory, replay
from tunegate.registry.models import Alias, AliasVersion, Team, Upstream
from tunegate.registry.prompt_counts import store_counts
from tunegate.registry.teams import create_team
from tunegate.registry.upstreams import delete_upstream, list_upstreams, set_upstream

_PG_APPLY_LOCK = 7_262_024  # pg_advisory_xact_lock key: replicas starting together apply one after another


def prepare_database(engine: Engine, settings: Settings) -> None:
    """Migrate the schema, apply the file's teams, upstreams and aliases, and count the system prompts of versions
    written before their counts were stored, and replay the usage journal: once per start, before serving."""
    migrate(engine)
    apply_settings(engine, settings, keep_later_changes=True)
    with session_scope(engine) as session:
        count_current_prompts(session=session)
    replay(engine, journal_directory(settings))  # usage records earlier processes answered and did not store


def count_current_prompts(*, session: Session) -> int:
    """Store the token counts the aliases' current versions' system prompts lack, in one count; returns how many."""
    return store_counts(
        session=session, prompts={p for row in list_aliases(session=session) for p in prompts_of(row.spec)}
    )


@dataclass(frozen=True)
class Change:
    """One difference between the database and the configuration, as applied (or, in a dry run, as it would be)."""

    kind: Literal["team", "upstream", "alias"]
    name: str
    action: Literal["create", "update", "delete"]
    team: str | None = None  # an alias's owning team
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field → (before, after)
    version: int | None = None  # an alias's new version

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "team": self.team,
            "fields": {name: {"before": old, "after": new} for name, (old, new) in self.fields.items()},
            "version": self.version,
        }


def spec_from_settings(alias: AliasSettings, name: str = "") -> AliasSpec:
    fallback = None
    if alias.fallback is not None:
        fallback = Target(
            upstream=alias.fallback.upstream or alias.upstream,
            model=alias.fallback.model,
            system_prompt=alias.fallback.system_prompt,
        )
    target = Target(upstream=alias.upstream, model=alias.model or name, system_prompt=alias.system_prompt)
    canary: tuple[WeightedTarget, ...] = ()
    if alias.split:
        target, canary = split_targets(alias.split, alias.upstream)
    return AliasSpec(target=target, fallback=fallback, policy=alias.policy, teams=tuple(alias.teams), canary=canary)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"target": {"model": "m"}} → {"target.model": "m"}; lists stay whole."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    old, new = flatten(before or {}), flatten(after)
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) and not (old.get(key) in (None, [], ()) and new.get(key) in (None, [], ()))
    }


def last_applied_spec(*, session: Session, alias: Alias) -> AliasSpec | None:
    """The spec the most recent apply wrote for ``alias``, whatever has changed it since."""
    version = session.exec(
        select(AliasVersion)
        .where(AliasVersion.alias_id == alias.id, AliasVersion.reason == "apply")
        .order_by(col(AliasVersion.version).desc())
    ).first()
    return AliasSpec.model_validate(version.spec) if version is not None else None


def apply_config(
    *, session: Session, settings: Settings, actor: str, prune: bool = False, keep_later_changes: bool = False
) -> list[Change]:
    """Make the database say what ``settings`` says, inside the caller's transaction.

    ``keep_later_changes`` (start-up): an alias whose entry in the file is what the last apply wrote keeps the
    versions made since (a promotion, a rollback, ``alias set``); only a changed entry in the file wins.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_APPLY_LOCK})
    changes: list[Change] = []
    teams = {team.name: team for team in session.exec(select(Team)).all()}
    for wanted in settings.teams:
        if wanted.name not in teams:
            teams[wanted.name] = create_team(session=session, name=wanted.name, actor=actor)
            changes.append(Change("team", wanted.name, "create"))

    for name, upstream in settings.upstreams.items():
        before = session.exec(select(Upstream).where(Upstream.name == name)).first()
        old = {"base_url": before.base_url, "api_key": before.api_key_ref} if before is not None else None
        if set_upstream(
            session=session, name=name, base_url=upstream.base_url, api_key_ref=upstream.api_key, actor=actor
        ):
            new = {"base_url": upstream.base_url.rstrip("/"), "api_key": upstream.api_key}
            changes.append(Change("upstream", name, "update" if old else "create", fields=diff(old, new)))

    # Exact aliases first, so a pattern in the same file is checked against them.
    for name, alias in sorted(settings.aliases.items(), key=lambda item: is_pattern(item[0])):
        team_id = teams[alias.team].id if alias.team else None
        spec = spec_from_settings(alias, name)
        if keep_later_changes:
            known = find_alias(session=session, name=name, team_id=team_id, deleted=True)
            if known is not None and last_applied_spec(session=session, alias=known) == spec:
                continue
        live = find_alias(session=session, name=name, team_id=team_id)
        version = current_version(session=session, alias=live) if live is not None else None
        result = put_alias(
            session=session,
            name=name,
            team_id=team_id,
            spec=spec,
            actor=actor,
            reason="apply",
            allow_catch_all=alias.allow_catch_all,
        )
        if result.changed:
            before_spec = AliasSpec.model_validate(version.spec).model_dump(mode="json") if version else None
            changes.append(
                Change(
                    "alias",
                    name,
                    "create" if result.created else "update",
                    team=alias.team,
                    fields=diff(before_spec, spec.model_dump(mode="json")),
                    version=result.version.version,
                )
            )

    if prune:
        named = {(name, teams[a.team].id if a.team else None) for name, a in settings.aliases.items()}
        for row in list_aliases(session=session):
            if (row.alias.name, row.alias.team_id) not in named:
                delete_alias(session=session, name=row.alias.name, team=row.team, actor=actor)
                changes.append(Change("alias", row.alias.name, "delete", team=row.team))
        for upstream_row in list_upstreams(session=session):
            if upstream_row.name not in settings.upstreams:
                delete_upstream(session=session, name=upstream_row.name, actor=actor)
                changes.append(Change("upstream", upstream_row.name, "delete"))

    if changes:
        audit(session=session, actor=actor, action="config.apply", target=settings.source, changes=len(changes))
    session.flush()
    return changes


def apply_settings(
    engine: Engine,
    settings: Settings,
    *,
    actor: str = "config",
    dry_run: bool = False,
    prune: bool = False,
    keep_later_changes: bool = False,
) -> list[Change]:
    """Apply ``settings`` in one transaction (rolled back whole on a dry run or an error); returns the diff."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            changes = apply_config(
                session=session, settings=settings, actor=actor, prune=prune, keep_later_changes=keep_later_changes
            )
            if dry_run:
                session.rollback()
            else:
                session.commit()
        except BaseException:
            session.rollback()
            raise
    return changes

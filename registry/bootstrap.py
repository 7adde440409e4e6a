"""Bring the database to what the configuration file says: teams, upstreams and aliases, idempotently."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from config import AliasSettings, Settings
from registry.aliases import AliasSpec, Target, set_alias
from registry.db import session_scope
from registry.teams import ensure_team
from registry.upstreams import set_upstream


def spec_from_settings(alias: AliasSettings) -> AliasSpec:
    fallback = None
    if alias.fallback is not None:
        fallback = Target(
            upstream=alias.fallback.upstream or alias.upstream,
            model=alias.fallback.model,
            system_prompt=alias.fallback.system_prompt,
        )
    return AliasSpec(
        target=Target(upstream=alias.upstream, model=alias.model, system_prompt=alias.system_prompt),
        fallback=fallback,
        policy=alias.policy,
        teams=tuple(alias.teams),
    )


def apply_settings(engine: Engine, settings: Settings, *, actor: str = "config") -> int:
    """Apply the file in one transaction; returns how many alias versions it created."""
    created = 0
    with session_scope(engine) as session:
        teams = {team.name: ensure_team(session=session, name=team.name) for team in settings.teams}
        for name, upstream in settings.upstreams.items():
            set_upstream(
                session=session, name=name, base_url=upstream.base_url, api_key_ref=upstream.api_key, actor=actor
            )
        for name, alias in settings.aliases.items():
            owner = teams[alias.team].id if alias.team else None
            version = set_alias(
                session=session, name=name, team_id=owner, spec=spec_from_settings(alias), actor=actor, reason="apply"
            )
            created += version is not None
    return created

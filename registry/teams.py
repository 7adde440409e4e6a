"""Teams and their API keys. A key is shown once when made; only its sha256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from registry.errors import Conflict, Invalid, NotFound
from registry.models import ApiKey, Team, utcnow

KEY_PREFIX = "tg-"
ROLES = ("team", "finance")


@dataclass(frozen=True)
class Caller:
    """Who a request's key says it comes from: what auth hands to the rest of the request path."""

    key_id: int
    team_id: int
    team: str
    role: str
    allowed_aliases: frozenset[str] | None


def hash_key(key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is as safe as a slow one and costs nothing per request.
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_team(*, session: Session, name: str) -> Team:
    if session.exec(select(Team).where(Team.name == name)).first() is not None:
        raise Conflict(f"a team named '{name}' exists already; choose another name", param="name")
    team = Team(name=name)
    session.add(team)
    session.flush()
    return team


def ensure_team(*, session: Session, name: str) -> Team:
    team = session.exec(select(Team).where(Team.name == name)).first()
    return team if team is not None else create_team(session=session, name=name)


def get_team(*, session: Session, name: str) -> Team:
    team = session.exec(select(Team).where(Team.name == name)).first()
    if team is None:
        raise NotFound(f"no team named '{name}'", param="team")
    return team


def create_key(
    *,
    session: Session,
    team: Team,
    name: str | None = None,
    role: str = "team",
    allowed_aliases: list[str] | None = None,
    expires_at: datetime | None = None,
    plaintext: str | None = None,
) -> tuple[str, ApiKey]:
    """Make a key for ``team``; returns the plaintext (to show once) and the stored record."""
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", param="role")
    key = plaintext or generate_key()
    assert team.id is not None
    record = ApiKey(
        team_id=team.id,
        key_hash=hash_key(key),
        prefix=key[:10],
        name=name,
        role=role,
        allowed_aliases=allowed_aliases,
        expires_at=expires_at,
    )
    session.add(record)
    session.flush()
    return key, record


def find_caller(*, session: Session, key: str) -> Caller | None:
    """The caller behind ``key``, or None when the key is unknown, revoked, expired or its team disabled."""
    row = session.exec(
        select(ApiKey, Team).join(Team, col(Team.id) == col(ApiKey.team_id)).where(ApiKey.key_hash == hash_key(key))
    ).first()
    if row is None:
        return None
    record, team = row
    if record.revoked_at is not None or team.disabled:
        return None
    if record.expires_at is not None and record.expires_at <= utcnow():
        return None
    assert record.id is not None and team.id is not None
    allowed = frozenset(record.allowed_aliases) if record.allowed_aliases is not None else None
    return Caller(key_id=record.id, team_id=team.id, team=team.name, role=record.role, allowed_aliases=allowed)

"""Teams and their API keys. A key is shown once when made; only its sha256 is stored.

A key's role says where it works: ``team`` keys call models on /v1, ``finance`` keys read every team's usage,
budgets and savings, ``team_finance`` keys their own team's only, ``admin`` keys work on /admin only and are
named, so the changes they make are recorded under that name.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from tunegate.config.names import alias_name_problem, team_name_problem
from tunegate.registry.audit import record as audit
from tunegate.registry.errors import Conflict, Invalid, NotFound
from tunegate.registry.models import ApiKey, Team, utcnow

KEY_PREFIX = "tg-"
ROLES = ("team", "finance", "team_finance", "admin")
FINANCE_ROLES = ("finance", "team_finance")  # team_finance: the key's own team's figures only


@dataclass(frozen=True)
class Caller:
    """Who a request's key says it comes from: what auth hands to the rest of the request path."""

    key_id: int
    team_id: int
    team: str
    role: str
    allowed_aliases: frozenset[str] | None
    name: str | None = None  # the key's name: an admin key's changes are recorded under it
    expires_at: datetime | None = None  # checked on every request, so a cached caller expires on time

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()


class Unset:
    """A field a partial update leaves as it is (``None`` would mean "clear it")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


def hash_key(key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is as safe as a slow one and costs nothing per request.
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_team_name(name: str, *, param: str = "name") -> str:
    problem = team_name_problem(name)
    if problem is not None:
        raise Invalid(problem, param=param)
    return name


def create_team(*, session: Session, name: str, actor: str = "system") -> Team:
    check_team_name(name)
    if session.exec(select(Team).where(Team.name == name)).first() is not None:
        raise Conflict(f"a team named '{name}' exists already; choose another name", param="name")
    team = Team(name=name)
    session.add(team)
    audit(session=session, actor=actor, action="team.create", target=name)
    session.flush()
    return team


def ensure_team(*, session: Session, name: str, actor: str = "system") -> Team:
    team = session.exec(select(Team).where(Team.name == name)).first()
    return team if team is not None else create_team(session=session, name=name, actor=actor)


def get_team(*, session: Session, name: str, param: str = "team") -> Team:
    team = session.exec(select(Team).where(Team.name == name)).first()
    if team is None:
        raise NotFound(f"no team named '{name}'", param=param)
    return team


def list_teams(*, session: Session) -> list[Team]:
    return list(session.exec(select(Team).order_by(Team.name)).all())


def set_team_disabled(*, session: Session, name: str, disabled: bool, actor: str) -> Team:
    """A disabled team's keys stop working at once (on the next request; other replicas within the cache TTL)."""
    team = get_team(session=session, name=name)
    if team.disabled != disabled:
        team.disabled = disabled
        session.add(team)
        audit(session=session, actor=actor, action="team.disable" if disabled else "team.enable", target=name)
        session.flush()
    return team


def _check_aliases(allowed_aliases: list[str] | None) -> list[str] | None:
    if allowed_aliases is None:
        return None
    for name in allowed_aliases:
        if alias_name_problem(name) is not None:
            raise Invalid(f"'{name}' in 'allowed_aliases' is not an alias name", param="allowed_aliases")
    return sorted(set(allowed_aliases))


def _check_expiry(expires_at: datetime | None) -> datetime | None:
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        raise Invalid("'expires_at' needs a time zone, e.g. 2030-01-31T00:00:00Z", param="expires_at")
    if expires_at <= utcnow():
        raise Invalid(f"'expires_at' ({expires_at.isoformat()}) is in the past", param="expires_at")
    return expires_at


def create_key(
    *,
    session: Session,
    team: Team,
    name: str | None = None,
    role: str = "team",
    allowed_aliases: list[str] | None = None,
    expires_at: datetime | None = None,
    plaintext: str | None = None,
    actor: str = "system",
) -> tuple[str, ApiKey]:
    """Make a key for ``team``; returns the plaintext (to show once) and the stored record."""
    if role not in ROLES:
        raise Invalid(f"'role' must be one of {', '.join(ROLES)}", param="role")
    if role == "admin":
        if not name:
            raise Invalid(
                "an admin key needs a 'name': changes made with it are recorded under that name", param="name"
            )
        if name == "admin" or find_admin_key(session=session, name=name) is not None:
            raise Conflict(f"an active admin key named '{name}' exists already; choose another name", param="name")
    key = plaintext or generate_key()
    assert team.id is not None
    record = ApiKey(
        team_id=team.id,
        key_hash=hash_key(key),
        prefix=key[:10],
        name=name,
        role=role,
        allowed_aliases=_check_aliases(allowed_aliases),
        expires_at=_check_expiry(expires_at),
    )
    session.add(record)
    session.flush()
    audit(session=session, actor=actor, action="key.create", target=team.name, key_id=record.id, name=name, role=role)
    return key, record


def find_admin_key(*, session: Session, name: str) -> ApiKey | None:
    """The active admin key named ``name``, if there is one."""
    now = utcnow()
    for record in session.exec(select(ApiKey).where(ApiKey.role == "admin", ApiKey.name == name)).all():
        if record.revoked_at is None and (record.expires_at is None or record.expires_at > now):
            return record
    return None


def key_status(record: ApiKey, team: Team) -> str:
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= utcnow():
        return "expired"
    if team.disabled:
        return "team disabled"
    return "active"


def list_keys(*, session: Session, team: str | None = None) -> list[tuple[ApiKey, Team]]:
    query = select(ApiKey, Team).join(Team, col(Team.id) == col(ApiKey.team_id))
    if team is not None:
        query = query.where(Team.id == get_team(session=session, name=team).id)
    return [(k, t) for k, t in session.exec(query.order_by(col(ApiKey.id))).all()]


def get_key(*, session: Session, key_id: int) -> tuple[ApiKey, Team]:
    row = session.exec(
        select(ApiKey, Team).join(Team, col(Team.id) == col(ApiKey.team_id)).where(ApiKey.id == key_id)
    ).first()
    if row is None:
        raise NotFound(f"no key with id {key_id}", param="key_id")
    return row[0], row[1]


def update_key(
    *,
    session: Session,
    key_id: int,
    actor: str,
    name: str | Unset | None = UNSET,
    allowed_aliases: list[str] | Unset | None = UNSET,
    expires_at: datetime | Unset | None = UNSET,
) -> tuple[ApiKey, Team]:
    """Change a key's name, alias list or expiry; a field left UNSET keeps its value, None clears it."""
    record, team = get_key(session=session, key_id=key_id)
    if record.revoked_at is not None:
        raise Conflict(f"key {key_id} is revoked; make a new one", param="key_id")
    changed: dict[str, object] = {}
    if not isinstance(name, Unset) and name != record.name:
        if record.role == "admin":
            raise Invalid("an admin key's name is its identity in the audit log; make a new key", param="name")
        record.name = changed["name"] = name
    if not isinstance(allowed_aliases, Unset):
        aliases = _check_aliases(allowed_aliases)
        if aliases != record.allowed_aliases:
            record.allowed_aliases = changed["allowed_aliases"] = aliases
    if not isinstance(expires_at, Unset):
        expiry = _check_expiry(expires_at)
        if expiry != record.expires_at:
            record.expires_at = expiry
            changed["expires_at"] = expiry.isoformat() if expiry else None
    if changed:
        session.add(record)
        audit(session=session, actor=actor, action="key.update", target=team.name, key_id=key_id, **changed)
        session.flush()
    return record, team


def revoke_key(*, session: Session, key_id: int, actor: str) -> tuple[ApiKey, Team]:
    """Revoke a key for good; revoking a revoked key changes nothing."""
    record, team = get_key(session=session, key_id=key_id)
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        session.add(record)
        audit(session=session, actor=actor, action="key.revoke", target=team.name, key_id=key_id, name=record.name)
        session.flush()
    return record, team


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
    return Caller(
        key_id=record.id,
        team_id=team.id,
        team=team.name,
        role=record.role,
        allowed_aliases=allowed,
        name=record.name,
        expires_at=record.expires_at,
    )

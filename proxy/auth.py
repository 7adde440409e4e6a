"""Who is calling: the bearer key read once, looked up (cached), and checked for the role a route needs.

Each check returns the caller it let through: ``team_caller`` for model calls, files and jobs, ``reader`` for a
team's own usage, ``actor_of`` (and the litestar guards on it) for the admin and finance routes.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import anyio.to_thread
from cachetools import TTLCache
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy.engine import Engine
from sqlmodel import Session

from tunegate.proxy.errors import AuthenticationFailed, PermissionDenied, invalid_api_key
from tunegate.registry.teams import FINANCE_ROLES, Caller, find_caller

_PREFIX = "Bearer "


def bearer(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header; "" when there is none."""
    if not authorization or not authorization.startswith(_PREFIX):
        return ""
    return authorization[len(_PREFIX) :].strip()


class Keys:
    """Key → caller, from a TTL cache; requests that miss together wait for one database lookup (an entry expiring
    under load would otherwise send every request in flight to the database at once)."""

    def __init__(self, engine: Engine, *, ttl: float) -> None:
        self._engine = engine
        self._callers: TTLCache[str, Caller] = TTLCache(maxsize=100_000, ttl=ttl)
        self._lookups: TTLCache[str, asyncio.Lock] = TTLCache(maxsize=10_000, ttl=60)

    async def find(self, key: str) -> Caller | None:
        caller = self._callers.get(key)
        if caller is not None:
            return caller
        lock = self._lookups.get(key)
        if lock is None:
            lock = self._lookups[key] = asyncio.Lock()
        async with lock:
            caller = self._callers.get(key)
            if caller is None:
                caller = await anyio.to_thread.run_sync(self._find, key)
                if caller is not None:
                    self._callers[key] = caller
        return caller

    def _find(self, key: str) -> Caller | None:
        with Session(self._engine) as session:
            return find_caller(session=session, key=key)

    def forget(self) -> None:
        self._callers.clear()


async def reader(keys: Keys, authorization: str | None) -> Caller:
    """A team or finance key's caller (what the /v1 routes accept); 401 without a valid key, 403 for an admin key."""
    key = bearer(authorization)
    if not key:
        raise AuthenticationFailed("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
    caller = await keys.find(key)
    if caller is None or caller.expired():
        raise invalid_api_key()
    if caller.role == "admin":
        raise PermissionDenied("This is an admin key: it works on /admin only. Call models with a team key.")
    return caller


async def team_caller(keys: Keys, authorization: str | None, *, cannot: str) -> Caller:
    """A team key's caller; a finance key is refused with 403, saying what it ``cannot`` do."""
    caller = await reader(keys, authorization)
    if caller.role != "team":
        raise PermissionDenied(f"This key may read usage only; it cannot {cannot}.")
    return caller


async def actor_of(keys: Keys, admin_key: str | None, authorization: str | None, *, finance: bool = False) -> str:
    """Who an admin request acts as: "admin" for $TUNEGATE_ADMIN_KEY, a named admin key's name, or (where
    ``finance`` may read) "finance" for a finance key."""
    actor, _ = await _admin_or_finance(keys, admin_key, authorization, finance=finance)
    return actor


async def finance_reader(
    keys: Keys, admin_key: str | None, authorization: str | None
) -> tuple[str, frozenset[int] | None]:
    """Who reads a finance route, and the ids of the teams whose figures it may read (None: every team's): an
    admin or ``finance`` key reads all; a ``team_finance`` key its own team's only."""
    return await _admin_or_finance(keys, admin_key, authorization, finance=True)


async def _admin_or_finance(
    keys: Keys, admin_key: str | None, authorization: str | None, *, finance: bool
) -> tuple[str, frozenset[int] | None]:
    given = bearer(authorization)
    if admin_key and hmac.compare_digest(given.encode(), admin_key.encode()):
        return "admin", None
    caller = await keys.find(given) if given else None
    if caller is not None and not caller.expired():
        if caller.role == "admin" and caller.name:
            return caller.name, None
        if caller.role in FINANCE_ROLES:
            if finance:
                return "finance", None if caller.role == "finance" else frozenset({caller.team_id})
            raise PermissionDenied("A finance key may read usage, budgets and savings only.")
    if not admin_key:
        raise PermissionDenied(
            "The admin API is off: set TUNEGATE_ADMIN_KEY to turn it on (or use a named admin key).",
            code="admin_disabled",
        )
    raise AuthenticationFailed("Incorrect admin key provided.")


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The admin routes: $TUNEGATE_ADMIN_KEY or a named admin key; ``connection.state.actor`` says which."""
    gateway = connection.app.state.gateway
    connection.state.actor = await actor_of(
        gateway.keys, gateway.settings.admin_key, connection.headers.get("authorization")
    )


async def finance_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The routes finance may read: the admin keys, or a finance key (``connection.state.actor`` is "finance");
    ``connection.state.teams`` holds the ids of the teams it may read (None: every team): see ``readable_teams``."""
    gateway = connection.app.state.gateway
    connection.state.actor, connection.state.teams = await finance_reader(
        gateway.keys, gateway.settings.admin_key, connection.headers.get("authorization")
    )


def readable_teams(connection: ASGIConnection[Any, Any, Any, Any]) -> frozenset[int] | None:
    """The teams a request that passed ``finance_guard`` may read (None: every team); every finance read filters
    by them, so another team's figures read as a team with none."""
    teams: frozenset[int] | None = connection.state.teams
    return teams

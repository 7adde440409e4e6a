"""The gateway's state for one process: database, caches, the upstream client and the usage writer.

Key → caller and alias → version lookups are served from TTL caches; a change made through this process
clears them at once, one made by another replica is seen within ``cache.ttl_seconds``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import httpx
from cachetools import TTLCache
from sqlalchemy.engine import Engine
from sqlmodel import Session

from config import Settings, resolve_secret
from proxy.errors import GatewayError, invalid_api_key, model_not_found
from registry.aliases import ResolvedAlias, resolve
from registry.bootstrap import apply_settings
from registry.db import make_engine, migrate
from registry.teams import Caller, find_caller
from registry.upstreams import list_upstreams
from registry.usage import UsageWriter


@dataclass(frozen=True)
class UpstreamEndpoint:
    name: str
    base_url: str
    api_key: str | None  # resolved from the environment; never logged, never echoed


class Gateway:
    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings.database.url)
        ttl = settings.cache.ttl_seconds
        self._callers: TTLCache[str, Caller] = TTLCache(maxsize=100_000, ttl=ttl)
        self._aliases: TTLCache[tuple[int, str], ResolvedAlias | None] = TTLCache(maxsize=100_000, ttl=ttl)
        self._upstreams: TTLCache[str, dict[str, UpstreamEndpoint]] = TTLCache(maxsize=1, ttl=ttl)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.server.read_timeout, connect=settings.server.connect_timeout),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=60),
        )
        self.usage = UsageWriter(
            self.engine, flush_interval=settings.usage.flush_interval, batch_size=settings.usage.batch_size
        )

    # -- lifecycle -------------------------------------------------------------------------------------
    def prepare_database(self) -> None:
        migrate(self.engine)
        apply_settings(self.engine, self.settings)

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.prepare_database)
        self.usage.start()

    async def stop(self) -> None:
        await self.http.aclose()
        await anyio.to_thread.run_sync(self.usage.close)
        self.engine.dispose()

    def invalidate(self) -> None:
        """Forget every cached lookup: called after a change made through this process."""
        self._callers.clear()
        self._aliases.clear()
        self._upstreams.clear()

    # -- the request path ------------------------------------------------------------------------------
    async def authenticate(self, authorization: str | None) -> Caller:
        if not authorization or not authorization.startswith("Bearer "):
            raise GatewayError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )
        key = authorization[7:].strip()
        caller = self._callers.get(key)
        if caller is None:
            caller = await anyio.to_thread.run_sync(self._find_caller, key)
            if caller is None:
                raise invalid_api_key()
            self._callers[key] = caller
        return caller

    def _find_caller(self, key: str) -> Caller | None:
        with Session(self.engine) as session:
            return find_caller(session=session, key=key)

    def check_admin(self, authorization: str | None) -> None:
        expected = self.settings.admin_key
        if not expected:
            raise GatewayError(
                403, "The admin API is off: set TUNEGATE_ADMIN_KEY to turn it on.", code="admin_disabled"
            )
        given = authorization[7:].strip() if authorization and authorization.startswith("Bearer ") else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise GatewayError(401, "Incorrect admin key provided.", code="invalid_api_key")

    async def resolve_alias(self, caller: Caller, name: str) -> ResolvedAlias:
        cache_key = (caller.team_id, name)
        try:
            resolved = self._aliases[cache_key]
        except KeyError:
            resolved = await anyio.to_thread.run_sync(self._resolve, caller, name)
            self._aliases[cache_key] = resolved
        if resolved is None or (caller.allowed_aliases is not None and name not in caller.allowed_aliases):
            raise model_not_found(name)
        return resolved

    def _resolve(self, caller: Caller, name: str) -> ResolvedAlias | None:
        with Session(self.engine) as session:
            return resolve(session=session, name=name, team_id=caller.team_id, team=caller.team)

    def upstream(self, name: str) -> UpstreamEndpoint:
        table = self._upstreams.get("all")
        if table is None:
            with Session(self.engine) as session:
                table = {
                    u.name: UpstreamEndpoint(u.name, u.base_url, resolve_secret(u.api_key_ref))
                    for u in list_upstreams(session=session)
                }
            self._upstreams["all"] = table
        try:
            return table[name]
        except KeyError:
            raise GatewayError(502, f"The alias points at upstream '{name}', which is not configured.") from None


def upstream_headers(upstream: UpstreamEndpoint, request_id: str) -> dict[str, Any]:
    headers = {"content-type": "application/json", "x-request-id": request_id}
    if upstream.api_key:
        headers["authorization"] = f"Bearer {upstream.api_key}"
    return headers

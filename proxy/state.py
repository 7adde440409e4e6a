"""The gateway's state for one process: database, caches, the upstream client and the usage writer.

Key → caller and alias → version lookups are served from TTL caches; a change made through this process
clears them at once, one made by another replica is seen within ``cache.ttl_seconds``.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
import httpx
from cachetools import TTLCache
from litestar import Request
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from config import Settings, resolve_secret
from proxy.calls.budgets import Limits
from proxy.errors import GatewayError, invalid_api_key, model_not_found
from proxy.metrics import GatewayMetrics
from proxy.upstream.calls import UpstreamEndpoint
from proxy.upstream.transport import UpstreamTransport
from registry.aliases import ResolvedAlias, resolve
from registry.bootstrap import prepare_database
from registry.costing import cost_records
from registry.db import make_engine, session_scope
from registry.errors import Conflict
from registry.finetune.retirement import ShutdownDates
from registry.pricing import PriceTable
from registry.teams import Caller, find_caller
from registry.upstreams import list_upstreams
from registry.usage import UsageWriter

WORKER_THREADS = 8


class Gateway:
    def __init__(self, settings: Settings, *, engine: Engine | None = None, prepared: bool = False) -> None:
        self.settings = settings
        self.prepared = prepared  # the database was prepared already (`serve` does it in another process)
        self.engine = engine or make_engine(settings.database.url)
        ttl = settings.cache.ttl_seconds
        self._callers: TTLCache[str, Caller] = TTLCache(maxsize=100_000, ttl=ttl)
        self._aliases: TTLCache[tuple[int, str], ResolvedAlias | None] = TTLCache(maxsize=100_000, ttl=ttl)
        self._upstreams: TTLCache[str, dict[str, UpstreamEndpoint]] = TTLCache(maxsize=1, ttl=ttl)
        self._lookups: TTLCache[Hashable, asyncio.Lock] = TTLCache(maxsize=10_000, ttl=60)
        timeout = httpx.Timeout(settings.server.read_timeout, connect=settings.server.connect_timeout)
        # Model calls post to the transport directly; everything else goes through httpx's API on top of it.
        self.transport = UpstreamTransport(timeout=timeout)
        self.http = httpx.AsyncClient(timeout=timeout, transport=self.transport)
        self.metrics = GatewayMetrics(self.engine, settings)
        self.prices = PriceTable.load(settings.prices_path)  # a bad table stops the start, naming the field
        self.usage = UsageWriter(
            self.engine,
            flush_interval=settings.usage.flush_interval,
            batch_size=settings.usage.batch_size,
            before_write=partial(cost_records, self.prices),
            after_write=self.metrics.observe,
        )
        self.limits = Limits(self.engine, self.usage, self.prices, ttl=ttl)
        self.shutdown_dates = ShutdownDates()  # targets past their shutdown date: kept by the retirement watch

    # -- lifecycle -------------------------------------------------------------------------------------
    def prepare_database(self) -> None:
        prepare_database(self.engine, self.settings)

    async def start(self) -> None:
        # Database work off the event loop runs on at most this many threads (AnyIO's default is 40): more would
        # only queue on the connection pool, and each thread keeps a stack and a malloc arena (measured: 45
        # threads and +17 MiB RSS after a minute of load with the default).
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        if not self.prepared:
            await anyio.to_thread.run_sync(self.prepare_database)
        self.usage.start()
        self.limits.start()
        self.metrics.start(lambda: self.usage.pending)

    async def stop(self) -> None:
        await self.http.aclose()
        await anyio.to_thread.run_sync(self.limits.close)
        await anyio.to_thread.run_sync(self.usage.close)
        await anyio.to_thread.run_sync(self.metrics.stop)
        self.engine.dispose()

    def invalidate(self) -> None:
        """Forget every cached lookup: called after a change made through this process."""
        self._callers.clear()
        self._aliases.clear()
        self._upstreams.clear()
        self.limits.invalidate()

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
            async with self._lookup(("key", key)):
                caller = self._callers.get(key)
                if caller is None:
                    caller = await anyio.to_thread.run_sync(self._find_caller, key)
                    if caller is None:
                        raise invalid_api_key()
                    self._callers[key] = caller
        if caller.expired():
            raise invalid_api_key()
        if caller.role == "admin":
            raise GatewayError(
                403,
                "This is an admin key: it works on /admin only. Call models with a team key.",
                code="permission_denied",
            )
        return caller

    def _lookup(self, what: Hashable) -> asyncio.Lock:
        # One database lookup per missing entry: requests that miss together wait for the first one's answer
        # (an entry expiring under load would otherwise send every request in flight to the database at once).
        lock = self._lookups.get(what)
        if lock is None:
            lock = self._lookups[what] = asyncio.Lock()
        return lock

    def _find_caller(self, key: str) -> Caller | None:
        with Session(self.engine) as session:
            return find_caller(session=session, key=key)

    async def check_admin(self, authorization: str | None) -> str:
        """Who an admin request acts as: "admin" for $TUNEGATE_ADMIN_KEY, else the named admin key's name."""
        expected = self.settings.admin_key
        given = authorization[7:].strip() if authorization and authorization.startswith("Bearer ") else ""
        if expected and hmac.compare_digest(given.encode(), expected.encode()):
            return "admin"
        caller = self._callers.get(given) if given else None
        if given and caller is None:
            caller = await anyio.to_thread.run_sync(self._find_caller, given)
            if caller is not None:
                self._callers[given] = caller
        if caller is not None and caller.role == "admin" and caller.name and not caller.expired():
            return caller.name
        if caller is not None and caller.role == "finance":
            raise GatewayError(403, "A finance key may read usage, budgets and savings only.", code="permission_denied")
        if not expected:
            raise GatewayError(
                403,
                "The admin API is off: set TUNEGATE_ADMIN_KEY to turn it on (or use a named admin key).",
                code="admin_disabled",
            )
        raise GatewayError(401, "Incorrect admin key provided.", code="invalid_api_key")

    async def resolve_alias(self, caller: Caller, name: str) -> ResolvedAlias:
        cache_key = (caller.team_id, name)
        try:
            resolved = self._aliases[cache_key]
        except KeyError:
            async with self._lookup(("alias", cache_key)):
                try:
                    resolved = self._aliases[cache_key]
                except KeyError:
                    resolved = await anyio.to_thread.run_sync(self._resolve, caller, name)
                    self._aliases[cache_key] = resolved
        if resolved is None or (
            caller.allowed_aliases is not None
            and name not in caller.allowed_aliases
            and resolved.pattern not in caller.allowed_aliases  # a key may be limited to a pattern, too
        ):
            raise model_not_found(name)
        return resolved

    def _resolve(self, caller: Caller, name: str) -> ResolvedAlias | None:
        with Session(self.engine) as session:  # with its system prompts' token counts, stored when it was written
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


T = TypeVar("T")


def gateway_of(request: Request[Any, Any, Any]) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def read(gateway: Gateway, work: Callable[[Session], T]) -> T:
    """``work`` on a worker thread with a session of its own (no transaction kept)."""

    def run() -> T:
        with Session(gateway.engine) as session:
            return work(session)

    return await anyio.to_thread.run_sync(run)


async def transaction(gateway: Gateway, work: Callable[[Session], T]) -> T:
    """``work`` in one transaction on a worker thread; a write that collides with a concurrent one is a 409."""

    def run() -> T:
        try:
            with session_scope(gateway.engine) as session:
                return work(session)
        except IntegrityError:
            raise Conflict("another change to the same record was made at the same moment; try again") from None

    return await anyio.to_thread.run_sync(run)


async def write(gateway: Gateway, work: Callable[[Session], T]) -> T:
    """A ``transaction`` that changes what requests are served by: this process forgets its cached lookups,
    so the change is served at once."""
    try:
        return await transaction(gateway, work)
    finally:
        gateway.invalidate()

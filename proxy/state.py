"""The gateway's state for one process: database, caches, the upstream client, the usage writer and budgets.

Key → caller and alias → version lookups are served from TTL caches; a change made through this process
clears them at once, one made by another replica is seen within ``cache.ttl_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
import httpx
from cachetools import TTLCache
from litestar import Request
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from tunegate.config import Settings, resolve_secret
from tunegate.proxy import access_log
from tunegate.proxy.auth import Keys
from tunegate.proxy.calls.budgets import Budgets
from tunegate.proxy.errors import UpstreamFailed, model_not_found
from tunegate.proxy.metrics import GatewayMetrics
from tunegate.proxy.upstream.calls import UpstreamEndpoint
from tunegate.proxy.upstream.transport import UpstreamTransport
from tunegate.registry.aliases import ResolvedAlias, resolve
from tunegate.registry.bootstrap import prepare_database
from tunegate.registry.costing import cost_records, record_cost
from tunegate.registry.db import make_engine, session_scope
from tunegate.registry.errors import Conflict
from tunegate.registry.finetune.retirement import ShutdownDates
from tunegate.registry.journal import Journal, journal_directory
from tunegate.registry.pricing import PriceTable
from tunegate.registry.teams import Caller
from tunegate.registry.upstreams import list_upstreams
from tunegate.registry.usage import Usage, UsageWriter

WORKER_THREADS = 8
log = logging.getLogger("tunegate.usage")


class Gateway:
    def __init__(self, settings: Settings, *, engine: Engine | None = None, prepared: bool = False) -> None:
        self.settings = settings
        self.prepared = prepared  # the database was prepared already (`serve` does it in another process)
        self.engine = engine or make_engine(settings.database.url)
        ttl = settings.cache.ttl_seconds
        self.keys = Keys(self.engine, ttl=ttl)
        self._aliases: TTLCache[tuple[int, str], ResolvedAlias | None] = TTLCache(maxsize=100_000, ttl=ttl)
        self._upstreams: TTLCache[str, dict[str, UpstreamEndpoint]] = TTLCache(maxsize=1, ttl=ttl)
        self._lookups: TTLCache[Hashable, asyncio.Lock] = TTLCache(maxsize=10_000, ttl=60)
        timeout = httpx.Timeout(settings.server.read_timeout, connect=settings.server.connect_timeout)
        # Model calls post to the transport directly; everything else goes through httpx's API on top of it.
        self.transport = UpstreamTransport(timeout=timeout)
        self.http = httpx.AsyncClient(timeout=timeout, transport=self.transport)
        self.metrics = GatewayMetrics(self.engine, settings)
        self.prices = PriceTable.load(settings.prices_path)  # a bad table stops the start, naming the field
        # Each record is journaled before its answer is sent, and marked there once stored and once charged.
        self.journal = Journal(journal_directory(settings))
        self.usage = UsageWriter(
            self.engine,
            flush_interval=settings.usage.flush_interval,
            batch_size=settings.usage.batch_size,
            before_write=partial(cost_records, self.prices),
            after_write=self._written,
        )
        self.budgets = Budgets(self.engine, ttl=ttl, after_charge=self.journal.charged)
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
        self.budgets.start()
        self.metrics.start(lambda: self.usage.pending)

    async def stop(self) -> None:
        await self.http.aclose()

        # Both give up after a few seconds of a failing database: what they could not write stays in the journal.
        async def closing(close: Callable[[], None]) -> None:
            await anyio.to_thread.run_sync(close)

        async with anyio.create_task_group() as group:
            group.start_soon(closing, self.budgets.close)
            group.start_soon(closing, self.usage.close)
        left = self.journal.open_records
        self.journal.close()
        if left:
            log.error(
                "%d usage records could not be stored or charged before shutdown: they stay in the journal %s "
                "and are stored at the next start",
                left,
                self.journal.directory,
            )
        await anyio.to_thread.run_sync(self.metrics.stop)
        self.engine.dispose()

    def _written(self, batch: Sequence[Usage]) -> None:
        self.journal.stored([record.request_id for record in batch])
        self.metrics.observe(batch)

    def invalidate(self) -> None:
        """Forget every cached lookup: called after a change made through this process."""
        self.keys.forget()
        self._aliases.clear()
        self._upstreams.clear()
        self.budgets.invalidate()

    # -- the request path ------------------------------------------------------------------------------
    def _lookup(self, what: Hashable) -> asyncio.Lock:
        # One database lookup per missing entry: requests that miss together wait for the first one's answer
        # (an entry expiring under load would otherwise send every request in flight to the database at once).
        lock = self._lookups.get(what)
        if lock is None:
            lock = self._lookups[what] = asyncio.Lock()
        return lock

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

    async def upstreams(self) -> dict[str, UpstreamEndpoint]:
        """Every upstream by name, from a cache read again on a worker thread once it expires."""
        table = self._upstreams.get("all")
        if table is None:
            async with self._lookup("upstreams"):
                table = self._upstreams.get("all")
                if table is None:
                    table = self._upstreams["all"] = await anyio.to_thread.run_sync(self._read_upstreams)
        return table

    async def upstream(self, name: str) -> UpstreamEndpoint:
        """The upstream ``name``; a 502 when the registry has none of that name."""
        found = (await self.upstreams()).get(name)
        if found is None:
            raise UpstreamFailed(f"The alias points at upstream '{name}', which is not configured.")
        return found

    def _read_upstreams(self) -> dict[str, UpstreamEndpoint]:
        with Session(self.engine) as session:
            return {
                u.name: UpstreamEndpoint(u.name, u.base_url, resolve_secret(u.api_key_ref))
                for u in list_upstreams(session=session)
            }

    def record(self, record: Usage) -> None:
        """Keep a call's usage record (the usage writer), costed at its day's prices, and charge it to its team's
        budget and limits."""
        if record.cost_usd is None:
            cost = record_cost(self.prices, record)
            record.cost_usd, record.priced = cost.usd, cost.priced  # costed once: the writer stores this figure
        self.journal.append(record)  # in the kernel before the answer is sent: a SIGKILL from here on loses nothing
        self.usage.submit(record)
        self.budgets.charge(record)
        access_log.model_call(record, self.metrics._known.team(record.team_id))  # team: None until metrics know it


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

"""Budgets and rate limits on the request path: one check before a request is forwarded, one charge when it ends.

The check (:meth:`Budgets.admit`) reads the team's month-to-date spend with a read that starts after the
request arrived (on a thread, one read shared by the requests of the team that arrive while the previous one
runs; on SQLite, when no other answer of this process waits for its charge, on the event loop) and
counts the request against each per-minute window; nothing touches the database for a caller without limits.
The charge (:meth:`Budgets.charge`) hands a costed usage record's cost and tokens to a charger thread, which
adds them to the shared counters at once for a team with a budget or a token limit
(not at the writer's flush interval), so every process sees a team cross its budget within milliseconds, and
within ``LAZY_CHARGE_SECONDS`` for the others, in fewer transactions. A response of a team with a budget is
sent after its charge is committed: a request that starts after another one ended sees that one's cost, and
the overshoot past a hard limit is at most the requests in flight when it was crossed. On SQLite, such a charge
is committed on the event loop itself (no thread hop) when its call is the only model call in progress,
no other charge is on its way and no other connection is writing; else the charger takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import anyio.to_thread
import httpx
from cachetools import TTLCache
from sqlalchemy.engine import Engine
from sqlmodel import Session

from tunegate.proxy.errors import QuotaExceeded, RateLimited
from tunegate.registry.budgets import Budget, CallerLimits, caller_limits, record_alert
from tunegate.registry.costing import from_e8, money, to_e8
from tunegate.registry.counters import (
    Window,
    charge,
    key_scope,
    minute_of,
    month_of,
    prune_counters,
    spent_e8,
    take_request,
    team_scope,
)
from tunegate.registry.db import session_scope
from tunegate.registry.fastpath.counters import PgCounters, SqliteCounters, pg_counters, sqlite_counters
from tunegate.registry.models import Team, utcnow
from tunegate.registry.teams import Caller
from tunegate.registry.usage import Usage

log = logging.getLogger("tunegate.limits")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

LAZY_CHARGE_SECONDS = 0.25  # how long charges nothing waits for are gathered before they are committed
LOOP_CHARGE_BACKOFF = 10.0  # seconds the event loop leaves charges to the charger after another process wrote
SETTLE_TIMEOUT = 5.0  # seconds a response waits for its charge before it is sent anyway (database trouble)
WEBHOOK_TIMEOUT = 5.0


@dataclass(frozen=True)
class Quota:
    """What :meth:`Budgets.admit` let through: the rate-limit headers to send, and whether the answer waits for
    its charge (:meth:`Budgets.settled`) so that the next request sees it."""

    headers: dict[str, str] = field(default_factory=dict)
    settle: bool = False


OPEN = Quota()


@dataclass
class _Charge:
    request_id: str
    team_id: int
    month: str
    units: int  # 1e-8 USD
    tokens: int
    minute: int
    tpm_scopes: tuple[str, ...]
    budget: Budget | None
    done: asyncio.Future[bool] | None  # for a charge an answer waits for (on the event loop that handed it in)
    queued: float  # time.monotonic() when handed in


def _settle(futures: list[asyncio.Future[bool]], committed: bool = True) -> None:
    """End the answers' wait: their charges are committed, or (False) SETTLE_TIMEOUT is up and they go anyway."""
    for future in futures:
        if not future.done():
            future.set_result(committed)


_RECHECKS = 3  # how often a refusal that counted uncommitted charges is looked at again


class Coalesced(Generic[K, V]):
    """A read per key that callers asking at once share: at most one in flight per key, and each caller gets
    the result of a read that started after it asked (so it sees every write committed before it asked).

    Under load the callers that arrive while a read runs share the next one, instead of each taking a worker
    thread and a database connection of its own.
    """

    def __init__(self, fetch: Callable[[K], V]) -> None:
        self._fetch = fetch
        self._running: dict[K, asyncio.Future[V]] = {}
        self._next: dict[K, asyncio.Future[V]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V:
        if key in self._running:
            future = self._next.get(key)
            if future is None:
                future = self._next[key] = asyncio.get_running_loop().create_future()
        else:
            future = self._running[key] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._reads(key, future))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(future)  # a caller that gives up does not cancel the others' read

    async def _reads(self, key: K, future: asyncio.Future[V]) -> None:
        while True:
            try:
                future.set_result(await anyio.to_thread.run_sync(self._fetch, key))
            except Exception as exc:
                future.set_exception(exc)
            following = self._next.pop(key, None)
            if following is None:
                del self._running[key]
                return
            self._running[key] = future = following


def _reset(now: float) -> float:
    return 60 - (now % 60)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``12s``, ``1m0s``."""
    if seconds < 1:
        return f"{max(1, int(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


def rate_headers(windows: list[Window], now: float) -> dict[str, str]:
    """The tightest window's figures, in OpenAI's ``x-ratelimit-*`` headers."""
    headers: dict[str, str] = {}
    reset = _duration(_reset(now))
    requests = [(w.rate.rpm - w.requests, w.rate.rpm) for w in windows if w.rate.rpm is not None]
    if requests:
        remaining, limit = min(requests)
        headers["x-ratelimit-limit-requests"] = str(limit)
        headers["x-ratelimit-remaining-requests"] = str(max(0, remaining))
        headers["x-ratelimit-reset-requests"] = reset
    tokens = [(w.rate.tpm - w.tokens, w.rate.tpm) for w in windows if w.rate.tpm is not None]
    if tokens:
        remaining, limit = min(tokens)
        headers["x-ratelimit-limit-tokens"] = str(limit)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, remaining))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers


def insufficient_quota(caller: Caller, budget: Budget, spent: int, month: str) -> QuotaExceeded:
    return QuotaExceeded(
        f"You exceeded your current quota: team '{caller.team}' has spent ${money(from_e8(spent))} of its "
        f"${money(from_e8(budget.hard_e8))} budget for {month}. Ask an admin to raise it.",
        headers={"x-should-retry": "false"},  # waiting will not help: the SDK should not retry
    )


class Budgets:
    """One process's side of the shared budgets and rate limits: admit a call, charge what it spent."""

    def __init__(self, engine: Engine, *, ttl: float, after_charge: Callable[[list[str]], None] | None = None) -> None:
        self._engine = engine
        self._after_charge = after_charge  # told the request ids whose charges committed (the usage journal)
        self._limits: TTLCache[tuple[int, int], CallerLimits] = TTLCache(maxsize=100_000, ttl=ttl)
        # A team over its hard limit is refused from memory for a while, sparing the database a blocked client.
        self._refused: TTLCache[tuple[int, str], tuple[Budget, int]] = TTLCache(maxsize=100_000, ttl=max(ttl, 1.0))
        self._lock = threading.Condition()
        self._queue: list[_Charge] = []
        self._urgent = 0  # charges in the queue that an answer waits for
        self._pending: dict[tuple[int, str], int] = {}  # charged here, not yet committed
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._alerted: set[tuple[int, str, str]] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tunegate-charger", daemon=True)
        self._spend = Coalesced(self._spent)
        # SQLite is a local file whose WAL readers never wait for writers: its spend can be read on the event loop
        # (~3 µs; no thread hop). PostgreSQL's is a network round trip: read on a thread, shared (Coalesced).
        # Alone, a charge an answer waits for is committed on the event loop too (~20 µs, two thread hops fewer),
        # unless another connection holds SQLite's write lock: then it goes to the charger, which waits for it.
        # One connection does both: a connection keeps its page cache across its own commits, and drops it after
        # another's (measured at one connection: a read ~29 µs and a charge ~62 µs on two connections).
        self._loop_counters = sqlite_counters(engine, wait=False)  # used on the event loop only
        # The charger's own connection (SQLite or PostgreSQL), and PostgreSQL's for the shared reads (one at a time).
        self._local_charge: SqliteCounters | PgCounters | None = sqlite_counters(engine) or pg_counters(engine)
        self._thread_spend = pg_counters(engine)
        self._thread_spend_lock = threading.Lock()
        self._loop_charge_after = 0.0  # time.monotonic() before which charges go to the charger (see _charged_here)
        self._calls = 0  # model calls this process is answering (see calling)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Commit every charge handed in so far, then stop."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for counters in (self._loop_counters, self._local_charge, self._thread_spend):
            if counters is not None:
                counters.close()

    def invalidate(self) -> None:
        """Forget cached limits: called after a budget or limit is changed through this process."""
        self._limits.clear()
        self._refused.clear()

    # -- before forwarding -----------------------------------------------------------------------------
    @contextmanager
    def calling(self) -> Iterator[None]:
        """Around a model call, on the event loop: a charge is committed on the loop only while one call is on."""
        self._calls += 1
        try:
            yield
        finally:
            self._calls -= 1

    async def admit(self, caller: Caller) -> Quota:
        """Refuse with 429 when the team is over its budget or a rate limit; else count the request."""
        limits = self._limits.get((caller.team_id, caller.key_id))
        if limits is None:
            limits = await anyio.to_thread.run_sync(self._caller_limits, caller)
            self._limits[(caller.team_id, caller.key_id)] = limits
        if limits.budget is None and not limits.rates:
            return OPEN
        now = utcnow()
        month = month_of(now.date())
        refused = self._refused.get((caller.team_id, month))
        if refused is not None:
            raise insufficient_quota(caller, *refused, month)
        key = (caller.team_id, month)
        if limits.budget is not None:
            for attempt in range(_RECHECKS + 1):
                # Alone, the read on the loop answers soonest; under load a shared read on a thread costs the loop
                # less and lets the charges that follow commit together (measured: bench/RESULTS.md).
                found = self._spent_here(key) if not self._waiting else None
                spent, pending = found if found is not None else await self._spend.get(key)
                if spent < limits.budget.hard_e8:
                    break
                if pending and attempt < _RECHECKS:
                    # Over partly on charges this process has not committed (and a charge committing during the
                    # read counts twice): let them commit and look again. A team is refused only on what the
                    # database holds, so once a client has seen this 429 every other process refuses it too.
                    await self._drain(key)
                    continue
                self._refused[key] = (limits.budget, spent)  # on the event loop
                raise insufficient_quota(caller, limits.budget, spent, month)
        headers = await anyio.to_thread.run_sync(self._take, caller, limits, now) if limits.rates else {}
        # The next request must see this one's cost (budget) and tokens (tokens per minute): answer after the charge.
        return Quota(headers, settle=limits.budget is not None or bool(limits.tpm_scopes))

    async def _drain(self, key: tuple[int, str]) -> None:
        """Wait (at most SETTLE_TIMEOUT) until this process has committed every charge of ``key``."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending.get(key):
                    return
            await asyncio.sleep(0.005)

    def _caller_limits(self, caller: Caller) -> CallerLimits:
        with Session(self._engine) as session:
            return caller_limits(session=session, team_id=caller.team_id, key_id=caller.key_id)

    def _spent(self, key: tuple[int, str]) -> tuple[int, int]:
        """Month-to-date spend of ``key`` (committed plus charged here and not yet committed), and the latter.

        What this process charged is read before the database: a charge is then counted once or (while it
        commits) twice, never missed; ``admit`` looks again before refusing on charges not yet committed.
        """
        pending = self._pending_of(key)
        if self._thread_spend is not None:
            with self._thread_spend_lock:
                return self._thread_spend.spent_e8(*key) + pending, pending
        with self._engine.connect() as connection:
            return spent_e8(db=connection, team_id=key[0], month=key[1]) + pending, pending

    def _spent_here(self, key: tuple[int, str]) -> tuple[int, int] | None:
        """:meth:`_spent` on the event loop, from SQLite; None on PostgreSQL, or when SQLite asks this reader to
        wait (a rare case in WAL mode: another connection recovering the WAL), which the event loop never does."""
        if self._loop_counters is None:
            return None
        pending = self._pending_of(key)
        spent = self._loop_counters.spent_e8_now(*key)
        return None if spent is None else (spent + pending, pending)

    def _pending_of(self, key: tuple[int, str]) -> int:
        with self._lock:
            return self._pending.get(key, 0)

    def _take(self, caller: Caller, limits: CallerLimits, now: datetime) -> dict[str, str]:
        with self._engine.connect() as connection:
            windows = take_request(db=connection, rates=limits.rates, minute=minute_of(now))
            stamp = now.timestamp()
            for window in windows:
                over = self._over(caller, window, stamp)
                if over is not None:
                    connection.rollback()  # a refused request does not count
                    raise over
            connection.commit()
            return rate_headers(windows, stamp)

    @staticmethod
    def _over(caller: Caller, window: Window, now: float) -> RateLimited | None:
        rate, what = window.rate, "team" if window.rate.scope.startswith("team:") else "key"
        if rate.rpm is not None and window.requests > rate.rpm:
            kind, unit, limit, used = "requests", "RPM", rate.rpm, window.requests - 1
        elif rate.tpm is not None and window.tokens >= rate.tpm:
            kind, unit, limit, used = "tokens", "TPM", rate.tpm, window.tokens
        else:
            return None
        wait = _reset(now)
        headers = rate_headers([window], now)
        headers["retry-after"] = str(math.ceil(wait))
        return RateLimited(
            f"Rate limit reached for {what} of team '{caller.team}' on {kind} per min ({unit}): Limit {limit}, "
            f"Used {used}. Please try again in {math.ceil(wait)}s.",
            type=kind,
            headers=headers,
        )

    # -- when the request ends -------------------------------------------------------------------------
    def charge(self, record: Usage) -> None:
        """Charge a costed ``record``'s cost and tokens to its team's (and key's) counters."""
        units = to_e8(record.cost_usd) if record.cost_usd is not None else 0
        tokens = max(0, record.prompt_tokens) + max(0, record.completion_tokens)
        limits = self._limits.get((record.team_id, record.key_id or 0))
        tpm_scopes: tuple[str, ...] = ()
        if tokens and limits is not None:
            tpm_scopes = limits.tpm_scopes
        elif tokens:  # a stream that outlived the cache: count its tokens wherever a limit may be
            tpm_scopes = (team_scope(record.team_id), *([key_scope(record.key_id)] if record.key_id else []))
        if not units and not tpm_scopes:
            return
        month = month_of(record.day)
        # A charge an answer waits for (the team has a budget or a token limit) is committed at once; the others
        # are gathered for up to LAZY_CHARGE_SECONDS and committed together (the month's spend must stay whole
        # for a budget set later, but nothing waits for it).
        urgent = limits is None or limits.budget is not None or bool(limits.tpm_scopes)
        item = _Charge(
            request_id=record.request_id,
            team_id=record.team_id,
            month=month,
            units=units,
            tokens=tokens,
            minute=minute_of(record.created_at),
            tpm_scopes=tpm_scopes,
            budget=limits.budget if limits is not None else None,
            done=None,
            queued=time.monotonic(),
        )
        if urgent and self._charged_here(item):
            return
        if urgent:
            with contextlib.suppress(RuntimeError):  # handed in off the event loop (a seeding script): none waits
                item.done = asyncio.get_running_loop().create_future()
        with self._lock:
            wake = urgent or not self._queue
            self._queue.append(item)
            self._pending[(record.team_id, month)] = self._pending.get((record.team_id, month), 0) + units
            if urgent:
                self._urgent += 1
            if item.done is not None:
                self._waiting[record.request_id] = item.done
            if wake:
                self._lock.notify()

    def _charged_here(self, item: _Charge) -> bool:
        """Commit ``item`` on the event loop when no other charge is on its way (SQLite only; see __init__)."""
        # With other calls on, the charger commits theirs with this one in one transaction: cheaper than one each.
        if (
            self._loop_counters is None
            or self._calls > 1
            or self._waiting
            or self._queue
            or item.queued < self._loop_charge_after
        ):
            return False
        spend, tokens = _sums([item])
        totals = self._loop_counters.charge(spend, tokens)
        if totals is None:  # another connection is writing: the charger waits for it
            if self._loop_counters.busy_elsewhere:
                # Other processes write to this file too (`serve --workers N`): a transaction per request would make
                # them wait for the lock in SQLite's busy handler (1, 2, 5 ms sleeps); the charger's batches don't.
                self._loop_charge_after = item.queued + LOOP_CHARGE_BACKOFF
            return False
        if self._after_charge is not None:
            self._after_charge([item.request_id])
        if item.budget is not None and self._alert_due(item.budget, item.month, totals):
            key = (item.team_id, item.month)
            asyncio.get_running_loop().run_in_executor(None, self._alert, item.budget, item.month, totals[key])
        return True

    async def settled(self, request_id: str) -> None:
        """Wait until the charge of ``request_id`` is committed (at most SETTLE_TIMEOUT)."""
        with self._lock:
            done = self._waiting.get(request_id)
        if done is None:
            return
        # A timer that ends the wait, not asyncio.timeout (which costs ~3% of a request: its cancel bookkeeping).
        timer = asyncio.get_running_loop().call_later(SETTLE_TIMEOUT, _settle, [done], False)
        try:
            committed = await done
        finally:
            timer.cancel()
        if not committed:
            log.warning("the charge of %s is not committed after %ss; answering anyway", request_id, SETTLE_TIMEOUT)

    # -- the charger thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        last_prune = 0.0
        while True:
            with self._lock:
                while not self._stopping:
                    now = time.monotonic()
                    if self._urgent or (self._queue and now - self._queue[0].queued >= LAZY_CHARGE_SECONDS):
                        break
                    if now - last_prune > 60:
                        break
                    self._lock.wait(timeout=self._queue[0].queued + LAZY_CHARGE_SECONDS - now if self._queue else 30)
                batch, self._queue, self._urgent = self._queue, [], 0
                stopping = self._stopping
            if batch:
                self._apply(batch, final=stopping)
            if time.monotonic() - last_prune > 60:
                last_prune = time.monotonic()
                self._prune()
            if stopping:
                with self._lock:
                    if not self._queue:
                        return

    def _apply(self, batch: list[_Charge], *, final: bool) -> None:
        spend, tokens = _sums(batch)
        attempt, committed = 0, True
        while True:
            try:
                if self._local_charge is not None:
                    charged = self._local_charge.charge(spend, tokens)
                    assert charged is not None  # this connection waits for the write lock
                    totals = charged
                else:
                    with self._engine.begin() as connection:
                        totals = charge(db=connection, spend=spend, tokens=tokens)
                break
            except Exception:
                attempt += 1
                log.exception("charging %d requests failed (attempt %d); retrying", len(batch), attempt)
                if (final or self._stopping) and attempt >= 5:
                    log.error("giving up on charging %d requests at shutdown", len(batch))
                    totals, committed = {}, False
                    break
                time.sleep(min(5.0, 0.1 * 2**attempt))
        if committed and self._after_charge is not None:
            self._after_charge([item.request_id for item in batch])
        with self._lock:
            for item in batch:
                key = (item.team_id, item.month)
                self._pending[key] = self._pending.get(key, 0) - item.units
                if not self._pending[key]:
                    del self._pending[key]
                self._waiting.pop(item.request_id, None)
        done = [item.done for item in batch if item.done is not None]
        if done:  # the answers that wait, woken with one call into their event loop for the whole batch
            with contextlib.suppress(RuntimeError):  # the loop has closed (shutdown): nobody waits any more
                done[0].get_loop().call_soon_threadsafe(_settle, done)
        budgets = {(i.team_id, i.month): i.budget for i in batch if i.budget is not None}
        for key, budget in budgets.items():
            if self._alert_due(budget, key[1], totals):
                self._alert(budget, key[1], totals[key])

    def _alert_due(self, budget: Budget, month: str, totals: dict[tuple[int, str], int]) -> bool:
        spent = totals.get((budget.team_id, month))
        return spent is not None and bool(self._levels_due(budget, month, spent))

    def _levels_due(self, budget: Budget, month: str, spent: int) -> list[str]:
        """The levels ``spent`` has crossed that this process has not alerted for yet."""
        return [
            level
            for level, threshold in (("soft", budget.soft_e8), ("hard", budget.hard_e8))
            if spent >= threshold and (budget.team_id, month, level) not in self._alerted
        ]

    def _alert(self, budget: Budget, month: str, spent: int) -> None:
        for level in self._levels_due(budget, month, spent):
            marker = (budget.team_id, month, level)
            try:
                with session_scope(self._engine) as session:
                    first = record_alert(
                        session=session, team_id=budget.team_id, month=month, level=level, spent_usd=from_e8(spent)
                    )
                    team = _team_name(session, budget.team_id)
            except Exception:
                log.exception("recording the %s budget alert of team %s failed", level, budget.team_id)
                continue
            self._alerted.add(marker)
            if not first:
                continue  # another process crossed it first and alerted
            payload = {
                "event": f"budget.{level}_limit" if level == "hard" else "budget.soft_threshold",
                "team": team,
                "month": month,
                "budget_usd": money(budget.monthly_usd),
                "soft_threshold_pct": budget.soft_pct,
                "spent_usd": money(from_e8(spent)),
                "used_pct": round(spent * 100 / budget.hard_e8, 2),
            }
            log.warning(
                "budget alert: team %s crossed its %s %s for %s: spent $%s of $%s (%s%%)",
                team,
                level,
                "limit" if level == "hard" else f"threshold ({budget.soft_pct}%)",
                month,
                payload["spent_usd"],
                payload["budget_usd"],
                payload["used_pct"],
            )
            if budget.alert_webhook:
                threading.Thread(
                    target=_post_webhook, args=(budget.alert_webhook, payload), name="tunegate-alert", daemon=True
                ).start()

    def _prune(self) -> None:
        try:
            with session_scope(self._engine) as session:
                prune_counters(session=session, before_minute=minute_of(utcnow()) - 2)
        except Exception:
            log.exception("pruning old rate-limit counters failed")


def _sums(batch: list[_Charge]) -> tuple[dict[tuple[int, str], int], dict[tuple[str, int], int]]:
    """The batch's spend per (team, month) and tokens per (scope, minute)."""
    spend: dict[tuple[int, str], int] = {}
    tokens: dict[tuple[str, int], int] = {}
    for item in batch:
        if item.units:
            spend[(item.team_id, item.month)] = spend.get((item.team_id, item.month), 0) + item.units
        for scope in item.tpm_scopes:
            tokens[(scope, item.minute)] = tokens.get((scope, item.minute), 0) + item.tokens
    return spend, tokens


def _team_name(session: Session, team_id: int) -> str:
    team = session.get(Team, team_id)
    return team.name if team is not None else str(team_id)


def _post_webhook(url: str, payload: dict[str, Any]) -> None:
    try:
        response = httpx.post(url, json=payload, timeout=WEBHOOK_TIMEOUT)
        if response.status_code >= 400:
            log.warning("budget alert webhook %s answered %s", url, response.status_code)
    except httpx.HTTPError as exc:
        log.warning("budget alert webhook %s failed: %s", url, exc)

"""Usage records: one per request, written in batches by a thread off the request path.

A failed write is retried; ``close()`` drains the queue before returning, or gives up after ``GIVE_UP_SECONDS`` of a
failing database (the journal, :mod:`tunegate.registry.journal`, keeps those records for the next start).
A record on its way is a :class:`Usage`, a plain object with the columns of ``usage_record``
(:class:`tunegate.registry.models.UsageRecord`, the table reports read): the request path builds one per request
for about 0.5 µs of CPU, where an ORM instance costs about 45 µs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Connection, Table, insert
from sqlalchemy.engine import Engine
from sqlmodel import Session

from tunegate.registry.fastpath.usage import SqliteUsageInsert
from tunegate.registry.models import UsageRecord

log = logging.getLogger("tunegate.usage")

TABLE: Table = UsageRecord.__table__  # type: ignore[attr-defined]
GIVE_UP_SECONDS = 5.0  # at shutdown, how long a failing database is retried before the records are left


@dataclass(slots=True)
class Usage:
    """One request's usage (or one fine-tuning job's training), as its ``usage_record`` row will hold it."""

    created_at: datetime  # aware, UTC
    day: date
    request_id: str
    endpoint: str
    team_id: int
    alias: str
    upstream: str
    model: str
    served_by: str  # model | fallback | canary | training
    status_code: int
    latency_ms: float
    key_id: int | None = None
    end_user: str | None = None  # the request's `user`
    request_metadata: dict[str, str] | None = None  # the request's `metadata`, only the keys kept (kept_metadata)
    kind: str = "inference"  # inference | training
    alias_version: int | None = None
    canary_weight: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    injected_tokens: int = 0
    saved_tokens: int = 0
    ttft_ms: float | None = None
    partial: bool = False
    cost_usd: Decimal | None = None  # None until costed (tunegate.registry.costing), before the record is stored
    priced: bool = True


COLUMNS = tuple(field.name for field in fields(Usage))

MAX_USER = 256  # characters of a request's `user` kept
MAX_METADATA_VALUE = 512  # characters of a metadata value kept (OpenAI's own limit on a request)


def kept_user(user: object) -> str | None:
    """The request's ``user`` as its record keeps it: a string, its first 256 characters; anything else: none."""
    return user[:MAX_USER] if isinstance(user, str) and user else None


def kept_metadata(metadata: object, keys: Collection[str]) -> dict[str, str] | None:
    """The request's ``metadata`` as its record keeps it: only ``keys`` (the config's ``usage.metadata_keys``, at
    most 16), each value a string of at most 512 characters (a number or boolean written as text); none: None."""
    if not keys or not isinstance(metadata, dict):
        return None
    kept = {}
    for key in keys:
        value = metadata.get(key)
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        if isinstance(value, str):
            kept[key] = value[:MAX_METADATA_VALUE]
    return kept or None


def insert_usage(db: Session | Connection, records: Sequence[Usage]) -> None:
    """The records as rows of ``usage_record``, in one multi-row INSERT (in ``db``'s transaction)."""
    db.execute(insert(TABLE), [{name: getattr(record, name) for name in COLUMNS} for record in records])


class UsageWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 200,
        before_write: Callable[[Sequence[Usage]], None] | None = None,
        after_write: Callable[[Sequence[Usage]], None] | None = None,
    ) -> None:
        self._engine = engine
        self._interval = flush_interval
        self._batch_size = batch_size
        self._before_write = before_write  # e.g. costing, done here so the request path does not pay for it
        self._after_write = after_write
        # Records wait in a list; the thread is woken when a batch is full or at stop, else it sleeps until the
        # flush interval ends (a wake per record costs the event loop a GIL hand-over per request).
        self._waiting: list[Usage] = []
        self._wake = threading.Condition(threading.Lock())
        self._stopping = False
        self._give_up_at = float("inf")
        self._gave_up = False
        self._thread = threading.Thread(target=self._run, name="tunegate-usage-writer", daemon=True)
        self._pending = 0
        self.written = 0
        self._sqlite = SqliteUsageInsert(engine) if engine.dialect.name == "sqlite" else None  # the writer's own

    @property
    def pending(self) -> int:
        """Records handed in and not yet committed."""
        return self._pending

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: Usage) -> None:
        with self._wake:
            self._pending += 1
            self._waiting.append(record)
            if len(self._waiting) >= self._batch_size:
                self._wake.notify()

    def close(self, timeout: float = 30.0, *, give_up_after: float = GIVE_UP_SECONDS) -> None:
        """Write everything submitted so far, then stop; if the database fails for ``give_up_after`` seconds,
        stop anyway and log how many records were not written (the journal keeps them for the next start)."""
        with self._wake:
            self._stopping = True
            self._give_up_at = time.monotonic() + give_up_after
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(min(timeout, give_up_after + 1.0))
        if self._thread.is_alive():
            log.error("%d usage records were not written at shutdown (the database does not answer)", self._pending)
        if self._sqlite is not None and not self._thread.is_alive():
            self._sqlite.close()

    def _run(self) -> None:
        deadline = time.monotonic() + self._interval
        while True:
            with self._wake:
                while not self._stopping and len(self._waiting) < self._batch_size:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                batch, self._waiting = self._waiting[: self._batch_size], self._waiting[self._batch_size :]
                stopping = self._stopping and not self._waiting
            if time.monotonic() >= deadline:
                deadline = time.monotonic() + self._interval
            if batch:
                self._write(batch)
            if stopping or self._gave_up:
                return

    def _write(self, batch: list[Usage]) -> None:
        attempt = 0
        while True:
            try:
                if self._before_write is not None:
                    self._before_write(batch)
                if self._sqlite is not None:
                    self._sqlite(batch)
                else:
                    with self._engine.begin() as connection:
                        insert_usage(connection, batch)
                break
            except Exception:
                attempt += 1
                log.exception("writing %d usage records failed (attempt %d); retrying", len(batch), attempt)
                if self._stopping and time.monotonic() >= self._give_up_at:
                    with self._wake:
                        lost, self._waiting = len(batch) + len(self._waiting), []
                    log.error(
                        "giving up on %d usage records at shutdown: the database is unreachable "
                        "(those journaled are written at the next start)",
                        lost,
                    )
                    self._gave_up = True
                    return
                pause = min(5.0, 0.2 * 2**attempt)
                if self._stopping:
                    pause = max(0.0, min(pause, self._give_up_at - time.monotonic()))
                with self._wake:  # a stop wakes the wait early
                    if not self._stopping or pause:
                        self._wake.wait(pause)
        with self._wake:
            self._pending -= len(batch)
            self.written += len(batch)
        if self._after_write is not None:
            self._after_write(batch)

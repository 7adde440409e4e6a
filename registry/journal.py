"""The usage journal: each usage record appended to a local file before its answer is sent, so that no answered
request goes uncounted when the process dies (SIGKILL) or the database is down at shutdown.

A process writes segments of its own (``usage-<pid>-<start>-<n>.jsonl``, held with ``flock``); a record's line
is followed by marks once the usage writer has stored it (``w``) and the budgets have charged it (``c``). A
segment whose records are all stored and charged is deleted. On start, :func:`replay` stores and charges what
segments left by earlier processes hold and the database lacks, once (by request id), then deletes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.engine import Engine, make_url

from tunegate.config import Settings
from tunegate.registry.costing import to_e8
from tunegate.registry.counters import charge, month_of
from tunegate.registry.models import UsageRecord
from tunegate.registry.usage import COLUMNS, Usage, insert_usage

log = logging.getLogger("tunegate.journal")

SEGMENT_BYTES = 1 << 20  # a segment this large is left for a new one (and deleted once its records are done)
REPLAY_BATCH = 500  # records stored and charged in one transaction at replay
_PATTERN = "usage-*.jsonl"


def journal_directory(settings: Settings) -> Path:
    """``usage.journal_dir``, or by default beside the SQLite file (``<file>.usage-journal``), else (PostgreSQL,
    SQLite in memory) a directory of the temporary directory named after the database (host, port, name)."""
    if settings.usage.journal_dir is not None:
        return Path(settings.usage.journal_dir)
    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        database = Path(url.database)
        return database.with_name(database.name + ".usage-journal")
    where = f"{url.get_backend_name()}://{url.host or ''}:{url.port or ''}/{url.database or ''}"
    return Path(tempfile.gettempdir()) / f"tunegate-journal-{hashlib.sha256(where.encode()).hexdigest()[:16]}"


def _default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


@dataclass(eq=False)
class _Segment:
    path: Path
    fd: int
    size: int = 0
    open_ids: set[str] = field(default_factory=set)  # records not yet both stored and charged


@dataclass(slots=True)
class _Entry:
    segment: _Segment
    stored: bool = False
    charged: bool = False


class Journal:
    """One process's journal: :meth:`append` on the request path (one ``os.write``, no fsync), :meth:`stored` and
    :meth:`charged` from the writer and the charger once their transactions commit. Thread-safe.

    A directory that cannot be written (full disk, read-only, permissions) does not fail a call: the error is
    logged once (and again once it writes again), counted in :attr:`failures`, and the record goes on unjournaled.
    """

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        self.failures = 0  # records that could not be appended
        self._lock = threading.Lock()
        self._start = secrets.token_hex(4)  # several journals in one process (tests) never share a file
        self._pid = 0
        self._number = 0
        self._current: _Segment | None = None
        self._segments: list[_Segment] = []
        self._entries: dict[str, _Entry] = {}
        self._failing = False
        self._closed = False  # marks after close are dropped (a thread outliving the stop; its fds are closed)

    @property
    def open_records(self) -> int:
        """Records appended and not yet both stored and charged."""
        return len(self._entries)

    def append(self, record: Usage) -> None:
        """Append ``record`` (costed): in the kernel's page cache when this returns, whatever then kills the process."""
        line = b"\n" + orjson.dumps({"r": record}, default=_default)  # a torn line ends at the next one's start
        with self._lock:
            try:
                segment = self._segment()
                os.write(segment.fd, line)
            except OSError as exc:
                self.failures += 1
                if not self._failing:
                    self._failing = True
                    log.error(
                        "the usage journal cannot be written (%s): records are kept in memory only until stored", exc
                    )
                return
            if self._failing:
                self._failing = False
                log.warning("the usage journal %s is written again", self.directory)
            segment.size += len(line)
            entry = _Entry(segment, charged=not record.cost_usd or not to_e8(record.cost_usd))
            segment.open_ids.add(record.request_id)
            self._entries[record.request_id] = entry

    def stored(self, request_ids: Iterable[str]) -> None:
        """The usage writer committed these records."""
        self._mark(request_ids, "w")

    def charged(self, request_ids: Iterable[str]) -> None:
        """The budgets committed these records' charges."""
        self._mark(request_ids, "c")

    def close(self) -> None:
        """Close the segments (the ones with records not stored or not charged stay, for the next start)."""
        with self._lock:
            self._closed = True
            for segment in self._segments:
                if not segment.open_ids:
                    _unlink(segment.path)
                os.close(segment.fd)
            self._segments, self._current = [], None

    def _segment(self) -> _Segment:
        current = self._current
        if current is None or current.size >= self._segment_bytes or self._pid != os.getpid():
            if self._pid != os.getpid():  # a forked child starts a journal of its own
                self._pid, self._segments, self._entries = os.getpid(), [], {}
            self.directory.mkdir(parents=True, exist_ok=True)
            self._number += 1
            path = self.directory / f"usage-{self._pid}-{self._start}-{self._number:06d}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a replay leaves a held segment alone
            current = self._current = _Segment(path, fd)
            self._segments.append(current)
            self._drop_done()
        return current

    def _mark(self, request_ids: Iterable[str], kind: str) -> None:
        with self._lock:
            if self._closed:
                return
            by_segment: dict[_Segment, list[str]] = defaultdict(list)
            for request_id in request_ids:
                entry = self._entries.get(request_id)
                if entry is None:  # not journaled (the journal failed, or nothing to charge)
                    continue
                if kind == "w":
                    entry.stored = True
                else:
                    entry.charged = True
                by_segment[entry.segment].append(request_id)
                if entry.stored and entry.charged:
                    del self._entries[request_id]
                    entry.segment.open_ids.discard(request_id)
            for segment, ids in by_segment.items():
                if segment is self._current or segment.open_ids:  # a done segment needs no marks: it goes
                    line = b"\n" + orjson.dumps({kind: ids})
                    try:
                        os.write(segment.fd, line)
                        segment.size += len(line)
                    except OSError as exc:
                        log.warning("a mark in the usage journal could not be written: %s", exc)
            self._drop_done()

    def _drop_done(self) -> None:
        kept = []
        for segment in self._segments:
            if segment is not self._current and not segment.open_ids:
                _unlink(segment.path)
                os.close(segment.fd)
            else:
                kept.append(segment)
        self._segments = kept


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@dataclass(frozen=True)
class Replayed:
    """What :func:`replay` found: records in the segments, stored now, and charged now."""

    segments: int = 0
    records: int = 0
    inserted: int = 0
    charged: int = 0
    unreadable: int = 0  # lines that were not a record or a mark (a line torn by a full disk)


def _usage(fields: dict[str, Any]) -> Usage:
    values = {name: fields[name] for name in COLUMNS if name in fields}
    values["created_at"] = datetime.fromisoformat(values["created_at"])
    values["day"] = date.fromisoformat(values["day"])
    if values.get("cost_usd") is not None:
        values["cost_usd"] = Decimal(values["cost_usd"])
    return Usage(**values)


def _read(paths: Sequence[Path]) -> tuple[dict[str, Usage], set[str], set[str], int]:
    records: dict[str, Usage] = {}
    stored: set[str] = set()
    charged: set[str] = set()
    unreadable = 0
    for path in paths:
        for line in path.read_bytes().split(b"\n"):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
                if "r" in item:
                    record = _usage(item["r"])
                    records.setdefault(record.request_id, record)
                else:
                    (stored if "w" in item else charged).update(item.get("w") or item["c"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                unreadable += 1
    return records, stored, charged, unreadable


def replay(engine: Engine, directory: Path) -> Replayed:
    """Store and charge what earlier processes' segments in ``directory`` hold, then delete them.

    A record whose request id ``usage_record`` already has is not stored again; its cost is charged only if its
    segment has no charge mark and a store mark (the writer stored it and the charge was lost); a record stored
    here is charged, in the same transaction, unless its segment marks it charged. Segments another live
    process holds are left alone. Running it twice stores and charges nothing twice.
    """
    if not directory.is_dir():
        return Replayed()
    held: list[tuple[Path, int]] = []
    try:
        for path in sorted(directory.glob(_PATTERN)):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live process's segment
                os.close(fd)
                continue
            if os.fstat(fd).st_nlink == 0:  # replayed and deleted by another start while this one waited
                os.close(fd)
                continue
            held.append((path, fd))
        if not held:
            return Replayed()
        records, stored, charged, unreadable = _read([path for path, _ in held])
        inserted = charged_now = 0
        pending = list(records.values())
        for start in range(0, len(pending), REPLAY_BATCH):
            batch = pending[start : start + REPLAY_BATCH]
            with engine.begin() as connection:
                column = UsageRecord.__table__.c.request_id  # type: ignore[attr-defined]
                present = set(
                    connection.execute(select(column).where(column.in_([r.request_id for r in batch]))).scalars()
                )
                new = [r for r in batch if r.request_id not in present]
                if new:
                    insert_usage(connection, new)
                spend: dict[tuple[int, str], int] = defaultdict(int)
                for record in batch:
                    units = to_e8(record.cost_usd) if record.cost_usd else 0
                    owed = record.request_id not in present or record.request_id in stored
                    if units and owed and record.request_id not in charged:
                        spend[(record.team_id, month_of(record.day))] += units
                        charged_now += 1
                if spend:
                    charge(db=connection, spend=spend, tokens={})
                    if connection.dialect.name == "postgresql":  # the charge's quick commit: not for these rows
                        connection.execute(text("SET LOCAL synchronous_commit TO ON"))
            inserted += len(new)
        for path, _ in held:
            _unlink(path)
    finally:
        for _, fd in held:
            os.close(fd)
    found = Replayed(len(held), len(records), inserted, charged_now, unreadable)
    log.warning(
        "usage journal %s: %d records from %d segments of earlier processes, %d stored now (%d were stored "
        "already), %d charged now%s",
        directory,
        found.records,
        found.segments,
        found.inserted,
        found.records - found.inserted,
        found.charged,
        f", {unreadable} unreadable lines skipped" if unreadable else "",
    )
    return found

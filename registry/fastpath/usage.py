"""The usage writer's insert on SQLite (:func:`tunegate.registry.usage.insert_usage` without SQLAlchemy's per-call
layers): a batch of records as ``usage_record`` rows, on a DBAPI connection of its own."""

from __future__ import annotations

import time
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from sqlalchemy import Table, bindparam, insert
from sqlalchemy.engine import Engine

from tunegate.registry.db import sqlite_write_lock
from tunegate.registry.fastpath.prepared import Prepared
from tunegate.registry.models import UsageRecord

_TABLE: Table = UsageRecord.__table__  # type: ignore[attr-defined]
# A record has an attribute for each column of its row but the id (tunegate.registry.usage.Usage;
# tests/unit/test_costing.py holds the two equal). Named here, not imported: tunegate.registry.usage's writer imports
# this module.
_COLUMNS = tuple(column.name for column in _TABLE.columns if not column.primary_key)


class SqliteUsageInsert:
    """SQLite only: :func:`~tunegate.registry.usage.insert_usage` on a DBAPI connection of its own, with the bind
    processing SQLAlchemy would do (:class:`~tunegate.registry.fastpath.prepared.Prepared`), applied only to the columns
    that need it (dates, times, decimals, booleans), and the batch in a few multi-row INSERTs: a step of SQLite each,
    run without the GIL. (``executemany`` gives the GIL up and takes it back for every row, and the event loop pays a
    thread hand-over each time: measured, +1.2 ms at p99.)"""

    MAX_ROWS = 256  # a statement's rows: a power of two, within SQLite's 32,766 parameters
    YIELD_ROWS = 16  # rows converted (~5 µs each) between two chances for another thread to take the GIL

    def __init__(self, engine: Engine) -> None:
        self._row = Prepared(insert(_TABLE).values({name: bindparam(name) for name in _COLUMNS}), engine.dialect)
        # One statement per power of two (1, 2, 4 … 256 rows), each prepared once by the driver's statement
        # cache: a batch of 200 is 128 + 64 + 8 rows, and nine statements cover every batch.
        self._sql = {rows: self._row.rows_sql(rows) for rows in (2**n for n in range(9))}
        self._get = attrgetter(*self._row.names)
        self._raw = engine.raw_connection()
        # Inserts touch the tail of the table and a leaf of each index: a page cache of 512 KiB holds what they
        # reuse (SQLite's default of 2 MiB fills with leaves of the request-id index, read once each).
        self._raw.driver_connection.execute("PRAGMA cache_size=-512")  # type: ignore[union-attr]
        self._lock = sqlite_write_lock(engine)

    def __call__(self, records: Sequence[object]) -> None:
        """Insert ``records`` (:class:`tunegate.registry.usage.Usage`) and commit, or roll back and raise."""
        statements = []
        start = 0
        while start < len(records):  # converted before the write lock is taken
            rows = min(self.MAX_ROWS, 1 << ((len(records) - start).bit_length() - 1))
            statements.append((self._sql[rows], self._values(records[start : start + rows])))
            start += rows
        connection: Any = self._raw.driver_connection
        with self._lock:
            try:
                for sql, values in statements:
                    connection.execute(sql, values)
                connection.commit()
            except BaseException:
                connection.rollback()
                raise

    def _values(self, records: Sequence[object]) -> list[Any]:
        values: list[Any] = []
        for number, record in enumerate(records, 1):
            values += self._row.row(list(self._get(record)))
            if not number % self.YIELD_ROWS:
                time.sleep(0)  # let a waiting event loop have the GIL (else it waits up to 5 ms)
        return values

    def close(self) -> None:
        self._raw.close()

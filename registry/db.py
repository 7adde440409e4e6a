"""Engines, sessions and schema migrations (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 7_262_023  # pg_advisory_lock key: one replica migrates at a time


_WRITE_LOCKS: dict[str, threading.Lock] = {}


def sqlite_write_lock(engine: Engine) -> threading.Lock:
    """The lock this process's hot writers (usage writer, charger) take around a SQLite write transaction.

    SQLite lets one connection write at a time; one that finds the file locked sleeps in its busy handler (1, 2,
    5 ms…) and retries. Between threads of one process this lock hands the turn over at once instead (other
    processes still meet the busy handler), and lets the event loop see the file busy without trying it.
    """
    return _WRITE_LOCKS.setdefault(str(engine.url), threading.Lock())


def normalize_url(url: str) -> str:
    """``postgresql://`` (what users write) → the psycopg 3 driver SQLAlchemy needs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets several gateway processes read while one writes. synchronous=NORMAL (SQLite's advice for
            # WAL) syncs at checkpoints, not at every commit: a crashed process loses nothing it committed, a power
            # cut may lose the last commits; the file is never corrupted. Production runs on PostgreSQL.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back whole if it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe when several replicas start at once."""
    # Imported here: Alembic is 11 MiB a worker process that does not migrate (`serve --workers N`) never needs.
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False

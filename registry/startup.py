"""Preparing the database for a serving process in a child process started first thing, while it imports.

The child migrates the schema and applies the configured file (:func:`registry.bootstrap.prepare_database`);
meanwhile the serving process imports what it serves with, so on two cores it is ready ~0.5 s sooner than
importing first and preparing after; and it never imports Alembic and the migrations (11 MiB it would hold for
nothing). This module imports nothing heavy, so that the child starts at once.
"""

from __future__ import annotations

import multiprocessing
import sys

from config import Settings

PREPARE_FAILED = 3  # exit code of a start whose database could not be prepared (uvicorn's for a failed start)


class PreparingApart:
    """The child, started on construction; :meth:`wait` for its exit code (0: the database is ready)."""

    def __init__(self, settings: Settings) -> None:
        self._child = multiprocessing.get_context("spawn").Process(
            target=_prepare_in_child, args=(settings,), name="tunegate-prepare"
        )
        self._child.start()

    def wait(self) -> int:
        self._child.join()
        return PREPARE_FAILED if self._child.exitcode is None else self._child.exitcode


def _prepare_in_child(settings: Settings) -> None:
    from registry.bootstrap import prepare_database
    from registry.db import make_engine

    engine = make_engine(settings.database.url)
    try:
        prepare_database(engine, settings)
    except Exception as exc:
        print(f"tunegate: preparing the database failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(PREPARE_FAILED) from None
    finally:
        engine.dispose()

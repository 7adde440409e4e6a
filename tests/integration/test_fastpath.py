"""The fast path (tunegate.registry.fastpath) writes and reads exactly what SQLAlchemy's path does, on each database of
the run: usage records stored by the usage writer and its SQLite insert against
``tunegate.registry.usage.insert_usage``, and charges made by ``tunegate.registry.fastpath.counters`` against
``tunegate.registry.counters.charge``, read back column by column."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Table, select, text
from sqlalchemy.engine import Engine

from tunegate.registry.counters import charge, spent_e8, team_scope
from tunegate.registry.db import make_engine, migrate, session_scope
from tunegate.registry.fastpath.counters import PgCounters, SqliteCounters, pg_counters, sqlite_counters
from tunegate.registry.fastpath.usage import SqliteUsageInsert
from tunegate.registry.models import RateCounter, TeamSpend, UsageRecord, utcnow
from tunegate.registry.teams import create_key, create_team
from tunegate.registry.usage import Usage, UsageWriter, insert_usage

USAGE: Table = UsageRecord.__table__  # type: ignore[attr-defined]
SHANGHAI = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def engine(own_database_url: str) -> Iterator[Engine]:
    engine = make_engine(own_database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def new_team(engine: Engine, name: str) -> tuple[int, int]:
    """A team and a key of it: their ids."""
    with session_scope(engine) as session:
        team = create_team(session=session, name=name)
        _, key = create_key(session=session, team=team)
        assert team.id is not None and key.id is not None
        return team.id, key.id


def records(prefix: str, team_id: int, key_id: int) -> list[Usage]:
    """Seven records (a 4-, a 2- and a 1-row statement on SQLite's fast path) with every kind of value a row holds:
    aware datetimes in and out of UTC, dates, Decimals, floats, bools both ways, None, non-ASCII text."""
    inference = Usage(
        created_at=datetime(2026, 11, 3, 9, 15, 30, 123456, tzinfo=UTC),
        day=date(2026, 11, 3),
        request_id="",
        endpoint="chat.completions",
        team_id=team_id,
        key_id=key_id,
        end_user="旅客-" + "x" * 250,  # 256 characters, the most kept
        request_metadata={"app": "登机口 kiosk", "feature": 'gates "D"'},
        alias="浦东-support",
        upstream="openai",
        model="ft:gpt-3.5-turbo-0613:pudong::8abc123",
        served_by="canary",
        status_code=200,
        latency_ms=12.5,
        alias_version=3,
        canary_weight=10,
        prompt_tokens=12,
        completion_tokens=7,
        cached_tokens=2,
        saved_tokens=31,
        ttft_ms=None,
        partial=True,
        cost_usd=Decimal("0.00008100"),
        priced=False,
    )
    shanghai = Usage(  # 2026-11-03 17:00 UTC, written in Shanghai's time
        created_at=datetime(2026, 11, 4, 1, 0, tzinfo=SHANGHAI),
        day=date(2026, 11, 3),
        request_id="",
        endpoint="embeddings",
        team_id=team_id,
        key_id=None,
        end_user="",
        request_metadata={},
        alias="登机口-问答",
        upstream="本地",
        model="text-embedding-3-small",
        served_by="fallback",
        status_code=502,
        latency_ms=0.125,
        injected_tokens=7,
        ttft_ms=3.75,
        cost_usd=Decimal("0E-8"),
    )
    training = Usage(
        created_at=datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        day=date(2026, 12, 31),
        request_id="",
        endpoint="fine_tuning.jobs",
        team_id=team_id,
        kind="training",
        alias="pudong-support",
        upstream="openai",
        model="gpt-3.5-turbo-0613",
        served_by="training",
        status_code=200,
        latency_ms=0.0,
        prompt_tokens=1_543_210,
        cost_usd=Decimal("12.34567891"),
        priced=True,
    )
    kinds = [inference, shanghai, training, inference, shanghai, training, inference]
    return [replace(record, request_id=f"{prefix}-{number}") for number, record in enumerate(kinds)]


def stored(engine: Engine, prefix: str) -> list[dict[str, Any]]:
    """The rows whose request id starts with ``prefix``, in the order written: every column but id and request id,
    read through SQLAlchemy's types."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(USAGE).where(USAGE.c.request_id.startswith(prefix)).order_by(USAGE.c.id)
        ).mappings()
        return [{k: v for k, v in row.items() if k not in ("id", "request_id")} for row in rows]


def stored_raw(engine: Engine, prefix: str) -> list[dict[str, Any]]:
    """The same rows as the database driver returns them: what the database holds (on SQLite a time is text, and
    two texts of one instant in different zones read back equal through SQLAlchemy, but sort apart)."""
    names = ", ".join(column.name for column in USAGE.columns if column.name not in ("id", "request_id"))
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT {names} FROM usage_record WHERE request_id LIKE :prefix ORDER BY id"),
            {"prefix": prefix + "%"},
        ).mappings()
        return [dict(row) for row in rows]


def assert_same_columns(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(got) == len(expected)
    for column in expected[0]:
        assert [row[column] for row in got] == [row[column] for row in expected], column


def assert_the_rows_users_see(rows: list[dict[str, Any]], key_id: int) -> None:
    """The figures of the first three rows as written (the SQLAlchemy path's, so the fast path's too)."""
    first, shanghai, training = rows[:3]
    assert first["created_at"] == datetime(2026, 11, 3, 9, 15, 30, 123456, tzinfo=UTC)
    assert first["created_at"].utcoffset() == timedelta(0)
    assert (first["day"], first["alias"], first["key_id"]) == (date(2026, 11, 3), "浦东-support", key_id)
    assert first["cost_usd"] == Decimal("0.00008100")
    assert (first["partial"], first["priced"], first["ttft_ms"], first["canary_weight"]) == (True, False, None, 10)
    assert (first["end_user"], first["request_metadata"]) == (
        "旅客-" + "x" * 250,
        {"app": "登机口 kiosk", "feature": 'gates "D"'},
    )
    assert (shanghai["end_user"], shanghai["request_metadata"], training["end_user"]) == ("", {}, None)
    assert training["request_metadata"] is None
    assert shanghai["created_at"] == datetime(2026, 11, 3, 17, 0, tzinfo=UTC)
    assert (shanghai["alias"], shanghai["upstream"], shanghai["key_id"]) == ("登机口-问答", "本地", None)
    assert (shanghai["latency_ms"], shanghai["ttft_ms"], shanghai["cost_usd"]) == (0.125, 3.75, Decimal(0))
    assert (shanghai["partial"], shanghai["priced"]) == (False, True)
    assert training["created_at"] == datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert (training["kind"], training["prompt_tokens"], training["cost_usd"]) == (
        "training",
        1_543_210,
        Decimal("12.34567891"),
    )


def test_the_usage_writer_stores_what_insert_usage_stores(engine: Engine) -> None:
    """The usage writer's path: on SQLite its own insert (tunegate.registry.fastpath.usage), on PostgreSQL
    SQLAlchemy's."""
    team_id, key_id = new_team(engine, "written-by-the-writer")
    with engine.begin() as connection:
        insert_usage(connection, records("core-w", team_id, key_id))
    writer = UsageWriter(engine, flush_interval=0.05)
    writer.start()
    for record in records("writer", team_id, key_id):
        writer.submit(record)
    writer.close()
    assert writer.written == 7
    expected = stored(engine, "core-w-")
    assert len(expected) == 7
    assert_the_rows_users_see(expected, key_id)
    assert_same_columns(stored(engine, "writer-"), expected)
    assert_same_columns(stored_raw(engine, "writer-"), stored_raw(engine, "core-w-"))


def test_the_sqlite_usage_insert_stores_what_insert_usage_stores(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite only: on PostgreSQL the usage writer inserts through SQLAlchemy")
    team_id, key_id = new_team(engine, "written-fast")
    with engine.begin() as connection:
        insert_usage(connection, records("core-f", team_id, key_id))
    fast = SqliteUsageInsert(engine)
    try:
        fast(records("fast", team_id, key_id))  # 4 + 2 + 1 rows
        fast(records("one", team_id, key_id)[:1])  # a one-row statement
    finally:
        fast.close()
    expected = stored(engine, "core-f-")
    assert_the_rows_users_see(expected, key_id)
    assert_same_columns(stored(engine, "fast-"), expected)
    assert_same_columns(stored_raw(engine, "fast-"), stored_raw(engine, "core-f-"))
    assert stored(engine, "one-") == expected[:1]
    assert stored_raw(engine, "one-") == stored_raw(engine, "core-f-")[:1]


def fast_counters(engine: Engine) -> list[SqliteCounters | PgCounters]:
    """What the gateway charges and reads with: on SQLite the charger's counters and the event loop's (which never
    wait), on PostgreSQL the charger's."""
    if engine.dialect.name == "sqlite":
        return [counters for counters in (sqlite_counters(engine), sqlite_counters(engine, wait=False)) if counters]
    return [counters for counters in (pg_counters(engine),) if counters]


# (units of 1e-8 USD by month, tokens by minute): the same charges for each team, one call at a time
CHARGES: list[tuple[dict[str, int], dict[int, int]]] = [
    ({"2026-11": 250}, {7: 30}),
    ({"2026-11": 1}, {}),  # one statement: on PostgreSQL in autocommit
    ({"2026-11": 99, "2026-12": 5}, {7: 5, 8: 11}),
    ({}, {9: 2}),  # tokens only
]


def spend_rows(engine: Engine, team_id: int) -> list[tuple[str, int, datetime]]:
    with engine.connect() as connection:
        found = connection.execute(
            select(TeamSpend.month, TeamSpend.spent_e8, TeamSpend.updated_at)  # type: ignore[call-overload]
            .where(TeamSpend.team_id == team_id)
            .order_by(TeamSpend.month)
        )
        return [(month, units, updated) for month, units, updated in found]


def spend_times_raw(engine: Engine, team_id: int) -> list[str]:
    """The shape of each ``updated_at`` of the team's spend rows as the database holds it, digits as 0: the same
    shape from both paths, or a row written in another format (text on SQLite) that sorts apart."""
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT updated_at FROM team_spend WHERE team_id = :team ORDER BY month"), {"team": team_id}
        )
        return [f"{type(value).__name__}:{re.sub(r'[0-9]', '0', str(value))}" for (value,) in found]


def counter_rows(engine: Engine, scope: str) -> list[tuple[int, int, int]]:
    with engine.connect() as connection:
        found = connection.execute(
            select(RateCounter.minute, RateCounter.requests, RateCounter.tokens)  # type: ignore[call-overload]
            .where(RateCounter.scope == scope)
            .order_by(RateCounter.minute)
        )
        return [(minute, requests, tokens) for minute, requests, tokens in found]


def test_charges_on_the_fast_path_leave_the_rows_and_totals_sqlalchemys_do(engine: Engine) -> None:
    for number, counters in enumerate(fast_counters(engine)):
        core_team, _ = new_team(engine, f"charged-by-core-{number}")
        fast_team, _ = new_team(engine, f"charged-fast-{number}")
        try:
            for spend, tokens in CHARGES:
                with engine.begin() as connection:
                    core = charge(
                        db=connection,
                        spend={(core_team, month): units for month, units in spend.items()},
                        tokens={(team_scope(core_team), minute): count for minute, count in tokens.items()},
                    )
                fast = counters.charge(
                    {(fast_team, month): units for month, units in spend.items()},
                    {(team_scope(fast_team), minute): count for minute, count in tokens.items()},
                )
                assert fast is not None, "the database was free: nothing else writes"
                assert {month: units for (_, month), units in fast.items()} == {
                    month: units for (_, month), units in core.items()
                }
            for team in (core_team, fast_team):
                spent = spend_rows(engine, team)
                assert [(month, units) for month, units, _ in spent] == [("2026-11", 350), ("2026-12", 5)]
                for _, _, updated in spent:
                    assert updated.utcoffset() == timedelta(0) and abs(updated - utcnow()) < timedelta(minutes=1)
                assert counter_rows(engine, team_scope(team)) == [(7, 0, 35), (8, 0, 11), (9, 0, 2)]
                # both reads, of both paths' rows, and of a month with no row
                for month, units in (("2026-11", 350), ("2026-12", 5), ("2027-01", 0)):
                    with engine.connect() as connection:
                        assert spent_e8(db=connection, team_id=team, month=month) == units
                    assert counters.spent_e8(team, month) == units
                    if isinstance(counters, SqliteCounters):
                        assert counters.spent_e8_now(team, month) == units
            assert spend_times_raw(engine, fast_team) == spend_times_raw(engine, core_team)
            # a row charged by both paths adds up
            assert counters.charge({(core_team, "2026-11"): 50}, {}) == {(core_team, "2026-11"): 400}
            with engine.begin() as connection:
                assert charge(db=connection, spend={(fast_team, "2026-11"): 25}, tokens={}) == {
                    (fast_team, "2026-11"): 375
                }
            assert counters.spent_e8(fast_team, "2026-11") == 375
        finally:
            counters.close()

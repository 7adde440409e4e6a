"""The usage journal's segment files: rotated, deleted once every record in them is stored and charged, kept for
the next start otherwise, and left alone by a replay while their process holds them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson

from tunegate.registry.db import make_engine
from tunegate.registry.journal import Journal, replay
from tunegate.registry.usage import Usage


def usage(number: int, cost: str = "0.00012300") -> Usage:
    now = datetime.now(UTC)
    return Usage(
        created_at=now,
        day=now.date(),
        request_id=f"req_{number:04d}",
        endpoint="chat.completions",
        team_id=1,
        alias="pudong-support",
        upstream="fake",
        model="gpt-4o-mini",
        served_by="model",
        status_code=200,
        latency_ms=12.5,
        prompt_tokens=31,
        completion_tokens=17,
        cost_usd=Decimal(cost),
    )


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().split(b"\n") if line]


def test_segments_rotate_and_go_once_their_records_are_stored_and_charged(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=4096)
    records = [usage(n) for n in range(40)]
    for record in records:
        journal.append(record)
    first = sorted(tmp_path.iterdir())
    assert len(first) > 3  # about 600 bytes a record: a new segment every 7
    assert lines(first[0])[0]["r"]["request_id"] == "req_0000"  # type: ignore[index]

    done = [r.request_id for r in records[:30]]
    journal.stored(done)
    assert sorted(tmp_path.iterdir()) == first  # stored, not yet charged: every segment stays
    journal.charged(done)
    left = sorted(tmp_path.iterdir())
    assert left == [path for path in first if path.name >= left[0].name] and len(left) < len(first)
    assert journal.open_records == 10
    kept = {r["r"]["request_id"] for path in left for r in lines(path) if "r" in r}  # type: ignore[index]
    assert {f"req_{n:04d}" for n in range(30, 40)} <= kept

    # A replay leaves the segments a live journal holds alone (and never reaches the database).
    engine = make_engine(f"sqlite:///{tmp_path / 'unused.db'}")
    assert replay(engine, tmp_path).segments == 0
    engine.dispose()

    journal.stored([r.request_id for r in records[30:]])
    journal.charged([r.request_id for r in records[30:]])
    journal.close()
    assert list(tmp_path.iterdir()) == []  # nothing left for the next start (the database was never opened)


def test_a_free_record_needs_no_charge_and_a_closed_journal_keeps_what_is_open(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(usage(1, cost="0"))  # nothing to charge: stored is enough
    journal.append(usage(2))
    journal.stored(["req_0001", "req_0002"])
    assert journal.open_records == 1
    journal.close()
    (segment,) = tmp_path.iterdir()
    assert [next(iter(line)) for line in lines(segment)] == ["r", "r", "w"]

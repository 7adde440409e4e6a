"""The usage journal: `tunegate serve` killed right after answering (SIGKILL), or stopped while its database is
unreachable (SIGTERM), loses no usage record and charges none twice; the next start stores and charges them."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import psycopg
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import make_url
from sqlmodel import Session, select

from tests.utils.databases import postgres_database
from tests.utils.gateways import ADMIN_KEY, gateway_yaml
from tests.utils.processes import Served, serve_tunegate
from tests.utils.servers import free_port
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tunegate.registry.db import make_engine
from tunegate.registry.models import TeamSpend, UsageRecord

pytestmark = pytest.mark.slow  # `tunegate serve` as a subprocess, killed and started again
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "登机口什么时候关闭?"}]
CHATS = 12


@pytest.fixture
def fresh_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the run's kind for one test."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'tunegate.db'}"
        return
    yield from postgres_database(os.environ["TUNEGATE_TEST_DATABASE_URL"])


@contextmanager
def gateway(
    database_url: str, upstream: FakeUpstreamHandle, tmp_path: Path, journal: Path | None = None
) -> Iterator[Served]:
    """`tunegate serve` whose writer would hold records for 30 s (a kill finds them all unwritten), with its
    journal in ``journal`` (default: ``tmp_path``/journal)."""
    config = tmp_path / "tunegate.yaml"
    yaml = gateway_yaml(database_url, upstream.base_url).replace(
        "usage: {flush_interval: 0.05}",
        f'usage: {{flush_interval: 30, journal_dir: "{journal or tmp_path / "journal"}"}}',
    )
    assert "journal_dir" in yaml
    config.write_text(yaml, encoding="utf-8")
    env = {"TUNEGATE_ADMIN_KEY": ADMIN_KEY, "TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    with serve_tunegate(["--config", str(config)], port=free_port(), cwd=tmp_path, env=env) as served:
        yield served


def admin(served: Served, method: str, path: str, body: dict[str, object]) -> dict[str, object]:
    answer = httpx.request(
        method, served.url + path, json=body, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    assert answer.status_code in (200, 201), answer.text
    result: dict[str, object] = answer.json()
    return result


def chats(served: Served) -> dict[str, tuple[int, int]]:
    """CHATS chat completions of airport-cs (given a budget, so each answer waits for its charge): the tokens
    the SDK was told, by request id."""
    admin(served, "PUT", "/admin/budgets/airport-cs", {"monthly_usd": "1000"})
    key = str(admin(served, "POST", "/admin/keys", {"team": "airport-cs", "name": "journal"})["key"])
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0)
    told = {}
    for _ in range(CHATS):
        raw = client.chat.completions.with_raw_response.create(model="pudong-support", messages=QUESTION)
        usage = raw.parse().usage
        assert usage is not None
        told[raw.headers["x-request-id"]] = (usage.prompt_tokens, usage.completion_tokens)
    return told


def stored(database_url: str) -> tuple[dict[str, tuple[int, int]], Decimal, Decimal]:
    """The usage records of airport-cs (tokens by request id), the sum of their costs, and the team's spend."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.exec(select(UsageRecord).where(UsageRecord.alias == "pudong-support")).all()
            spends = session.exec(select(TeamSpend)).all()
    finally:
        engine.dispose()
    tokens = {row.request_id: (row.prompt_tokens, row.completion_tokens) for row in rows}
    assert len(tokens) == len(rows), "a request id stored twice"
    return tokens, sum((row.cost_usd for row in rows), Decimal(0)), Decimal(sum(s.spent_e8 for s in spends)) / 10**8


def segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "journal").glob("usage-*.jsonl"))


def test_sigkill_after_answering_loses_no_record_and_a_second_replay_adds_nothing(
    fresh_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path: Path
) -> None:
    with gateway(fresh_database_url, fake_upstream, tmp_path) as served:
        told = chats(served)
        served.process.kill()  # at once after the last answer
        served.process.wait(10)
    # The writer had stored none of them (its flush interval is 30 s); the budget's charges were committed.
    before, _, spend_before = stored(fresh_database_url)
    assert before == {}
    assert spend_before > 0
    left = segments(tmp_path)
    assert left, "the killed process left no journal"
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in left:
        shutil.copy(path, kept / path.name)

    with gateway(fresh_database_url, fake_upstream, tmp_path) as served:
        records, cost, spend = stored(fresh_database_url)  # replayed before it answered /readyz
        assert records == told  # exactly the CHATS records, with the tokens the client was told
        assert cost > 0
        assert spend == cost  # charged once: before the kill, not again at the replay
        output = served.stop()
        assert served.process.returncode == 0, output
    assert f"usage journal {tmp_path / 'journal'}: {CHATS} records from" in output, output
    assert segments(tmp_path) == []  # replayed and deleted; this run's own were stored and charged

    # The same segments once more (a start that died before deleting them): nothing is stored or charged twice.
    for path in kept.iterdir():
        shutil.copy(path, tmp_path / "journal" / path.name)
    with gateway(fresh_database_url, fake_upstream, tmp_path) as served:
        output = served.stop()
    assert f"{CHATS} records from {len(left)} segments of earlier processes, 0 stored now ({CHATS} were stored " in (
        output
    ), output
    assert stored(fresh_database_url) == (told, cost, cost)
    assert segments(tmp_path) == []


@contextmanager
def unreachable(database_url: str) -> Iterator[None]:
    """The database refuses the gateway's writes: SQLite locked by another connection (BEGIN EXCLUSIVE), a
    PostgreSQL database closed to connections with the gateway's own ended."""
    if database_url.startswith("sqlite"):
        locker = sqlite3.connect(str(make_url(database_url).database), timeout=5, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        return
    name = make_url(database_url).database
    server = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            yield
        finally:
            connection.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


def test_sigterm_while_the_database_is_unreachable_exits_soon_and_the_next_start_stores_the_records(
    fresh_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path: Path
) -> None:
    with gateway(fresh_database_url, fake_upstream, tmp_path) as served:
        told = chats(served)
        with unreachable(fresh_database_url):
            started = time.monotonic()
            output = served.stop(timeout=30)
            took = time.monotonic() - started
        assert served.process.returncode == 0, output
    assert took < 10, f"the stop took {took:.1f}s"
    line = f"{CHATS} usage records could not be stored or charged before shutdown: they stay in the journal"
    assert line in output, output
    assert stored(fresh_database_url)[0] == {}
    assert segments(tmp_path)

    with gateway(fresh_database_url, fake_upstream, tmp_path) as served:
        records, cost, spend = stored(fresh_database_url)
        assert records == told
        assert spend == cost > 0
        served.stop()
    assert segments(tmp_path) == []


def test_a_journal_that_cannot_be_written_fails_no_call_and_is_logged_once(
    fresh_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the journal's directory would be", encoding="utf-8")
    with gateway(fresh_database_url, fake_upstream, tmp_path, journal=blocked) as served:
        told = chats(served)  # every answer a 200 (the SDK raises on anything else)
        output = served.stop()
        assert served.process.returncode == 0, output
    assert output.count("the usage journal cannot be written") == 1, output
    records, cost, spend = stored(fresh_database_url)
    assert records == told  # stored by the writer at the stop, as without a journal
    assert spend == cost > 0

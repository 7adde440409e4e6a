"""Budgets and rate limits held across gateway processes that share one database: two ``tunegate serve``
processes (and the in-process gateway the admin calls go to), the openai SDK as the client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from tests.integration.finance_support import FT_PUDONG, QUESTION, FinanceGateway, finance_gateway
from tests.utils.gateways import ADMIN_KEY
from tests.utils.openai_schema import validate
from tests.utils.processes import serve_tunegate
from tests.utils.servers import ServerThread, free_port
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tests.utils.waiting import eventually
from tunegate.registry.counters import charge, spent_e8
from tunegate.registry.db import make_engine, migrate, session_scope
from tunegate.registry.fastpath.counters import SqliteCounters
from tunegate.registry.fastpath.usage import SqliteUsageInsert
from tunegate.registry.models import RateCounter, TeamSpend, UsageRecord, utcnow
from tunegate.registry.teams import create_team
from tunegate.registry.usage import Usage, insert_usage

REQUEST_USD = 0.078  # a pudong-support request served by its fine-tune: 12 * $3000/M + 7 * $6000/M


class WebhookReceiver:
    """Collects the JSON bodies POSTed to it (a budget alert's webhook)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.posts.append(orjson.loads(body))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@dataclass
class Cluster:
    fin: FinanceGateway  # in-process: the admin API and the reports
    processes: list[str]  # base URLs of two `tunegate serve` processes on the same database
    webhook: WebhookReceiver
    webhook_url: str


@pytest.fixture(scope="module")
def cluster(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("finance-limits")
    env = {"TUNEGATE_ADMIN_KEY": ADMIN_KEY, "TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    with (
        finance_gateway(own_database_url, fake_upstream, tmp) as fin,
        ServerThread(receiver := WebhookReceiver()) as hook,
        ExitStack() as started,
    ):
        processes = [
            started.enter_context(serve_tunegate(["--config", str(fin.config)], port=free_port(), cwd=tmp, env=env))
            for _ in range(2)
        ]
        yield Cluster(fin, [served.url + "/v1" for served in processes], receiver, hook.url + "/alerts")


def sdk(base_url: str, key: str, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, **kwargs)


def early_in_a_minute(seconds_needed: int = 15) -> None:
    """Start a per-minute test with the window's end far enough away (waits at most a minute)."""
    eventually(
        lambda: datetime.now(UTC).second < 60 - seconds_needed,
        what=f"a minute with {seconds_needed}s left",
        timeout=61,
        interval=0.02,
    )


@pytest.mark.slow
def test_two_processes_stop_a_team_at_its_hard_limit_with_a_bounded_overshoot(
    cluster: Cluster, fake_upstream: FakeUpstreamHandle
) -> None:
    fin = cluster.fin
    team, key, _ = fin.new_team("budget")
    budget = fin.admin(
        "PUT",
        f"/admin/budgets/{team}",
        json={"monthly_usd": "0.78", "soft_pct": 50, "alert_webhook": cluster.webhook_url},
    )
    assert budget.status_code == 200, budget.text
    assert budget.json()["state"] == "ok"
    fake_upstream.fault(model=FT_PUDONG, delay_ms=100)  # slow answers: many requests are in flight at once

    workers_per_process = 4
    in_flight_at_most = 2 * workers_per_process
    served: list[str] = []
    refused: list[openai.RateLimitError] = []
    lock = threading.Lock()

    def worker(base_url: str) -> None:
        api = sdk(base_url, key)
        for _ in range(40):
            try:
                api.chat.completions.create(model="pudong-support", messages=QUESTION)
                with lock:
                    served.append(base_url)
            except openai.RateLimitError as exc:
                with lock:
                    refused.append(exc)
                break
        # Over the limit: every later request is refused, on either process.
        for later_url in cluster.processes:
            for _ in range(2):
                with pytest.raises(openai.RateLimitError) as later:
                    sdk(later_url, key).chat.completions.create(model="pudong-support", messages=QUESTION)
                with lock:
                    refused.append(later.value)

    threads = [
        threading.Thread(target=worker, args=(url,)) for url in cluster.processes for _ in range(workers_per_process)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    crossing = 10  # the 10th request brings the spend to $0.78: the limit
    assert crossing <= len(served) <= crossing + in_flight_at_most - 1, len(served)
    assert set(served) == set(cluster.processes)  # both processes served the team
    assert len(refused) == len(threads) * 5
    for error in refused:
        assert (error.status_code, error.code, error.type) == (429, "insufficient_quota", "insufficient_quota")
        validate(error.response.json(), "ErrorResponse")
        assert error.response.headers["x-should-retry"] == "false"

    # What was spent is exactly what was served, charged in full, and the budget says so.
    totals = fin.wait_for_requests(team, len(served))["totals"]
    spent = f"{len(served) * REQUEST_USD:.8f}"
    assert totals["cost_usd"] == spent
    (status,) = [b for b in fin.admin("GET", "/admin/budgets").json()["data"] if b["team"] == team]
    assert status == {
        "team": team,
        "month": datetime.now(UTC).strftime("%Y-%m"),
        "budget_usd": "0.78000000",
        "soft_threshold_pct": 50,
        "spent_usd": spent,
        "used_pct": round(len(served) * REQUEST_USD * 100 / 0.78, 2),
        "state": "hard",
        "alert_webhook": cluster.webhook_url,
    }

    # One alert per threshold, from whichever process crossed it first.
    def alerts() -> list[str] | None:
        events = sorted(p["event"] for p in cluster.webhook.posts if p["team"] == team)
        return events if len(events) >= 2 else None

    assert eventually(alerts, what=f"both alerts of {team}") == ["budget.hard_limit", "budget.soft_threshold"]
    soft = next(p for p in cluster.webhook.posts if p["team"] == team and p["event"] == "budget.soft_threshold")
    assert (soft["budget_usd"], soft["soft_threshold_pct"]) == ("0.78000000", 50)
    assert float(soft["spent_usd"]) >= 0.39


@pytest.mark.slow
def test_a_stream_that_overshoots_is_charged_in_full(cluster: Cluster) -> None:
    fin = cluster.fin
    team, key, _ = fin.new_team("stream")
    assert fin.admin("PUT", f"/admin/budgets/{team}", json={"monthly_usd": "0.05"}).status_code == 200
    stream = sdk(cluster.processes[0], key).chat.completions.create(
        model="pudong-support", messages=QUESTION, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Echo: Where is gate D?"  # not cut off at the limit

    def spent() -> str | None:
        rows = [b for b in fin.admin("GET", "/admin/budgets").json()["data"] if b["team"] == team]
        return rows[0]["spent_usd"] if rows and rows[0]["spent_usd"] != "0.00000000" else None

    assert eventually(spent, what=f"{team}'s charge") == "0.07800000"  # the whole request, past the $0.05 budget
    assert fin.wait_for_requests(team, 1)["totals"]["cost_usd"] == "0.07800000"
    for url in cluster.processes:
        with pytest.raises(openai.RateLimitError) as refused:
            sdk(url, key).chat.completions.create(model="pudong-support", messages=QUESTION)
        assert refused.value.code == "insufficient_quota"


@pytest.mark.slow
def test_charges_go_on_when_postgresql_drops_the_gateways_connections(cluster: Cluster) -> None:
    """On PostgreSQL the budget read and the charge use connections of their own, kept open
    (tunegate.registry.budgets.PgCounters): when the server drops them (a restart, a failover), the next request opens
    new ones and is answered and charged like any other."""
    fin = cluster.fin
    if fin.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no server to drop connections")
    team, key, _ = fin.new_team("dropped")
    assert fin.admin("PUT", f"/admin/budgets/{team}", json={"monthly_usd": "10"}).status_code == 200
    url = cluster.processes[0]
    sdk(url, key).chat.completions.create(model="pudong-support", messages=QUESTION)  # the connections are open
    with fin.engine.connect() as connection:
        dropped = connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%team_spend%'"
            )
        ).all()
    assert dropped, "the counters' connections were not found"
    for _ in range(2):
        answer = sdk(url, key).chat.completions.with_raw_response.create(model="pudong-support", messages=QUESTION)
        assert answer.status_code == 200

    def spent() -> str | None:
        rows = [b for b in fin.admin("GET", "/admin/budgets").json()["data"] if b["team"] == team]
        return rows[0]["spent_usd"] if rows and rows[0]["spent_usd"] == "0.23400000" else None

    assert eventually(spent, what=f"{team}'s three charges") == "0.23400000"  # three requests at $0.078, none lost
    assert fin.wait_for_requests(team, 3)["totals"]["cost_usd"] == "0.23400000"


@pytest.mark.slow
def test_an_answer_waits_for_its_charge_at_most_the_settle_timeout(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A team with a budget is answered once its charge is committed; when the database holds the charge back
    (another transaction has the team's spend row locked), the answer goes out after SETTLE_TIMEOUT anyway, and
    the charge is committed when the lock is gone: nothing is lost."""
    import tunegate.proxy.calls.budgets

    monkeypatch.setattr(tunegate.proxy.calls.budgets, "SETTLE_TIMEOUT", 0.5)
    fin = cluster.fin
    team, key, _ = fin.new_team("held")
    assert fin.admin("PUT", f"/admin/budgets/{team}", json={"monthly_usd": "10"}).status_code == 200
    client = sdk(fin.url + "/v1", key, timeout=10)  # the in-process gateway, whose timeout the test shortened
    client.chat.completions.create(model="pudong-support", messages=QUESTION)  # the team's spend row exists
    team_id = fin.admin("GET", f"/admin/teams/{team}").json()["id"]
    with fin.engine.connect() as holder:
        # An uncommitted write to the row: PostgreSQL locks the row, SQLite the file, until the rollback below.
        holder.execute(text("UPDATE team_spend SET spent_e8 = spent_e8 WHERE team_id = :t"), {"t": team_id})
        with caplog.at_level("WARNING", logger="tunegate.limits"):
            answer = client.chat.completions.with_raw_response.create(model="pudong-support", messages=QUESTION)
        assert answer.status_code == 200
        assert answer.parse().choices[0].message.content == "Echo: Where is gate D?"
        request_id = answer.headers["x-request-id"]
        assert f"the charge of {request_id} is not committed after 0.5s; answering anyway" in caplog.messages
        holder.rollback()

    def spent() -> str | None:
        rows = [b for b in fin.admin("GET", "/admin/budgets").json()["data"] if b["team"] == team]
        return rows[0]["spent_usd"] if rows and rows[0]["spent_usd"] == "0.15600000" else None

    assert eventually(spent, what=f"{team}'s two charges") == "0.15600000"  # both requests at $0.078
    assert fin.wait_for_requests(team, 2)["totals"]["cost_usd"] == "0.15600000"


@pytest.mark.slow
def test_requests_per_minute_across_processes_with_openai_headers(cluster: Cluster) -> None:
    fin = cluster.fin
    team, key, _ = fin.new_team("rpm")
    assert fin.admin("PUT", f"/admin/limits/teams/{team}", json={"rpm": 3}).status_code == 200
    early_in_a_minute()
    one, two = cluster.processes
    remaining = []
    for url, stream in ((one, True), (two, False), (one, False)):
        raw = sdk(url, key).chat.completions.with_raw_response.create(
            model="pudong-support", messages=QUESTION, stream=stream
        )
        if stream:
            chunks = raw.parse()
            assert isinstance(chunks, openai.Stream)
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Echo")
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
        assert "x-ratelimit-limit-tokens" not in raw.headers  # no token limit set
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(two, key).chat.completions.create(model="pudong-support", messages=QUESTION)
    error = refused.value
    assert (error.code, error.type) == ("rate_limit_exceeded", "requests")
    assert "Limit 3, Used 3" in error.message
    retry_after = int(error.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    # A refused request does not count: the window still holds three.
    with pytest.raises(openai.RateLimitError):
        sdk(one, key).chat.completions.create(model="pudong-support", messages=QUESTION)


@pytest.mark.slow
def test_tokens_per_minute_of_one_key(cluster: Cluster) -> None:
    fin = cluster.fin
    team, key, key_id = fin.new_team("tpm")
    _other_key = fin.admin("POST", "/admin/keys", json={"team": team}).json()["key"]
    assert fin.admin("PUT", f"/admin/limits/keys/{key_id}", json={"tpm": 30}).status_code == 200
    early_in_a_minute()
    one, two = cluster.processes
    seen = []
    for url in (one, two):  # 19 tokens each (12 prompt + 7 completion)
        raw = sdk(url, key).chat.completions.with_raw_response.create(model="pudong-support", messages=QUESTION)
        seen.append((raw.headers["x-ratelimit-limit-tokens"], raw.headers["x-ratelimit-remaining-tokens"]))
    assert seen == [("30", "30"), ("30", "11")]  # what was left when each request started
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(one, key).chat.completions.create(model="pudong-support", messages=QUESTION)
    assert (refused.value.code, refused.value.type) == ("rate_limit_exceeded", "tokens")
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    # The limit is the key's: another key of the team is not held back.
    sdk(two, _other_key).chat.completions.create(model="pudong-support", messages=QUESTION)


def test_sqlite_counters_write_and_read_what_sqlalchemy_does(tmp_path: Path) -> None:
    """The SQLite fast path of the charger and the budget read: the same rows as the SQLAlchemy path."""
    engine = make_engine(f"sqlite:///{tmp_path / 'counters.db'}")
    migrate(engine)
    with session_scope(engine) as session:
        team = create_team(session=session, name="counted")
        team_id = team.id
    assert team_id is not None
    counters = SqliteCounters(engine)
    try:
        assert counters.charge({(team_id, "2026-11"): 250}, {("team:x", 7): 30}) == {(team_id, "2026-11"): 250}
        with engine.begin() as connection:  # the SQLAlchemy path adds to the same row
            assert charge(db=connection, spend={(team_id, "2026-11"): 100}, tokens={("team:x", 7): 5}) == {
                (team_id, "2026-11"): 350
            }
        assert counters.charge({(team_id, "2026-11"): 1}, {}) == {(team_id, "2026-11"): 351}
        assert counters.spent_e8(team_id, "2026-11") == 351 and counters.spent_e8(team_id, "2026-12") == 0
        with Session(engine) as session:
            assert spent_e8(db=session, team_id=team_id, month="2026-11") == 351
            row = session.exec(select(TeamSpend).where(TeamSpend.team_id == team_id)).one()
            assert row.updated_at.tzinfo is not None and abs(row.updated_at - utcnow()) < timedelta(minutes=1)
            counter = session.exec(select(RateCounter).where(RateCounter.scope == "team:x")).one()
            assert (counter.minute, counter.requests, counter.tokens) == (7, 0, 35)
    finally:
        counters.close()
        engine.dispose()


def test_sqlite_usage_insert_writes_what_sqlalchemy_does(tmp_path: Path) -> None:
    """The usage writer's SQLite fast path stores the same row, read back through the ORM, as ``insert_usage``."""
    engine = make_engine(f"sqlite:///{tmp_path / 'usage.db'}")
    migrate(engine)
    with session_scope(engine) as session:
        team_id = create_team(session=session, name="written").id
    assert team_id is not None
    now = utcnow()

    def usage(request_id: str) -> Usage:
        return Usage(
            created_at=now,
            day=now.date(),
            request_id=request_id,
            endpoint="chat.completions",
            team_id=team_id,
            alias="pudong-support",
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
            injected_tokens=0,
            saved_tokens=31,
            ttft_ms=None,
            partial=True,
            cost_usd=Decimal("0.00008100"),
            priced=False,
        )

    fast = SqliteUsageInsert(engine)
    try:
        fast([usage("fast-1"), usage("fast-2")])
        with engine.begin() as connection:
            insert_usage(connection, [usage("slow-1")])
        with Session(engine) as session:
            rows = {r.request_id: r for r in session.exec(select(UsageRecord)).all()}
        assert sorted(rows) == ["fast-1", "fast-2", "slow-1"]
        ignore = {"id", "request_id"}
        expected = rows["slow-1"].model_dump(exclude=ignore)
        assert expected["created_at"] == now and expected["cost_usd"] == Decimal("0.00008100")
        assert expected["partial"] is True and expected["priced"] is False and expected["ttft_ms"] is None
        assert rows["fast-1"].model_dump(exclude=ignore) == expected
        assert rows["fast-2"].model_dump(exclude=ignore) == expected
        fast([usage(f"many-{n}") for n in range(300)])  # 256 + 32 + 8 + 4 rows, in one transaction
        with Session(engine) as session:
            many = session.exec(select(UsageRecord.request_id).where(UsageRecord.request_id.startswith("many-")))
            assert sorted(many.all()) == sorted(f"many-{n}" for n in range(300))
    finally:
        fast.close()
        engine.dispose()

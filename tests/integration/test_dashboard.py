"""The spend dashboard in headless Chromium: sign in with a finance key, and the charts show the usage API's
figures to the cent; the CSV download holds what is shown; a screenshot goes to tests/output/dashboard.png.

Two weeks of history are handed to the gateway's own usage path (costed, charged to budgets and counted as
real requests are), then real requests are made today through the SDK.
"""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlmodel import Session, select

from tests.utils.chromium import CDPError, Page, chromium, find_chromium
from tests.utils.gateways import ADMIN_KEY, PUDONG_PROMPT, GatewayHandle, running_gateway
from tests.utils.upstreams import FakeUpstreamHandle
from tests.utils.waiting import eventually
from tunegate.registry.models import Team
from tunegate.registry.tokens import system_prompt_tokens
from tunegate.registry.usage import Usage

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed: `apt-get install -y chromium` (Debian) to run the browser test"
)
OUTPUT = Path(__file__).resolve().parents[1] / "output"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
TEAMS = ("baggage-ops", "duty-free", "lounge-services")
FT_PUDONG = "ft:gpt-3.5-turbo-0613:pudong::8abc123"
FT_FLAKY = "ft:gpt-4o-mini-2024-07-18:pudong::flaky"
BRIEF = "Answer briefly."

# Per team: (alias, model when the target serves, fallback model, prompt injected by the fallback, requests a
# day, prompt tokens, completion tokens per request).
MIX: dict[str, list[tuple[str, str, str | None, str | None, int, int, int]]] = {
    "airport-cs": [("pudong-support", FT_PUDONG, "gpt-3.5-turbo", PUDONG_PROMPT, 80, 18000, 4000)],
    "baggage-ops": [
        ("prompted-prepend", "gpt-4o-mini", None, None, 70, 60000, 8000),
        ("embed", "text-embedding-3-small", None, None, 20, 400000, 0),
    ],
    "duty-free": [
        ("fallback-demo", FT_FLAKY, "gpt-4o-mini", BRIEF, 50, 36000, 6000),
        ("other-only", "gpt-4o", None, None, 16, 42000, 9000),
    ],
    "lounge-services": [("legacy", "gpt-3.5-turbo-instruct", None, None, 45, 20000, 4000)],
}
# Share of this month's spend each team's budget is set to, so every state shows: on track, past the soft
# threshold, and over the budget.
BUDGET_USE = {"airport-cs": 0.62, "baggage-ops": 0.86, "duty-free": 0.45, "lounge-services": 1.04}


def usd(value: Decimal) -> str:
    """The dashboard's money format: cents from one cent up (half-up), else three significant digits."""
    if value == 0:
        return "$0.00"
    sign, amount = ("-" if value < 0 else ""), abs(value)
    if amount >= Decimal("0.01"):
        return f"{sign}${amount.quantize(Decimal('0.01'), ROUND_HALF_UP):,.2f}"
    places = min(8, -amount.adjusted() + 2)
    text = format(amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP), "f").rstrip("0")
    return sign + "$" + text


def test_money_format_matches_the_dashboard_rules() -> None:
    assert usd(Decimal("1234.565")) == "$1,234.57"
    assert usd(Decimal("0.00012345")) == "$0.000123"
    assert usd(Decimal("0.00999999")) == "$0.01"
    assert usd(Decimal("0")) == "$0.00"


def _team_ids(engine: Any) -> dict[str, int]:
    with Session(engine) as session:
        return {team.name: team.id for team in session.exec(select(Team)) if team.id is not None}


def seed_history(handle: GatewayHandle, today: date, days: int = 13) -> int:
    """Usage of the teams in MIX for the ``days`` days before today and the first hours of today (so every
    team has spent something this month, whatever the date); returns how many records."""
    rng = random.Random(20261124)
    team_ids = _team_ids(handle.engine)
    count = 0
    for back in range(days, -1, -1):
        day = today - timedelta(days=back)
        weekday = 0.55 if day.weekday() >= 5 else 1.0  # quieter weekends
        if back == 0:
            weekday *= 0.3  # today has only started
        moment = datetime(day.year, day.month, day.day, 0, tzinfo=UTC)
        for team, aliases in MIX.items():
            for alias, model, fallback, prompt, per_day, prompt_size, completion_size in aliases:
                for i in range(max(1, int(per_day * weekday * rng.uniform(0.8, 1.2)))):
                    falls_back = fallback is not None and rng.random() < 0.12
                    served_model = fallback if falls_back and fallback else model
                    prompt_cost = system_prompt_tokens(prompt, fallback) if prompt and fallback else 0
                    injected = prompt_cost if falls_back else 0
                    if alias == "prompted-prepend":  # its target carries the prompt: injected every time
                        injected = system_prompt_tokens(BRIEF, model)
                    completion = int(completion_size * rng.uniform(0.6, 1.4))
                    handle.gateway.record(
                        Usage(
                            created_at=moment + timedelta(seconds=i),
                            day=day,
                            request_id=f"req_seed_{day.isoformat()}_{team}_{alias}_{i}",
                            endpoint="embeddings" if alias == "embed" else "chat.completions",
                            team_id=team_ids[team],
                            alias=alias,
                            upstream="fake",
                            model=served_model,
                            served_by="fallback" if falls_back else "model",
                            prompt_tokens=int(prompt_size * rng.uniform(0.6, 1.4)) + injected,
                            completion_tokens=completion,
                            cached_tokens=0,
                            injected_tokens=injected,
                            saved_tokens=0 if falls_back else prompt_cost,
                            status_code=200,
                            latency_ms=rng.uniform(300, 2500),
                        )
                    )
                    count += 1
    # The training job that produced the pudong fine-tune: 2.4M trained tokens.
    first = today - timedelta(days=days + 1)
    handle.gateway.record(
        Usage(
            created_at=datetime(first.year, first.month, first.day, 9, tzinfo=UTC),
            day=first,
            request_id="req_seed_training_pudong",
            kind="training",
            endpoint="fine_tuning.jobs",
            team_id=team_ids["airport-cs"],
            alias="pudong-support",
            upstream="fake",
            model=FT_PUDONG,
            served_by="model",
            prompt_tokens=2_400_000,
            status_code=200,
            latency_ms=0,
        )
    )
    return count


def usage(handle: GatewayHandle, start: str, end: str, group_by: str, key: str = ADMIN_KEY) -> dict[str, Any]:
    response = httpx.get(
        handle.url + "/admin/usage",
        params={"from": start, "to": end, "group_by": group_by},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def finance(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayHandle, str]]:
    """A gateway with two weeks of spend by five teams, budgets, and a finance key."""
    with running_gateway(
        own_database_url, fake_upstream.base_url, tmp_path_factory.mktemp("dashboard"), teams=TEAMS
    ) as handle:
        today = datetime.now(UTC).date()
        seeded = seed_history(handle, today)
        for team, alias, kind in (
            ("airport-cs", "pudong-support", "chat"),
            ("airport-cs", "pudong-support", "chat"),
            ("other-team", "other-only", "chat"),
            ("other-team", "embed", "embeddings"),
            ("baggage-ops", "prompted-prepend", "chat"),
        ):
            client = openai.OpenAI(base_url=handle.base_url, api_key=handle.keys[team], max_retries=0)
            if kind == "chat":
                client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "Where is gate D?"}])
            else:
                client.embeddings.create(model=alias, input="gate D")
        expected = seeded + 5
        span = ((today - timedelta(days=30)).isoformat(), today.isoformat())
        # every record committed, the training one too
        eventually(lambda: handle.gateway.usage.pending == 0, what="the usage writer to commit", timeout=30)
        assert usage(handle, *span, "team")["totals"]["requests"] == expected

        # Budgets at a share of this month's spend, once every charge is in the team's month-to-date figure.
        month = usage(handle, today.replace(day=1).isoformat(), today.isoformat(), "team")
        spent = {row["team"]: Decimal(row["cost_usd"]) for row in month["data"]}
        for team, share in BUDGET_USE.items():
            budget = (spent[team] / Decimal(str(share))).quantize(Decimal("0.01"))
            response = handle.admin("PUT", f"/admin/budgets/{team}", json={"monthly_usd": str(budget), "soft_pct": 80})
            assert response.status_code == 200, response.text

        def charged() -> bool:
            rows = handle.admin("GET", "/admin/budgets").json()["data"]
            return all(Decimal(r["spent_usd"]) == spent.get(r["team"], Decimal(0)) for r in rows)

        eventually(charged, what="every team's spend to be charged", timeout=30)
        key = handle.admin("POST", "/admin/keys", json={"team": "airport-cs", "name": "finance", "role": "finance"})
        assert key.status_code == 201, key.text
        yield handle, key.json()["key"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Page]:
    assert CHROMIUM is not None
    with chromium(CHROMIUM, tmp_path / "profile") as page:
        yield page


def sign_in(page: Page, url: str, key: str) -> None:
    page.navigate(url + "/dashboard")
    assert page.evaluate("document.body.dataset.state") == "login"
    page.type("#key", key)
    page.click("#login-submit")


def allow_downloads(page: Page, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    try:
        page.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(directory))
    except CDPError:
        page.send("Page.setDownloadBehavior", behavior="allow", downloadPath=str(directory))


def downloaded(directory: Path, timeout: float = 15.0) -> Path:
    return eventually(
        lambda: next((p for p in directory.iterdir() if p.suffix == ".csv"), None),
        what=f"a CSV downloaded to {directory}",
        timeout=timeout,
    )


@pytest.mark.slow
def test_dashboard_shows_the_usage_api_figures(
    finance: tuple[GatewayHandle, str], browser: Page, tmp_path: Path
) -> None:
    handle, finance_key = finance
    sign_in(browser, handle.url, finance_key)
    browser.wait_for("document.body.dataset.state === 'ready'")
    assert finance_key not in browser.evaluate("location.href")  # the key is never in a URL
    assert browser.evaluate("document.querySelector('#key').value") == ""

    start = browser.evaluate("document.querySelector('#from').value")
    end = browser.evaluate("document.querySelector('#to').value")
    today = datetime.now(UTC).date()
    assert (start, end) == ((today - timedelta(days=13)).isoformat(), today.isoformat())

    # Spend per team per day: one bar segment per row of the report, at its exact cost.
    by_day = usage(handle, start, end, "team,day", key=finance_key)
    segments = browser.evaluate(
        "[...document.querySelectorAll('#spend-chart rect.segment')]"
        ".map(r => [r.dataset.team, r.dataset.day, r.dataset.cost, Number(r.getAttribute('height'))])"
    )
    assert {(t, d): c for t, d, c, _h in segments} == {(r["team"], r["day"]): r["cost_usd"] for r in by_day["data"]}
    assert len(segments) == len(by_day["data"]) == 4 * 14 + 1  # four teams every day, other-team today only
    assert all(height > 0 for _t, _d, cost, height in segments if Decimal(cost) > Decimal("0.01"))
    days = browser.evaluate("[...document.querySelectorAll('#spend-chart g.day')].map(g => g.dataset.day)")
    assert days == [(today - timedelta(days=13 - i)).isoformat() for i in range(14)]
    legend = browser.evaluate("[...document.querySelectorAll('#spend-legend .legend-item')].map(e => e.dataset.team)")
    per_team: dict[str, Decimal] = {}
    for row in by_day["data"]:
        per_team[row["team"]] = per_team.get(row["team"], Decimal(0)) + Decimal(row["cost_usd"])
    assert legend == sorted(per_team, key=lambda team: (-per_team[team], team))

    # The totals, as printed.
    totals = by_day["totals"]
    assert browser.evaluate("document.querySelector('#kpi-cost').dataset.value") == totals["cost_usd"]
    assert browser.evaluate("document.querySelector('#kpi-cost').textContent") == usd(Decimal(totals["cost_usd"]))
    assert browser.evaluate("document.querySelector('#kpi-requests').textContent") == f"{totals['requests']:,}"
    tokens = totals["prompt_tokens"] + totals["completion_tokens"]
    assert browser.evaluate("document.querySelector('#kpi-tokens').textContent") == f"{tokens:,}"
    assert browser.evaluate("document.querySelector('#kpi-unpriced').textContent") == str(totals["unpriced_requests"])
    assert Decimal(totals["cost_usd"]) > 10  # dollars, not fractions of a cent: the chart has something to show

    # Top aliases and models: the report's rows by cost, first eight.
    for list_id, group in (("aliases", "alias"), ("models", "model")):
        report = usage(handle, start, end, group, key=finance_key)
        ranked = sorted(report["data"], key=lambda r: (-Decimal(r["cost_usd"]), -r["requests"]))[:8]
        shown = browser.evaluate(
            f"[...document.querySelectorAll('#{list_id} li.bar-row')]"
            ".map(li => [li.dataset.name, li.dataset.cost, li.querySelector('.bar-value').textContent])"
        )
        assert shown == [[r[group], r["cost_usd"], usd(Decimal(r["cost_usd"]))] for r in ranked]

    # Budget burn: each team's share used, and the threshold marked where the budget puts it.
    budgets = handle.admin("GET", "/admin/budgets").json()["data"]
    shown_budgets = browser.evaluate(
        "[...document.querySelectorAll('#budgets .budget')].map(b => [b.dataset.team, Number(b.dataset.usedPct),"
        " b.dataset.state, b.querySelector('.budget-threshold').style.left])"
    )
    assert [(t, u, s) for t, u, s, _left in shown_budgets] == [(b["team"], b["used_pct"], b["state"]) for b in budgets]
    assert {b["state"] for b in budgets} == {"ok", "soft", "hard"}
    for (_team, used, _state, left), budget in zip(shown_budgets, budgets, strict=True):
        assert float(left.rstrip("%")) == pytest.approx(budget["soft_threshold_pct"] * 100 / max(100, used))

    # Fine-tune savings: the aliases a fine-tuned model serves, with the savings API's figures.
    cards = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#savings .saving')].map(a => [a.dataset.alias,"
        " Object.fromEntries([...a.querySelectorAll('dd')].map(d => [d.dataset.fact, d.textContent]))]))"
    )
    assert set(cards) == {"pudong-support", "fallback-demo"}
    for alias, facts in cards.items():
        figures = handle.admin("GET", "/admin/savings", params={"alias": alias}).json()
        assert facts["fine_tuned_requests"] == f"{figures['fine_tuned']['requests']:,}"
        assert facts["base_with_prompt_requests"] == f"{figures['base_with_prompt']['requests']:,}"
        assert facts["saved_tokens"] == f"{figures['fine_tuned']['saved_tokens']:,}"
        assert facts["training_cost_usd"] == usd(Decimal(figures["training"]["cost_usd"]))
    assert cards["pudong-support"]["training_cost_usd"] == "$19.20"  # 2.4M trained tokens at $8 per 1M

    # The CSV download is what the chart shows.
    allow_downloads(browser, tmp_path / "downloads")
    browser.click("button[data-csv='spend']")
    rows = list(csv.DictReader(io.StringIO(downloaded(tmp_path / "downloads").read_text(encoding="utf-8"))))
    assert {(r["team"], r["day"]): r["cost_usd"] for r in rows} == {
        (r["team"], r["day"]): r["cost_usd"] for r in by_day["data"]
    }
    assert sum(int(r["requests"]) for r in rows) == totals["requests"]

    OUTPUT.mkdir(exist_ok=True)
    browser.screenshot(OUTPUT / "dashboard.png")
    assert (OUTPUT / "dashboard.png").stat().st_size > 20_000
    if not DOCS_SCREENSHOT.exists() or os.environ.get("TUNEGATE_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(OUTPUT / "dashboard.png", DOCS_SCREENSHOT)


@pytest.mark.slow
def test_a_range_change_reloads_every_panel(finance: tuple[GatewayHandle, str], browser: Page) -> None:
    handle, finance_key = finance
    sign_in(browser, handle.url, finance_key)
    browser.wait_for("document.body.dataset.state === 'ready'")
    today = datetime.now(UTC).date()
    browser.click("button[data-preset='7']")
    browser.wait_for("document.body.dataset.state === 'ready' && document.querySelectorAll('g.day').length === 7")
    start = (today - timedelta(days=6)).isoformat()
    week = usage(handle, start, today.isoformat(), "team,day")
    assert browser.evaluate("document.querySelector('#kpi-cost').dataset.value") == week["totals"]["cost_usd"]
    assert browser.evaluate("document.querySelector('#from').value") == start


@pytest.mark.slow
def test_sign_in_refuses_other_keys_and_sign_out_forgets_the_key(
    finance: tuple[GatewayHandle, str], browser: Page
) -> None:
    handle, finance_key = finance
    sign_in(browser, handle.url, "tg-not-a-key")
    browser.wait_for("document.body.dataset.state === 'login' && !document.querySelector('#login-error').hidden")
    refused = "That key was not accepted: sign in with a finance key or the admin key."
    assert browser.evaluate("document.querySelector('#login-error').textContent") == refused

    browser.evaluate("document.querySelector('#login-error').textContent = ''")
    browser.type("#key", handle.keys["airport-cs"])  # a team key calls models; it does not read everyone's spend
    browser.click("#login-submit")
    browser.wait_for("document.querySelector('#login-error').textContent !== ''")
    assert browser.evaluate("document.querySelector('#login-error').textContent") == refused
    assert browser.evaluate("document.body.dataset.state") == "login"
    assert browser.evaluate("sessionStorage.length") == 0

    browser.type("#key", finance_key)
    browser.click("#login-submit")
    browser.wait_for("document.body.dataset.state === 'ready'")
    assert browser.evaluate("sessionStorage.getItem('tunegate.dashboard.key')") == finance_key  # this tab only
    browser.click("#logout")
    browser.wait_for("document.body.dataset.state === 'login'")
    assert browser.evaluate("sessionStorage.length") == 0
    assert browser.evaluate("document.querySelector('#app').hidden")


def test_the_page_is_served_with_a_strict_policy(finance: tuple[GatewayHandle, str]) -> None:
    handle, _ = finance
    page = httpx.get(handle.url + "/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "form-action 'none'" in policy
    assert page.headers["cache-control"] == "no-store"
    assert "http" not in page.text.replace(handle.url, "")  # nothing from another origin: no CDN
    for asset, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        response = httpx.get(f"{handle.url}/dashboard/{asset}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    missing = httpx.get(handle.url + "/dashboard/../config/settings.py")
    assert missing.status_code == 404
    assert httpx.get(handle.url + "/dashboard/settings.py").status_code == 404

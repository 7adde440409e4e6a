"""A finance key limited to its own team (role ``team_finance``) reads that team's usage, budgets, savings and
organization usage only, on every finance endpoint; a global finance key still reads every team's. Another
team's figures read as a team with none (an empty result); another team's own alias as an unknown one (404).

Traffic (token counts by the fake upstream's rule, prices from finance_support): alpha 2 pudong-support
(12 in + 7 out at 3000/6000 per 1M: 0.078 USD each), beta 1 pudong-support and 1 mini (0.006) and 1 call of
its own alias beta-own (gpt-4o-mini: 0.006).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.integration.finance_support import QUESTION, FinanceGateway, finance_gateway
from tests.utils.gateways import ADMIN_KEY
from tests.utils.processes import run_tunegate
from tests.utils.upstreams import FakeUpstreamHandle

DAY = 86400


@dataclass
class Scoped:
    fin: FinanceGateway
    alpha: str
    beta: str
    alpha_finance: str  # team_finance key of alpha
    global_finance: str  # finance key (every team), made in beta
    start: int  # the start of today (UTC)


@pytest.fixture(scope="module")
def scoped(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scoped]:
    with finance_gateway(own_database_url, fake_upstream, tmp_path_factory.mktemp("finance-scope")) as fin:
        alpha, alpha_key, _ = fin.new_team("alpha")
        beta, beta_key, _ = fin.new_team("beta")
        own = fin.admin(
            "PUT", "/admin/aliases/beta-own", params={"team": beta}, json={"upstream": "fake", "model": "gpt-4o-mini"}
        )
        assert own.status_code == 200, own.text
        for key, alias in (
            (alpha_key, "pudong-support"),
            (alpha_key, "pudong-support"),
            (beta_key, "pudong-support"),
            (beta_key, "mini"),
            (beta_key, "beta-own"),
        ):
            openai.OpenAI(base_url=fin.base_url, api_key=key, max_retries=0).chat.completions.create(
                model=alias, messages=QUESTION
            )
        fin.wait_for_requests(alpha, 2)
        fin.wait_for_requests(beta, 3)
        for team, usd in ((alpha, "100.00"), (beta, "50.00")):
            response = fin.admin("PUT", f"/admin/budgets/{team}", json={"monthly_usd": usd})
            assert response.status_code == 200, response.text
        created = fin.admin("POST", "/admin/keys", json={"team": alpha, "name": "alpha books", "role": "team_finance"})
        assert created.status_code == 201, created.text
        assert (created.json()["role"], created.json()["team"]) == ("team_finance", alpha)
        now = int(time.time())
        yield Scoped(fin, alpha, beta, created.json()["key"], fin.finance_key(beta), now - now % DAY)


def get(scoped: Scoped, key: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(scoped.fin.url + path, params=params, headers={"authorization": f"Bearer {key}"}, timeout=30)


def by_team(body: dict[str, Any], *fields: str) -> dict[str, tuple[Any, ...]]:
    return {row["team"]: tuple(row[f] for f in fields) for row in body["data"]}


def test_the_usage_report_of_a_team_finance_key_holds_its_team_only(scoped: Scoped) -> None:
    mine = get(scoped, scoped.alpha_finance, "/admin/usage", group_by="team")
    assert mine.status_code == 200, mine.text
    assert by_team(mine.json(), "requests", "prompt_tokens", "completion_tokens", "cost_usd") == {
        scoped.alpha: (2, 24, 14, "0.15600000")
    }
    assert mine.json()["totals"]["requests"] == 2
    everyone = get(scoped, scoped.global_finance, "/admin/usage", group_by="team").json()
    assert by_team(everyone, "requests", "cost_usd") == {
        scoped.alpha: (2, "0.15600000"),
        scoped.beta: (3, "0.09000000"),
    }
    # Another team's figures: as a team with none (the same answer as a team that does not exist).
    for team in (scoped.beta, "no-such-team"):
        other = get(scoped, scoped.alpha_finance, "/admin/usage", team=team, group_by="alias")
        assert other.status_code == 200
        assert (other.json()["data"], other.json()["totals"]["requests"]) == ([], 0)
    by_alias = get(scoped, scoped.alpha_finance, "/admin/usage", group_by="alias").json()
    assert {row["alias"]: row["requests"] for row in by_alias["data"]} == {"pudong-support": 2}
    csv = get(scoped, scoped.alpha_finance, "/admin/usage", group_by="team", format="csv").text
    assert scoped.beta not in csv and scoped.alpha in csv


def test_budgets_of_a_team_finance_key_hold_its_team_only(scoped: Scoped) -> None:
    mine = get(scoped, scoped.alpha_finance, "/admin/budgets")
    assert mine.status_code == 200, mine.text
    assert [(row["team"], row["budget_usd"], row["spent_usd"]) for row in mine.json()["data"]] == [
        (scoped.alpha, "100.00000000", "0.15600000")
    ]
    everyone = {row["team"] for row in get(scoped, scoped.global_finance, "/admin/budgets").json()["data"]}
    assert {scoped.alpha, scoped.beta} <= everyone


def test_savings_of_a_team_finance_key_count_its_team_only(scoped: Scoped) -> None:
    mine = get(scoped, scoped.alpha_finance, "/admin/savings", alias="pudong-support")
    assert mine.status_code == 200, mine.text
    assert mine.json()["fine_tuned"]["requests"] == 2
    assert (
        get(scoped, scoped.global_finance, "/admin/savings", alias="pudong-support").json()["fine_tuned"]["requests"]
        == 3
    )
    other = get(scoped, scoped.alpha_finance, "/admin/savings", alias="pudong-support", team=scoped.beta).json()
    assert other["fine_tuned"]["requests"] == 0
    # beta's own alias is unknown to alpha's finance key, as an alias that does not exist.
    for alias in ("beta-own", "no-such-alias"):
        refused = get(scoped, scoped.alpha_finance, "/admin/savings", alias=alias)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["param"] == "alias"
    assert get(scoped, scoped.global_finance, "/admin/savings", alias="beta-own").status_code == 200


def test_organization_usage_and_costs_of_a_team_finance_key_hold_its_project_only(scoped: Scoped) -> None:
    def admin(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=scoped.fin.base_url, api_key="unused", admin_api_key=key, max_retries=0)

    start, end = scoped.start, scoped.start + DAY
    for key, expected in (
        (scoped.alpha_finance, {scoped.alpha: 2}),
        (scoped.global_finance, {scoped.alpha: 2, scoped.beta: 3}),
    ):
        page = admin(key).admin.organization.usage.completions(start_time=start, end_time=end, group_by=["project_id"])
        (bucket,) = page.data
        assert {r.project_id: r.num_model_requests for r in bucket.results} == expected  # type: ignore[union-attr]
    costs = admin(scoped.alpha_finance).admin.organization.usage.costs(
        start_time=start, end_time=end, group_by=["project_id"]
    )
    (day,) = costs.data
    assert [(r.project_id, r.amount.value) for r in day.results] == [(scoped.alpha, 0.156)]  # type: ignore[union-attr]
    # Asking for beta's project by name: nothing, as for a project that does not exist.
    other = admin(scoped.alpha_finance).admin.organization.usage.completions(
        start_time=start, end_time=end, project_ids=[scoped.beta]
    )
    assert [bucket.results for bucket in other.data] == [[]]


def test_the_team_usage_of_a_team_finance_key_and_what_it_cannot_do(scoped: Scoped) -> None:
    own = get(scoped, scoped.alpha_finance, "/v1/usage", group_by="alias").json()
    assert {row["alias"]: row["requests"] for row in own["data"]} == {"pudong-support": 2}
    client = openai.OpenAI(base_url=scoped.fin.base_url, api_key=scoped.alpha_finance, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="pudong-support", messages=QUESTION)
    changed = httpx.put(
        scoped.fin.url + f"/admin/budgets/{scoped.alpha}",
        json={"monthly_usd": "1000.00"},
        headers={"authorization": f"Bearer {scoped.alpha_finance}"},
    )
    assert changed.status_code == 403
    assert get(scoped, scoped.alpha_finance, "/admin/keys").status_code == 403


def test_the_command_line_makes_a_team_finance_key(scoped: Scoped) -> None:
    made = run_tunegate(
        ["key", "create", "--team", scoped.alpha, "--role", "team_finance", "--name", "alpha books 2"],
        env={"TUNEGATE_URL": scoped.fin.url, "TUNEGATE_ADMIN_KEY": ADMIN_KEY},
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    report = get(scoped, key, "/admin/usage", group_by="team")
    assert report.status_code == 200, report.text
    assert by_team(report.json(), "requests") == {scoped.alpha: (2,)}

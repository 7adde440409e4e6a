"""Usage reports (/admin/usage, /v1/usage), who may read them, bad input, and the ``tunegate usage|budget|limit``
commands, over a fixed set of requests (finance_support's prices; figures worked out by hand)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest

from tests.integration.finance_support import (
    BRIEF_INJECTED,
    FT_PUDONG,
    QUESTION,
    FinanceGateway,
    finance_gateway,
)
from tests.utils.gateways import ADMIN_KEY
from tests.utils.openai_schema import validate
from tests.utils.processes import run_tunegate
from tests.utils.upstreams import FakeUpstreamHandle

MEASURES = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "injected_tokens",
    "saved_tokens",
    "cost_usd",
    "unpriced_requests",
]


@dataclass
class Traffic:
    fin: FinanceGateway
    alpha: str  # two pudong-support requests (fine-tune: $0.078 each) and one mini ($0.006)
    alpha_key: str
    beta: str  # one pudong-support request
    beta_key: str
    finance_key: str


@pytest.fixture(scope="module")
def traffic(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Traffic]:
    with finance_gateway(own_database_url, fake_upstream, tmp_path_factory.mktemp("finance-reports")) as fin:
        tag = uuid.uuid4().hex[:6]
        alpha, alpha_key, _ = fin.new_team(f"alpha-{tag}")
        beta, beta_key, _ = fin.new_team(f"beta-{tag}")
        for key, alias in ((alpha_key, "pudong-support"), (alpha_key, "pudong-support"), (alpha_key, "mini")):
            openai.OpenAI(base_url=fin.base_url, api_key=key, max_retries=0).chat.completions.create(
                model=alias, messages=QUESTION
            )
        openai.OpenAI(base_url=fin.base_url, api_key=beta_key, max_retries=0).chat.completions.create(
            model="pudong-support", messages=QUESTION
        )
        fin.wait_for_requests(alpha, 3)
        fin.wait_for_requests(beta, 1)
        yield Traffic(fin, alpha, alpha_key, beta, beta_key, fin.finance_key(beta))


def row(cost: str, requests: int = 1, *, saved: int = 0, **keys: str) -> dict[str, Any]:
    """A report row for ``requests`` identical "Where is gate D?" requests (12 prompt, 7 completion tokens)."""
    return {
        **keys,
        "requests": requests,
        "prompt_tokens": 12 * requests,
        "completion_tokens": 7 * requests,
        "cached_tokens": 0,
        "injected_tokens": 0,
        "saved_tokens": saved * requests,
        "cost_usd": cost,
        "unpriced_requests": 0,
    }


def this_month() -> tuple[str, str]:
    today = datetime.now(UTC).date()
    first = today.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return first.isoformat(), last.isoformat()


def test_group_by_team_and_alias_with_totals_that_add_up(traffic: Traffic) -> None:
    response = traffic.fin.report(group_by="team,alias")
    assert response.status_code == 200
    first, last = this_month()  # the default range
    assert response.json() == {
        "object": "usage.report",
        "from": first,
        "to": last,
        "group_by": ["team", "alias"],
        "data": [
            row("0.00600000", team=traffic.alpha, alias="mini"),  # 12 * $150/M + 7 * $600/M
            row("0.15600000", 2, saved=BRIEF_INJECTED, team=traffic.alpha, alias="pudong-support"),  # 2 * $0.078
            row("0.07800000", saved=BRIEF_INJECTED, team=traffic.beta, alias="pudong-support"),
        ],
        "totals": row("0.24000000", 4) | {"saved_tokens": 3 * BRIEF_INJECTED},
    }
    assert traffic.fin.report(group_by="team,alias").json() == response.json()  # re-run: the same figures


def test_group_by_model_served_by_and_day(traffic: Traffic) -> None:
    body = traffic.fin.report(group_by="model,served_by,day").json()
    today = datetime.now(UTC).date().isoformat()
    assert [(r["model"], r["served_by"], r["day"], r["requests"], r["cost_usd"]) for r in body["data"]] == [
        (FT_PUDONG, "model", today, 3, "0.23400000"),
        ("gpt-4o-mini", "model", today, 1, "0.00600000"),
    ]


def test_group_by_key_user_and_endpoint(traffic: Traffic) -> None:
    body = traffic.fin.report(group_by="team,key,user,endpoint").json()
    rows = [(r["team"], r["key"][:4], r["user"], r["endpoint"], r["requests"]) for r in body["data"]]
    assert rows == [
        (traffic.alpha, "key_", None, "chat.completions", 3),  # one key each, no `user` sent
        (traffic.beta, "key_", None, "chat.completions", 1),
    ]
    alpha_key = body["data"][0]["key"]
    only = traffic.fin.report(group_by="alias", **{"metadata.app": "none"}).json()
    assert only["data"] == []  # no metadata kept: none listed in usage.metadata_keys
    bad = httpx.get(
        traffic.fin.url + "/admin/usage", params={"key": "sk-1"}, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert error_of(bad, 400, "key")["message"].startswith("'key' must name a key as key_<id>")
    mine = httpx.get(
        traffic.fin.url + "/admin/usage",
        params={"key": alpha_key, "group_by": "alias"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    assert [(r["alias"], r["requests"]) for r in mine["data"]] == [("mini", 1), ("pudong-support", 2)]


def test_filters_and_an_empty_range(traffic: Traffic) -> None:
    body = traffic.fin.report(group_by="team", alias="mini").json()
    assert body["data"] == [row("0.00600000", team=traffic.alpha)]
    body = traffic.fin.report(group_by="alias", team=traffic.beta, model=FT_PUDONG).json()
    assert body["data"] == [row("0.07800000", saved=BRIEF_INJECTED, alias="pudong-support")]
    empty = traffic.fin.report(**{"from": "2020-01-01", "to": "2020-01-31"}).json()
    assert (empty["data"], empty["totals"]) == ([], row("0.00000000", 0))


def test_csv_is_the_same_rows_under_a_header_then_a_totals_row(traffic: Traffic) -> None:
    response = traffic.fin.report(group_by="team,alias", format="csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.splitlines() == [
        "team,alias," + ",".join(MEASURES),
        f"{traffic.alpha},mini,1,12,7,0,0,0,0.00600000,0",
        f"{traffic.alpha},pudong-support,2,24,14,0,0,{2 * BRIEF_INJECTED},0.15600000,0",
        f"{traffic.beta},pudong-support,1,12,7,0,0,{BRIEF_INJECTED},0.07800000,0",
        f"total,,4,48,28,0,0,{3 * BRIEF_INJECTED},0.24000000,0",
    ]


def test_a_team_key_sees_only_its_own_team(traffic: Traffic) -> None:
    fin = traffic.fin
    mine = fin.report(key=traffic.beta_key, path="/v1/usage", group_by="team,alias", team=traffic.alpha).json()
    assert mine["data"] == [row("0.07800000", saved=BRIEF_INJECTED, team=traffic.beta, alias="pudong-support")]
    assert mine["totals"] == row("0.07800000", saved=BRIEF_INJECTED)
    by_day = fin.report(key=traffic.alpha_key, path="/v1/usage").json()  # default: per day
    assert by_day["group_by"] == ["day"] and by_day["totals"]["cost_usd"] == "0.16200000"
    csv = fin.report(key=traffic.alpha_key, path="/v1/usage", group_by="alias", format="csv").text.splitlines()
    assert csv[-1] == f"total,3,36,21,0,0,{2 * BRIEF_INJECTED},0.16200000,0"
    assert fin.report(key="tg-not-a-key", path="/v1/usage").status_code == 401


def error_of(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    validate(body, "ErrorResponse")
    assert body["error"]["param"] == param
    return dict(body["error"])


def test_a_finance_key_reads_usage_and_nothing_else(traffic: Traffic) -> None:
    fin, key = traffic.fin, traffic.finance_key
    assert fin.report(key=key, group_by="team").json()["totals"]["cost_usd"] == "0.24000000"  # every team
    assert fin.report(key=key, path="/admin/budgets").status_code == 200
    assert fin.report(key=key, path="/admin/savings", alias="pudong-support").status_code == 200
    headers = {"authorization": f"Bearer {key}"}
    writes = [
        ("POST", "/admin/teams", {"name": "finance-made"}),
        ("POST", "/admin/keys", {"team": traffic.beta}),
        ("PUT", f"/admin/budgets/{traffic.beta}", {"monthly_usd": 1000}),
        ("DELETE", f"/admin/budgets/{traffic.beta}", None),
        ("PUT", f"/admin/limits/teams/{traffic.beta}", {"rpm": 1000}),
    ]
    for method, path, body in writes:
        response = httpx.request(method, fin.url + path, json=body, headers=headers)
        assert error_of(response, 403, None)["code"] == "permission_denied", (method, path)
    assert httpx.get(fin.url + "/admin/limits", headers=headers).status_code == 403
    finance = openai.OpenAI(base_url=fin.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        finance.chat.completions.create(model="pudong-support", messages=QUESTION)
    # A team key is no finance key.
    assert fin.report(key=traffic.alpha_key).status_code == 401


@pytest.mark.parametrize(
    ("params", "param", "words"),
    [
        ({"group_by": "team,region"}, "group_by", "unknown field 'region'"),
        ({"group_by": ""}, "group_by", "names no field"),
        ({"group_by": "team,team"}, "group_by", "twice"),
        ({"group_by": "team,metadata."}, "group_by", "metadata key that cannot be one"),
        ({"group_by": "metadata.a b"}, "group_by", "metadata key that cannot be one"),
        ({"from": "2026-13-01"}, "from", "not a valid date"),
        ({"from": "26-11-01"}, "from", "YYYY-MM-DD"),
        ({"to": "2026-02-30"}, "to", "not a valid date"),
        ({"from": "2026-11-30", "to": "2026-11-01"}, "from", "after 'to'"),
        ({"format": "xml"}, "format", "json or csv"),
    ],
)
def test_bad_report_parameters_are_400s_naming_the_field(
    traffic: Traffic, params: dict[str, str], param: str, words: str
) -> None:
    for path, key in (("/admin/usage", ADMIN_KEY), ("/v1/usage", traffic.alpha_key)):
        error = error_of(traffic.fin.report(key=key, path=path, **params), 400, param)
        assert words in error["message"], error


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("PUT", "/admin/budgets/{team}", {"monthly_usd": -5}, 400, "monthly_usd"),
        ("PUT", "/admin/budgets/{team}", {"monthly_usd": "lots"}, 400, "monthly_usd"),
        ("PUT", "/admin/budgets/{team}", {"monthly_usd": 10, "soft_pct": 0}, 400, "soft_pct"),
        ("PUT", "/admin/budgets/{team}", {"monthly_usd": 10, "alert_webhook": "ftp://x"}, 400, "alert_webhook"),
        ("PUT", "/admin/budgets/{team}", {"monthly_usd": 10, "hard": True}, 400, "hard"),
        ("PUT", "/admin/budgets/no-such-team", {"monthly_usd": 10}, 404, "team"),
        ("PUT", "/admin/limits/teams/{team}", {"rpm": 0}, 400, "rpm"),
        ("PUT", "/admin/limits/keys/999999", {"rpm": 5}, 404, "key_id"),
        ("GET", "/admin/savings", None, 400, "alias"),
        ("GET", "/admin/savings?alias=no-such-alias", None, 404, "alias"),
        ("GET", "/admin/budgets?month=2026-13", None, 400, "month"),
    ],
)
def test_bad_budget_limit_and_savings_input(
    traffic: Traffic, method: str, path: str, body: Any, status: int, param: str
) -> None:
    response = traffic.fin.admin(method, path.format(team=traffic.alpha), json=body)
    error_of(response, status, param)


# -- the command line --------------------------------------------------------------------------------------


def tunegate(fin: FinanceGateway, *args: str, key: str = ADMIN_KEY) -> subprocess.CompletedProcess[str]:
    return run_tunegate(args, env={"TUNEGATE_URL": fin.url, "TUNEGATE_ADMIN_KEY": key}, timeout=60)


@pytest.mark.slow
def test_usage_command_prints_a_table_csv_or_json(traffic: Traffic) -> None:
    fin = traffic.fin
    first, last = this_month()
    table = tunegate(fin, "usage", "--by", "team,alias", "--since", first)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"usage {first} .. {last}"
    assert lines[1].split() == ["TEAM", "ALIAS", *(m.upper() for m in MEASURES)]
    assert lines[-1].split() == ["total", "4", "48", "28", "0", "0", str(3 * BRIEF_INJECTED), "0.24000000", "0"]
    csv = tunegate(fin, "usage", "--by", "team,alias", "--csv")
    assert csv.stdout == fin.report(group_by="team,alias", format="csv").text
    as_json = tunegate(fin, "usage", "--by", "team", "--json", key=traffic.finance_key)  # a finance key will do
    assert json.loads(as_json.stdout) == fin.report(group_by="team").json()


@pytest.mark.slow
def test_usage_command_errors_carry_the_gateways_message(traffic: Traffic) -> None:
    bad = tunegate(traffic.fin, "usage", "--by", "region")
    assert bad.returncode == 1
    assert "'group_by' has unknown field 'region'" in bad.stderr and "HTTP 400" in bad.stderr
    unreachable = run_tunegate(
        ["usage", "--url", "http://127.0.0.1:9"], env={"TUNEGATE_ADMIN_KEY": ADMIN_KEY}, timeout=60
    )
    assert unreachable.returncode == 1 and "cannot reach the gateway" in unreachable.stderr


@pytest.mark.slow
def test_savings_command(traffic: Traffic) -> None:
    result = tunegate(traffic.fin, "usage", "savings", "--alias", "pudong-support", "--team", traffic.beta)
    assert result.returncode == 0, result.stderr
    assert f"fine-tuned model  {FT_PUDONG}" in result.stdout
    assert "break-even: never at these prices" in result.stdout


@pytest.mark.slow
def test_budget_and_limit_commands(traffic: Traffic) -> None:
    fin = traffic.fin
    done = tunegate(fin, "budget", "set", traffic.beta, "--monthly-usd", "100", "--soft-pct", "80")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"team {traffic.beta}: $100.00000000 a month, alert at 80%;")
    listed = tunegate(fin, "budget", "list").stdout.splitlines()
    assert [line.split()[:7] for line in listed[1:]] == [
        [traffic.beta, datetime.now(UTC).strftime("%Y-%m"), "100.00000000", "80", "0.07800000", "0.08", "ok"]
    ]
    refused = tunegate(fin, "budget", "set", traffic.beta, "--monthly-usd", "5", key=traffic.finance_key)
    assert refused.returncode == 1 and "finance key may read" in refused.stderr
    missing = tunegate(fin, "budget", "set", "no-such-team", "--monthly-usd", "5")
    assert missing.returncode == 1 and "no team named 'no-such-team'" in missing.stderr
    assert tunegate(fin, "budget", "clear", traffic.beta).returncode == 0
    assert fin.admin("GET", "/admin/budgets").json()["data"] == []

    assert tunegate(fin, "limit", "set", "--team", traffic.beta, "--rpm", "1000", "--tpm", "50000").returncode == 0
    limits = fin.admin("GET", "/admin/limits").json()["data"]
    assert limits == [{"scope": "team", "team": traffic.beta, "key_id": None, "rpm": 1000, "tpm": 50000}]
    assert tunegate(fin, "limit", "set", "--team", traffic.beta).returncode == 0  # neither: removed
    assert fin.admin("GET", "/admin/limits").json()["data"] == []

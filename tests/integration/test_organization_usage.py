"""OpenAI's organization usage and costs, read by the openai SDK's own admin client, against the gateway's own
report and the fake upstream's token counts; spend by key, by user and by metadata in the gateway's report."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.integration.finance_support import PRICES_YAML, QUESTION, FinanceGateway, finance_yaml
from tests.utils.gateways import ADMIN_KEY, serve_gateway
from tests.utils.openai_schema import validate
from tests.utils.processes import run_tunegate
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle

DAY = 86400


@dataclass
class Traffic:
    fin: FinanceGateway
    alpha: str
    beta: str
    keys: dict[str, str]  # a1, a2 (alpha), b1 (beta): the key
    key_ids: dict[str, str]  # the same keys' ids as the organization API names them: key_<id>
    finance_key: str
    start: int  # the start of today (UTC)
    expected: dict[tuple[str, str, str | None, str], list[int]]  # (team, key, user, model): [requests, in, out]
    embedded: int  # the embeddings request's tokens, as the SDK got them
    upstream: dict[str, Any]  # the fake upstream's counts per model, for this module's traffic


@pytest.fixture(scope="module")
def traffic(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Traffic]:
    tmp = tmp_path_factory.mktemp("organization-usage")
    prices = tmp / "prices.yaml"
    prices.write_text(PRICES_YAML, encoding="utf-8")
    text = finance_yaml(own_database_url, fake_upstream.base_url, prices).replace(
        "usage: {flush_interval: 0.05}", "usage: {flush_interval: 0.05, metadata_keys: [app, feature]}"
    )
    with serve_gateway(tmp / "gateway.yaml", text, secrets={"TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY}) as handle:
        fin = FinanceGateway(handle.url, handle.gateway, handle.keys, handle.config)
        tag = uuid.uuid4().hex[:6]
        alpha, a1, a1_id = fin.new_team(f"alpha-{tag}")
        beta, b1, b1_id = fin.new_team(f"beta-{tag}")
        second = fin.admin("POST", "/admin/keys", json={"team": alpha, "name": "second"}).json()
        keys = {"a1": a1, "a2": second["key"], "b1": b1}
        key_ids = {"a1": f"key_{a1_id}", "a2": f"key_{second['id']}", "b1": f"key_{b1_id}"}
        before = fake_upstream.stats()["by_model"]
        calls: list[tuple[str, str, str | None, dict[str, str] | None]] = [
            ("a1", "mini", "ana", {"app": "kiosk", "secret": "not kept"}),
            ("a1", "mini", "ana", {"app": "kiosk"}),
            ("a2", "mini", "bo", {"app": "web", "feature": "gates"}),
            ("a1", "pudong-support", None, None),
            ("b1", "mini", "ana", None),
        ]
        expected: dict[tuple[str, str, str | None, str], list[int]] = {}
        for who, alias, user, metadata in calls:
            client = openai.OpenAI(base_url=fin.base_url, api_key=keys[who], max_retries=0)
            extra: dict[str, Any] = {}
            if user is not None:
                extra["user"] = user
            if metadata is not None:
                extra["metadata"] = metadata
            answer = client.chat.completions.create(model=alias, messages=QUESTION, **extra)
            assert answer.usage is not None
            team = beta if who == "b1" else alpha
            model = "gpt-4o-mini" if alias == "mini" else "ft:gpt-3.5-turbo-0613:pudong::fin001"
            row = expected.setdefault((team, key_ids[who], user, model), [0, 0, 0])
            row[0] += 1
            row[1] += answer.usage.prompt_tokens
            row[2] += answer.usage.completion_tokens
        embedding = openai.OpenAI(base_url=fin.base_url, api_key=b1, max_retries=0).embeddings.create(
            model="mini", input="Where is gate D?", user="cy"
        )
        fin.wait_for_requests(alpha, 4)
        fin.wait_for_requests(beta, 2)
        after = fake_upstream.stats()["by_model"]
        upstream = {
            model: {name: figure - before.get(model, {}).get(name, 0) for name, figure in counts.items()}
            for model, counts in after.items()
        }
        now = int(time.time())
        yield Traffic(
            fin=fin,
            alpha=alpha,
            beta=beta,
            keys=keys,
            key_ids=key_ids,
            finance_key=fin.finance_key(beta),
            start=now - now % DAY,
            expected=expected,
            embedded=embedding.usage.prompt_tokens,
            upstream=upstream,
        )


def admin_client(traffic: Traffic, key: str = ADMIN_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=traffic.fin.base_url, api_key="unused", admin_api_key=key, max_retries=0)


def test_completions_usage_by_project_key_user_and_model_equals_the_report_and_the_upstream(traffic: Traffic) -> None:
    page = admin_client(traffic).admin.organization.usage.completions(
        start_time=traffic.start,
        end_time=traffic.start + DAY,
        group_by=["project_id", "api_key_id", "user_id", "model"],
        project_ids=[traffic.alpha, traffic.beta],
    )
    assert page.object == "page" and page.has_more is False and page.next_page is None
    (bucket,) = page.data
    assert (bucket.object, bucket.start_time, bucket.end_time) == ("bucket", traffic.start, traffic.start + DAY)
    got = {
        (r.project_id, r.api_key_id, r.user_id, r.model): [r.num_model_requests, r.input_tokens, r.output_tokens]
        for r in bucket.results
        if r.object == "organization.usage.completions.result"
    }
    assert len(got) == len(bucket.results) == 4
    assert got == traffic.expected
    assert got[(traffic.alpha, traffic.key_ids["a1"], "ana", "gpt-4o-mini")] == [2, 24, 14]  # 12 in, 7 out each
    # The fake upstream's own counts of what it was sent.
    for model in ("gpt-4o-mini", "ft:gpt-3.5-turbo-0613:pudong::fin001"):
        mine = [row for (_, _, _, m), row in got.items() if m == model]
        assert sum(r[1] for r in mine) == traffic.upstream[model]["prompt_tokens"] - (
            traffic.embedded if model == "gpt-4o-mini" else 0
        )
        assert sum(r[2] for r in mine) == traffic.upstream[model]["completion_tokens"]
    # The gateway's own report: the same groups, the same figures.
    report = traffic.fin.report(group_by="team,key,user,model").json()
    rows = {
        (r["team"], r["key"], r["user"], r["model"]): [r["requests"], r["prompt_tokens"], r["completion_tokens"]]
        for r in report["data"]
        if not (r["model"] == "gpt-4o-mini" and r["user"] == "cy")  # the embeddings request
    }
    assert rows == got


def test_the_answer_has_openais_shape_and_filters_narrow_it(traffic: Traffic) -> None:
    response = httpx.get(
        traffic.fin.url + "/v1/organization/usage/completions",
        params={"start_time": traffic.start, "group_by": "user_id", "user_ids": "ana", "limit": 2},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "page" and body["has_more"] is False and body["next_page"] is None
    (result,) = body["data"][0]["results"]
    assert result == {
        "object": "organization.usage.completions.result",
        "input_tokens": 36,
        "input_cached_tokens": 0,
        "input_uncached_tokens": 36,
        "output_tokens": 21,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": 3,
        "project_id": None,
        "user_id": "ana",
        "api_key_id": None,
        "model": None,
        "batch": None,
    }
    models = admin_client(traffic).admin.organization.usage.completions(
        start_time=traffic.start, api_key_ids=[traffic.key_ids["a1"]], models=["gpt-4o-mini"]
    )
    (only,) = models.data[0].results
    assert only.object == "organization.usage.completions.result"
    assert (only.num_model_requests, only.input_tokens, only.output_tokens) == (2, 24, 14)
    assert (
        admin_client(traffic).admin.organization.usage.completions(start_time=traffic.start, batch=True).data[0].results
        == []
    )  # the gateway sends no batch jobs


def test_hourly_buckets_page_with_the_sdks_cursor(traffic: Traffic) -> None:
    hour = int(time.time()) // 3600 * 3600
    usage = admin_client(traffic).admin.organization.usage
    start = hour - 4 * 3600  # five buckets: four empty hours, then this one
    pages = []
    cursor: str | None = None
    while True:
        more: dict[str, Any] = {"page": cursor} if cursor else {}
        page = usage.completions(
            start_time=start, end_time=hour + 3600, bucket_width="1h", limit=2, project_ids=[traffic.alpha], **more
        )
        pages.append(page)
        if not page.has_more:
            break
        assert page.next_page is not None
        cursor = page.next_page
    assert [len(p.data) for p in pages] == [2, 2, 1]
    starts = [b.start_time for p in pages for b in p.data]
    assert starts == [start + n * 3600 for n in range(5)]
    assert [len(b.results) for p in pages for b in p.data] == [0, 0, 0, 0, 1]
    (total,) = pages[-1].data[0].results
    assert total.object == "organization.usage.completions.result"
    assert (total.num_model_requests, total.input_tokens, total.output_tokens) == (4, 48, 28)


def test_embeddings_usage(traffic: Traffic) -> None:
    page = admin_client(traffic, traffic.finance_key).admin.organization.usage.embeddings(
        start_time=traffic.start, group_by=["project_id", "user_id", "model"], project_ids=[traffic.beta]
    )
    (result,) = page.data[0].results
    assert result.object == "organization.usage.embeddings.result"
    assert (result.project_id, result.user_id, result.model) == (traffic.beta, "cy", "gpt-4o-mini")
    assert (result.num_model_requests, result.input_tokens) == (1, traffic.embedded)
    assert traffic.embedded == 5  # "Where is gate D?"


def test_costs_by_project_and_key_equal_the_reports_spend(traffic: Traffic) -> None:
    page = admin_client(traffic, traffic.finance_key).admin.organization.usage.costs(
        start_time=traffic.start, group_by=["project_id", "api_key_id"], limit=1
    )
    assert page.has_more is False
    got = {}
    for result in page.data[0].results:
        assert result.object == "organization.costs.result" and result.amount is not None
        assert result.amount.currency == "usd"
        got[(result.project_id, result.api_key_id)] = Decimal(str(result.amount.value))
    report = traffic.fin.report(group_by="team,key").json()["data"]
    assert got == {(r["team"], r["key"]): Decimal(r["cost_usd"]) for r in report}
    assert got[(traffic.alpha, traffic.key_ids["a1"])] == Decimal("0.09")  # 2 * $0.006 + $0.078
    assert got[(traffic.alpha, traffic.key_ids["a2"])] == Decimal("0.006")
    by_item = admin_client(traffic).admin.organization.usage.costs(start_time=traffic.start, group_by=["line_item"])
    items = {
        r.line_item: r.amount.value
        for r in by_item.data[0].results
        if r.object == "organization.costs.result" and r.amount is not None
    }
    assert items["ft:gpt-3.5-turbo-0613:pudong::fin001, inference"] == pytest.approx(0.078)


def test_responses_usage_has_the_buckets_and_no_records(traffic: Traffic) -> None:
    response = httpx.get(
        traffic.fin.url + "/v1/organization/usage/responses",
        params={"start_time": traffic.start - DAY},
        headers={"authorization": f"Bearer {traffic.finance_key}"},
    )
    assert response.status_code == 200, response.text
    assert [(b["start_time"], b["results"]) for b in response.json()["data"]] == [
        (traffic.start - DAY, []),
        (traffic.start, []),
    ]


def test_a_team_key_is_refused_in_openais_shape(traffic: Traffic) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        admin_client(traffic, traffic.keys["a1"]).admin.organization.usage.completions(start_time=traffic.start)
    assert refused.value.status_code == 401
    validate(refused.value.response.json(), "ErrorResponse")
    with pytest.raises(openai.AuthenticationError):
        admin_client(traffic, traffic.keys["b1"]).admin.organization.usage.costs(start_time=traffic.start)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "start_time"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": 999_999_999_999}, "start_time"),
        ({"start_time": 1000, "end_time": 253_402_300_800}, "end_time"),
        ({"start_time": 1000, "end_time": 1000}, "end_time"),
        ({"start_time": 1000, "bucket_width": "2d"}, "bucket_width"),
        ({"start_time": 1000, "limit": 32}, "limit"),
        ({"start_time": 1000, "bucket_width": "1h", "limit": 169}, "limit"),
        ({"start_time": 1000, "group_by": "region"}, "group_by"),
        ({"start_time": 1000, "page": "page_bogus"}, "page"),
        ({"start_time": 1000, "api_key_ids": "sk-abc"}, "api_key_ids"),
    ],
)
def test_bad_parameters_are_400s_naming_the_parameter(traffic: Traffic, params: dict[str, Any], param: str) -> None:
    response = httpx.get(
        traffic.fin.url + "/v1/organization/usage/completions",
        params=params,
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 400, response.text
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["param"] == param
    costs = httpx.get(
        traffic.fin.url + "/v1/organization/costs",
        params={"start_time": 1000, "bucket_width": "1h"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert costs.status_code == 400 and costs.json()["error"]["param"] == "bucket_width"


# -- spend below the team, in the gateway's own report -------------------------------------------------------


def test_spend_by_key_and_by_user(traffic: Traffic) -> None:
    fin = traffic.fin
    by_key = fin.report(group_by="key", team=traffic.alpha).json()
    assert {r["key"]: (r["requests"], r["cost_usd"]) for r in by_key["data"]} == {
        traffic.key_ids["a1"]: (3, "0.09000000"),  # 2 * $0.006 + $0.078
        traffic.key_ids["a2"]: (1, "0.00600000"),
    }
    by_user = fin.report(group_by="user").json()
    assert [(r["user"], r["requests"], r["cost_usd"]) for r in by_user["data"]] == [
        ("ana", 3, "0.01800000"),
        ("bo", 1, "0.00600000"),
        ("cy", 1, "0.00075000"),  # 5 embedding tokens at $150/M
        (None, 1, "0.07800000"),  # no `user` given
    ]
    one = httpx.get(
        fin.url + "/admin/usage",
        params={"group_by": "team", "user": "ana", "key": traffic.key_ids["a1"]},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    assert [(r["team"], r["requests"]) for r in one["data"]] == [(traffic.alpha, 2)]
    assert fin.report(group_by="endpoint").json()["data"][0]["endpoint"] == "chat.completions"
    csv = fin.report(group_by="user,endpoint", format="csv").text.splitlines()
    assert csv[1].startswith("ana,chat.completions,3,36,21,") and csv[-2].startswith(",chat.completions,1,12,7,")


def test_only_the_configured_metadata_keys_are_kept(traffic: Traffic) -> None:
    fin = traffic.fin
    apps = fin.report(group_by="metadata.app,metadata.feature", team=traffic.alpha).json()["data"]
    assert [(r["metadata.app"], r["metadata.feature"], r["requests"]) for r in apps] == [
        ("kiosk", None, 2),
        ("web", "gates", 1),
        (None, None, 1),
    ]
    secret = fin.report(group_by="metadata.secret").json()["data"]  # not in usage.metadata_keys: dropped
    assert [(r["metadata.secret"], r["requests"]) for r in secret] == [(None, 6)]
    kiosk = fin.report(group_by="key", **{"metadata.app": "kiosk"}).json()["data"]
    assert [(r["key"], r["requests"]) for r in kiosk] == [(traffic.key_ids["a1"], 2)]
    bad = fin.report(group_by="metadata.a,b")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"


@pytest.mark.slow
def test_usage_command_groups_and_filters_below_the_team(traffic: Traffic) -> None:
    env = {"TUNEGATE_URL": traffic.fin.url, "TUNEGATE_ADMIN_KEY": ADMIN_KEY}
    args = ["usage", "--by", "key,user", "--metadata", "app=kiosk", "--json"]
    done = run_tunegate(args, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(r["key"], r["user"], r["requests"]) for r in report["data"]] == [(traffic.key_ids["a1"], "ana", 2)]
    table = run_tunegate(["usage", "--by", "user", "--team", traffic.alpha], env=env, timeout=60)
    assert [line.split()[:2] for line in table.stdout.splitlines()[2:-1]] == [["ana", "2"], ["bo", "1"], ["-", "1"]]
    bad = run_tunegate(["usage", "--metadata", "app"], env=env, timeout=60)
    assert bad.returncode == 2 and "--metadata takes KEY=VALUE" in bad.stderr

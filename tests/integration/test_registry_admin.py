"""The admin API for platform teams, over HTTP against a live gateway, checked with the openai SDK."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.utils.gateways import GatewayHandle
from tests.utils.upstreams import FakeUpstreamHandle
from tests.utils.waiting import eventually

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is gate D?"}]


def uid() -> str:
    return uuid.uuid4().hex[:8]


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    detail: dict[str, Any] = body["error"]
    return detail


def sdk(gateway: GatewayHandle, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)


def served(gateway: GatewayHandle, key: str, model: str, **kwargs: Any) -> str:
    raw = sdk(gateway, key).chat.completions.with_raw_response.create(model=model, messages=QUESTION, **kwargs)
    return raw.headers["x-tunegate-model"]


def put_alias(gateway: GatewayHandle, name: str, team: str | None = None, **body: Any) -> httpx.Response:
    params = {"team": team} if team else {}
    return gateway.admin("PUT", f"/admin/aliases/{name}", json=body, params=params)


def audit(gateway: GatewayHandle, **params: Any) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = ok(gateway.admin("GET", "/admin/audit", params=params))
    return entries


# -- aliases: versions, rollback, disable, delete ---------------------------------------------------------------


def test_alias_versions_rollback_and_lineage(gateway: GatewayHandle) -> None:
    name = f"pudong-{uid()}"
    key = gateway.keys["airport-cs"]
    created = ok(put_alias(gateway, name, upstream="fake", model="gpt-3.5-turbo", system_prompt="Be brief."))
    assert (created["created"], created["changed"], created["alias"]["version"]) == (True, True, 1)
    assert served(gateway, key, name) == "gpt-3.5-turbo"

    ok(put_alias(gateway, name, model="ft:gpt-3.5-turbo-0613:pudong::v1", system_prompt=None, reason="tuned"))
    assert served(gateway, key, name) == "ft:gpt-3.5-turbo-0613:pudong::v1"  # the next request, no restart
    unchanged = ok(put_alias(gateway, name, model="ft:gpt-3.5-turbo-0613:pudong::v1"))
    assert (unchanged["changed"], unchanged["alias"]["version"]) == (False, 2)

    rolled = ok(gateway.admin("POST", f"/admin/alias-versions/{name}", json={"rollback_to": 1}))
    assert (rolled["changed"], rolled["alias"]["version"]) == (True, 3)
    assert served(gateway, key, name) == "gpt-3.5-turbo"
    assert rolled["alias"]["spec"]["target"]["system_prompt"] == "Be brief."

    shown = ok(gateway.admin("GET", f"/admin/aliases/{name}"))
    assert [(v["version"], v["reason"]) for v in shown["lineage"]] == [(3, "rollback to v1"), (1, "")]
    history = ok(gateway.admin("GET", f"/admin/alias-versions/{name}"))
    assert [(v["version"], v["based_on"], v["created_by"]) for v in history] == [
        (3, 1, "admin"),
        (2, 1, "admin"),
        (1, None, "admin"),
    ]
    actions = [(e["action"], e["detail"]["version"]) for e in audit(gateway, target=name)]
    assert actions == [("alias.rollback", 3), ("alias.set", 2), ("alias.set", 1)]


def test_disable_enable_and_soft_delete(gateway: GatewayHandle) -> None:
    name = f"temp-{uid()}"
    key = gateway.keys["airport-cs"]
    ok(put_alias(gateway, name, upstream="fake", model="gpt-4o-mini"))
    ok(gateway.admin("PATCH", f"/admin/aliases/{name}", json={"disabled": True}))
    with pytest.raises(openai.NotFoundError):
        served(gateway, key, name)
    ok(gateway.admin("PATCH", f"/admin/aliases/{name}", json={"disabled": False}))
    assert served(gateway, key, name) == "gpt-4o-mini"

    deleted = ok(gateway.admin("DELETE", f"/admin/aliases/{name}"))
    assert (deleted["deleted"], deleted["disabled"]) == (True, True)
    with pytest.raises(openai.NotFoundError):
        served(gateway, key, name)
    assert name not in {a["name"] for a in ok(gateway.admin("GET", "/admin/aliases"))}
    assert name in {a["name"] for a in ok(gateway.admin("GET", "/admin/aliases", params={"deleted": "true"}))}
    error(gateway.admin("POST", f"/admin/alias-versions/{name}", json={"rollback_to": 1}), 404)

    restored = ok(put_alias(gateway, name, upstream="fake", model="gpt-4o"))
    assert (restored["created"], restored["alias"]["version"], restored["alias"]["deleted"]) == (True, 2, False)
    assert served(gateway, key, name) == "gpt-4o"


def test_bad_alias_input_is_a_4xx_naming_the_field_and_writes_nothing(gateway: GatewayHandle) -> None:
    name = f"bad-{uid()}"
    ok(put_alias(gateway, name, upstream="fake", model="gpt-4o-mini"))
    before = len(audit(gateway, target=name))

    missing = error(gateway.admin("POST", f"/admin/alias-versions/{name}", json={"rollback_to": 7}), 404)
    assert missing["param"] == "version" and "no version 7" in missing["message"]
    unknown = error(put_alias(gateway, name, upstream="nowhere"), 400)
    assert unknown["param"] == "upstream" and "unknown upstream 'nowhere'" in unknown["message"]
    fallback = error(put_alias(gateway, name, fallback={"model": "m", "upstream": "nowhere"}), 400)
    assert fallback["param"] == "fallback.upstream"
    weights = error(put_alias(gateway, name, split=[{"model": "a", "weight": 90}, {"model": "b", "weight": 5}]), 400)
    assert weights["param"] == "split" and "add up to 95" in weights["message"]
    zero = error(put_alias(gateway, name, split=[{"model": "a", "weight": 0}]), 400)
    assert "split" in str(zero["param"])
    typo = error(put_alias(gateway, name, modle="x"), 400)
    assert "modle" in typo["message"]
    no_model = error(put_alias(gateway, f"new-{uid()}", upstream="fake"), 400)
    assert no_model["param"] == "model"
    teams = error(put_alias(gateway, name, teams=["no-such-team"]), 400)
    assert teams["param"] == "teams"

    assert len(audit(gateway, target=name)) == before
    assert ok(gateway.admin("GET", f"/admin/aliases/{name}"))["version"] == 1


def test_a_canary_split_sets_weights_in_headers_and_usage(gateway: GatewayHandle) -> None:
    name = f"canary-{uid()}"
    split = [{"model": "ft:gpt-4o-mini:pudong::v1", "weight": 70}, {"model": "ft:gpt-4o-mini:pudong::v2", "weight": 30}]
    alias = ok(put_alias(gateway, name, upstream="fake", split=split))["alias"]
    assert alias["spec"]["canary"] == [
        {"upstream": "fake", "model": "ft:gpt-4o-mini:pudong::v2", "system_prompt": None, "weight": 30}
    ]
    assert [(s["model"], s["weight"], s["served_by"]) for s in alias["split"]] == [
        ("ft:gpt-4o-mini:pudong::v1", 70, "model"),
        ("ft:gpt-4o-mini:pudong::v2", 30, "canary"),
    ]
    client = sdk(gateway, gateway.keys["airport-cs"])
    seen = {}
    for i in range(40):
        raw = client.chat.completions.with_raw_response.create(model=name, messages=QUESTION, user=f"u{i}")
        seen[raw.headers["x-tunegate-model"]] = (raw.headers["x-tunegate-served-by"], raw.headers["x-tunegate-weight"])
        last = raw.headers["x-request-id"]
    assert seen == {"ft:gpt-4o-mini:pudong::v1": ("model", "70"), "ft:gpt-4o-mini:pudong::v2": ("canary", "30")}
    record = gateway.usage(last)
    assert record.canary_weight == int(seen[record.model][1]) and record.alias_version == 1


# -- scopes and patterns -----------------------------------------------------------------------------------


def test_alias_names_with_slashes_and_stars_are_addressed_as_they_are(gateway: GatewayHandle) -> None:
    stem = f"org-{uid()}"
    ok(put_alias(gateway, f"{stem}/llama-3-8b", upstream="fake", model="meta-llama/Meta-Llama-3-8B"))
    ok(put_alias(gateway, f"{stem}/*", upstream="fake", allow_catch_all=True))
    try:
        assert ok(gateway.admin("GET", f"/admin/aliases/{stem}/llama-3-8b"))["name"] == f"{stem}/llama-3-8b"
        assert ok(gateway.admin("GET", f"/admin/alias-versions/{stem}/*"))[0]["version"] == 1
        key = gateway.keys["airport-cs"]
        assert served(gateway, key, f"{stem}/llama-3-8b") == "meta-llama/Meta-Llama-3-8B"
        assert served(gateway, key, f"{stem}/mistral-7b") == f"{stem}/mistral-7b"
    finally:
        ok(gateway.admin("DELETE", f"/admin/aliases/{stem}/*"))


def test_team_alias_shadows_the_global_one_for_that_team_only(gateway: GatewayHandle) -> None:
    name = f"shared-{uid()}"
    ok(put_alias(gateway, name, upstream="fake", model="gpt-4o-mini"))
    ok(put_alias(gateway, name, team="airport-cs", upstream="fake", model="ft:gpt-4o-mini:airport::own"))
    assert served(gateway, gateway.keys["airport-cs"], name) == "ft:gpt-4o-mini:airport::own"
    assert served(gateway, gateway.keys["other-team"], name) == "gpt-4o-mini"
    ok(gateway.admin("PATCH", f"/admin/aliases/{name}", json={"disabled": True}, params={"team": "airport-cs"}))
    with pytest.raises(openai.NotFoundError):  # a team that switched its alias off does not get the global one
        served(gateway, gateway.keys["airport-cs"], name)
    ok(gateway.admin("DELETE", f"/admin/aliases/{name}", params={"team": "airport-cs"}))
    assert served(gateway, gateway.keys["airport-cs"], name) == "gpt-4o-mini"  # deleted: the global one again


def test_patterns_forward_the_model_name_exact_wins_longest_wins(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    stem = f"gpt-{uid()}"
    key = gateway.keys["airport-cs"]
    ok(put_alias(gateway, f"{stem}-exact", upstream="fake", model="gpt-4o"))
    refused = error(put_alias(gateway, f"{stem}*", upstream="fake"), 400)
    assert refused["param"] == "allow_catch_all" and f"{stem}-exact" in refused["message"]
    ok(put_alias(gateway, f"{stem}*", upstream="fake", allow_catch_all=True))
    ok(put_alias(gateway, f"{stem}-mini*", upstream="fake", system_prompt="Longer pattern."))
    try:
        assert served(gateway, key, f"{stem}-4o-2024") == f"{stem}-4o-2024"  # forwarded unchanged
        assert fake_upstream.last_json()["model"] == f"{stem}-4o-2024"
        assert fake_upstream.last_json()["messages"] == QUESTION
        assert served(gateway, key, f"{stem}-mini-1") == f"{stem}-mini-1"
        assert fake_upstream.last_json()["messages"][0] == {"role": "system", "content": "Longer pattern."}
        assert served(gateway, key, f"{stem}-exact") == "gpt-4o"  # the exact alias wins
        with pytest.raises(openai.NotFoundError):
            served(gateway, key, f"other-{stem}")

        ids = {m.id for m in sdk(gateway, key).models.list()}
        assert f"{stem}-exact" in ids and not any("*" in i for i in ids)  # patterns are not listed
        assert sdk(gateway, key).models.retrieve(f"{stem}-anything").id == f"{stem}-anything"

        raw = sdk(gateway, key).chat.completions.with_raw_response.create(model=f"{stem}-x", messages=QUESTION)
        record = gateway.usage(raw.headers["x-request-id"])
        assert (record.alias, record.model, record.alias_version) == (f"{stem}-x", f"{stem}-x", 1)
    finally:
        for name in (f"{stem}*", f"{stem}-mini*"):
            ok(gateway.admin("DELETE", f"/admin/aliases/{name}"))
    with pytest.raises(openai.NotFoundError):
        served(gateway, key, f"{stem}-4o-2024")


def test_a_catch_all_needs_the_flag_and_a_team_pattern_shadows_a_global_one(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    team, key = gateway.new_team_key("patterns")
    refused = error(put_alias(gateway, "*", team=team, upstream="fake"), 400)
    assert refused["param"] == "allow_catch_all" and "--allow-catch-all" in refused["message"]
    ok(put_alias(gateway, "*", team=team, upstream="fake", allow_catch_all=True))
    assert served(gateway, key, "any-model-at-all") == "any-model-at-all"
    assert served(gateway, key, "pudong-support") == "ft:gpt-3.5-turbo-0613:pudong::8abc123"  # exact wins
    with pytest.raises(openai.NotFoundError):  # the team's catch-all is its own
        served(gateway, gateway.keys["airport-cs"], "any-model-at-all")

    stem = f"shadow-{uid()}"
    ok(put_alias(gateway, f"{stem}*", upstream="fake", system_prompt="global"))
    ok(put_alias(gateway, f"{stem}*", team=team, upstream="fake", system_prompt="team"))
    try:
        served(gateway, key, f"{stem}-1")
        assert fake_upstream.last_json()["messages"][0]["content"] == "team"
        served(gateway, gateway.keys["airport-cs"], f"{stem}-1")
        assert fake_upstream.last_json()["messages"][0]["content"] == "global"
    finally:
        ok(gateway.admin("DELETE", f"/admin/aliases/{stem}*"))


def test_apply_through_the_api_checks_the_file_and_patterns(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    team = f"catchall-{uid()}"
    config: dict[str, Any] = {
        "upstreams": {"fake": {"base_url": fake_upstream.base_url, "api_key": "$TUNEGATE_TEST_UPSTREAM_KEY"}},
        "teams": [{"name": team}],
        "aliases": {"*": {"upstream": "fake", "team": team}},
    }
    head = audit(gateway, limit=1)[0]["id"]
    refused = error(gateway.admin("POST", "/admin/apply", json={"config": config}), 400)
    assert refused["param"] == "allow_catch_all"
    unknown = error(gateway.admin("POST", "/admin/apply", json={"config": {**config, "teems": []}}), 400)
    assert (unknown["param"], unknown["message"]) == ("config", "<apply>: unknown key 'teems'")
    assert audit(gateway, limit=1)[0]["id"] == head  # nothing half-written: the team was not kept either
    error(gateway.admin("GET", f"/admin/teams/{team}"), 404)

    config["aliases"]["*"]["allow_catch_all"] = True
    dry = ok(gateway.admin("POST", "/admin/apply", json={"config": config, "dry_run": True}))
    assert [(c["kind"], c["name"], c["action"], c["team"]) for c in dry["changes"]] == [
        ("team", team, "create", None),
        ("alias", "*", "create", team),
    ]
    error(gateway.admin("GET", f"/admin/teams/{team}"), 404)
    applied = ok(gateway.admin("POST", "/admin/apply", json={"config": config}))
    assert applied["changes"] == dry["changes"]
    assert ok(gateway.admin("POST", "/admin/apply", json={"config": config}))["changes"] == []
    key = ok(gateway.admin("POST", "/admin/keys", json={"team": team}), 201)["key"]
    assert served(gateway, key, "gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"


# -- teams and keys ----------------------------------------------------------------------------------------


def test_teams_list_show_rename_disable(gateway: GatewayHandle) -> None:
    team, key = gateway.new_team_key("ops")
    assert error(gateway.admin("POST", "/admin/teams", json={"name": team}), 409)["param"] == "name"
    listed = {t["name"]: t for t in ok(gateway.admin("GET", "/admin/teams"))}
    assert listed[team]["active_keys"] == 1 and listed[team]["disabled"] is False
    name = f"limited-{uid()}"
    ok(put_alias(gateway, name, upstream="fake", model="gpt-4o-mini", teams=[team]))
    assert served(gateway, key, name) == "gpt-4o-mini"

    renamed = f"{team}-renamed"
    ok(gateway.admin("PATCH", f"/admin/teams/{team}", json={"name": renamed}))
    shown = ok(gateway.admin("GET", f"/admin/teams/{renamed}"))
    assert [k["status"] for k in shown["keys"]] == ["active"]
    alias = ok(gateway.admin("GET", f"/admin/aliases/{name}"))
    assert (alias["version"], alias["spec"]["teams"]) == (2, [renamed])  # the alias follows the rename
    assert served(gateway, key, name) == "gpt-4o-mini"
    error(gateway.admin("PATCH", f"/admin/teams/{renamed}", json={"name": "other-team"}), 409)

    ok(gateway.admin("PATCH", f"/admin/teams/{renamed}", json={"disabled": True}))
    with pytest.raises(openai.AuthenticationError):
        served(gateway, key, name)
    ok(gateway.admin("PATCH", f"/admin/teams/{renamed}", json={"disabled": False}))
    assert served(gateway, key, name) == "gpt-4o-mini"
    assert [e["action"] for e in audit(gateway, target=renamed)][:3] == ["team.enable", "team.disable", "team.rename"]


def test_keys_list_limit_expire_and_revoke(gateway: GatewayHandle) -> None:
    team, _ = gateway.new_team_key("keys")
    name = f"only-{uid()}"
    ok(put_alias(gateway, name, upstream="fake", model="gpt-4o-mini"))
    created = ok(
        gateway.admin("POST", "/admin/keys", json={"team": team, "name": "ci", "allowed_aliases": [name]}), 201
    )
    key = created["key"]
    assert key.startswith("tg-") and len(key) > 40 and created["prefix"] == key[:10]
    assert served(gateway, key, name) == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        served(gateway, key, "pudong-support")

    listing = gateway.admin("GET", "/admin/keys", params={"team": team})
    assert key not in listing.text and "hash" not in listing.text
    assert [(k["name"], k["allowed_aliases"], k["status"]) for k in ok(listing)] == [
        (None, None, "active"),
        ("ci", [name], "active"),
    ]

    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert error(gateway.admin("PATCH", f"/admin/keys/{created['id']}", json={"expires_at": past}), 400)["param"] == (
        "expires_at"
    )
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    changed = ok(
        gateway.admin("PATCH", f"/admin/keys/{created['id']}", json={"expires_at": soon, "allowed_aliases": None})
    )
    assert changed["allowed_aliases"] is None
    assert served(gateway, key, "pudong-support")  # the limit is lifted

    def refused() -> bool:  # expiry is checked on each request, cached or not
        try:
            served(gateway, key, name)
        except openai.AuthenticationError:
            return True
        return False

    eventually(refused, what="the expired key to be refused (an expired key still works)", interval=0.1)
    assert ok(gateway.admin("GET", f"/admin/keys/{created['id']}"))["status"] == "expired"

    other = ok(gateway.admin("POST", "/admin/keys", json={"team": team}), 201)
    assert served(gateway, other["key"], name) == "gpt-4o-mini"
    revoked = ok(gateway.admin("POST", f"/admin/keys/{other['id']}/revoke"))
    assert revoked["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError):
        served(gateway, other["key"], name)
    error(gateway.admin("PATCH", f"/admin/keys/{other['id']}", json={"name": "x"}), 409)
    error(gateway.admin("GET", "/admin/keys/999999"), 404)


def test_named_admin_keys_act_under_their_name_and_only_on_admin(gateway: GatewayHandle) -> None:
    person = f"alice-{uid()}"
    created = ok(
        gateway.admin("POST", "/admin/keys", json={"team": "airport-cs", "name": person, "role": "admin"}), 201
    )
    error(gateway.admin("POST", "/admin/keys", json={"team": "airport-cs", "name": person, "role": "admin"}), 409)
    assert error(gateway.admin("POST", "/admin/keys", json={"team": "airport-cs", "role": "admin"}), 400)["param"] == (
        "name"
    )
    headers = {"authorization": f"Bearer {created['key']}"}
    name = f"by-{person}"
    response = httpx.put(
        gateway.url + f"/admin/aliases/{name}", json={"upstream": "fake", "model": "gpt-4o-mini"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert ok(gateway.admin("GET", f"/admin/alias-versions/{name}"))[0]["created_by"] == person
    assert audit(gateway, actor=person)[0]["action"] == "alias.set"

    with pytest.raises(openai.PermissionDeniedError):  # an admin key does not call models
        served(gateway, created["key"], name)
    team_key = httpx.get(
        gateway.url + "/admin/audit", headers={"authorization": f"Bearer {gateway.keys['airport-cs']}"}
    )
    assert error(team_key, 401)["code"] == "invalid_api_key"

    ok(gateway.admin("POST", f"/admin/keys/{created['id']}/revoke"))
    assert error(httpx.get(gateway.url + "/admin/audit", headers=headers), 401)["code"] == "invalid_api_key"


# -- upstreams, audit, OpenAPI --------------------------------------------------------------------------------


def test_upstreams_are_records_and_cannot_be_deleted_while_used(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    upstream = f"up-{uid()}"
    literal = error(
        gateway.admin("PUT", f"/admin/upstreams/{upstream}", json={"base_url": "http://x", "api_key": "sk-1"}), 400
    )
    assert literal["param"] == "api_key"
    assert error(gateway.admin("PUT", f"/admin/upstreams/{upstream}", json={"base_url": "ftp://x"}), 400)["param"] == (
        "base_url"
    )
    body = {"base_url": "http://127.0.0.1:9/v1", "api_key": "$TUNEGATE_TEST_UPSTREAM_KEY"}
    assert ok(gateway.admin("PUT", f"/admin/upstreams/{upstream}", json=body))["changed"] is True
    assert ok(gateway.admin("PUT", f"/admin/upstreams/{upstream}", json=body))["changed"] is False
    name = f"via-{uid()}"
    ok(put_alias(gateway, name, upstream=upstream, model="gpt-4o-mini"))
    with pytest.raises(openai.InternalServerError):  # nothing listens there
        served(gateway, gateway.keys["airport-cs"], name)

    ok(gateway.admin("PUT", f"/admin/upstreams/{upstream}", json={**body, "base_url": fake_upstream.base_url}))
    assert served(gateway, gateway.keys["airport-cs"], name) == "gpt-4o-mini"  # the new URL, at once
    used = error(gateway.admin("DELETE", f"/admin/upstreams/{upstream}"), 409)
    assert name in used["message"]
    assert ok(gateway.admin("GET", f"/admin/upstreams/{upstream}"))["used_by"] == [name]
    ok(gateway.admin("DELETE", f"/admin/aliases/{name}"))
    ok(gateway.admin("DELETE", f"/admin/upstreams/{upstream}"))
    error(gateway.admin("GET", f"/admin/upstreams/{upstream}"), 404)
    assert [e["action"] for e in audit(gateway, target=upstream)] == ["upstream.delete", "upstream.set", "upstream.set"]


def test_the_admin_api_is_in_the_openapi_document(gateway: GatewayHandle) -> None:
    document = httpx.get(gateway.url + "/schema/openapi.json").json()
    paths = document["paths"]
    for path, method in [
        ("/admin/teams", "get"),
        ("/admin/teams/{name}", "patch"),
        ("/admin/keys", "post"),
        ("/admin/keys/{key_id}/revoke", "post"),
        ("/admin/aliases", "get"),
        ("/admin/aliases/{name}", "put"),
        ("/admin/alias-versions/{name}", "post"),
        ("/admin/upstreams/{name}", "delete"),
        ("/admin/audit", "get"),
        ("/admin/apply", "post"),
    ]:
        assert method in paths[path], (path, method)
    assert "AliasChange" in str(document["components"]["schemas"])

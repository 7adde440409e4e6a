"""The ``tunegate`` admin commands as a platform team runs them: subprocesses against a live gateway."""

from __future__ import annotations

import json
import subprocess
import textwrap
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.utils.gateways import ADMIN_KEY, PUDONG_PROMPT, GatewayHandle
from tests.utils.processes import run_tunegate
from tests.utils.upstreams import FakeUpstreamHandle

pytestmark = pytest.mark.slow  # the command line as subprocesses
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "国际航班提前多久办理值机?"}]
FINE_TUNE = "ft:gpt-3.5-turbo-0613:pudong::8abc123"


def uid() -> str:
    return uuid.uuid4().hex[:8]


def tunegate(
    gateway: GatewayHandle, *args: str, key: str | None = ADMIN_KEY, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    env = {"TUNEGATE_URL": gateway.url}
    if key is not None:
        env["TUNEGATE_ADMIN_KEY"] = key
    result = run_tunegate(args, env=env)
    assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def tunegate_json(gateway: GatewayHandle, *args: str) -> Any:
    return json.loads(tunegate(gateway, *args, "--json").stdout)


def ask(gateway: GatewayHandle, key: str, model: str, **kwargs: Any) -> tuple[str, str]:
    """One chat request: the target that served it, and how (model, canary or fallback)."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=QUESTION, **kwargs)
    return raw.headers["x-tunegate-model"], raw.headers["x-tunegate-served-by"]


def test_pudong_support_lifecycle_base_model_then_fine_tune_then_rollback(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    name = f"pudong-support-{uid()}"
    key = gateway.keys["airport-cs"]
    out = tunegate(
        gateway, "alias", "set", name, "--upstream", "fake", "--model", "gpt-3.5-turbo",
        "--system-prompt", PUDONG_PROMPT, "--reason", "base model + prompt until the fine-tune is ready",
    ).stdout  # fmt: skip
    assert out.strip() == f"created alias {name} (global): v1 → gpt-3.5-turbo"
    assert ask(gateway, key, name) == ("gpt-3.5-turbo", "model")
    assert fake_upstream.last_json()["messages"] == [{"role": "system", "content": PUDONG_PROMPT}, *QUESTION]

    out = tunegate(
        gateway, "alias", "set", name, "--model", FINE_TUNE, "--system-prompt", "",
        "--fallback-model", "gpt-3.5-turbo", "--fallback-system-prompt", PUDONG_PROMPT, "--reason", "fine-tune ready",
    ).stdout  # fmt: skip
    assert out.strip() == f"updated alias {name} (global): v2 → {FINE_TUNE}"
    assert ask(gateway, key, name) == (FINE_TUNE, "model")  # the very next request
    assert fake_upstream.last_json()["messages"] == QUESTION  # the fine-tune needs no prompt

    out = tunegate(gateway, "alias", "rollback", name, "v1", "--reason", "answers got worse").stdout
    assert out.strip() == f"rolled back alias {name} to v1: now v3 → gpt-3.5-turbo"
    assert ask(gateway, key, name) == ("gpt-3.5-turbo", "model")
    assert fake_upstream.last_json()["messages"][0] == {"role": "system", "content": PUDONG_PROMPT}

    history = tunegate(gateway, "alias", "history", name).stdout.splitlines()
    assert history[0].split() == ["VERSION", "FROM", "CREATED", "BY", "TARGET", "REASON"]
    assert history[1].split()[:2] == ["v3", "v1"] and history[1].endswith("rollback to v1: answers got worse")
    assert [line.split()[0] for line in history[1:]] == ["v3", "v2", "v1"]
    shown = tunegate_json(gateway, "alias", "show", name)
    assert [v["version"] for v in shown["lineage"]] == [3, 1]
    assert shown["spec"]["fallback"] is None  # v1 had none; the rollback restores v1 whole

    missing = tunegate(gateway, "alias", "rollback", name, "9", expect=1)
    assert missing.stderr.strip() == (
        f"tunegate: error: alias '{name}' has no version 9; its versions are 1 to 3 (HTTP 404)"
    )
    bad_split = tunegate(gateway, "alias", "set", name, "--split", "a=60", "--split", "b=30", expect=1)
    assert "'split' weights add up to 90" in bad_split.stderr
    assert tunegate_json(gateway, "alias", "show", name)["version"] == 3  # nothing half-written


def test_canary_split_over_1000_users_is_within_3_points_and_sticky(gateway: GatewayHandle) -> None:
    name = f"canary-{uid()}"
    new = "ft:gpt-3.5-turbo-0613:pudong::v2"
    tunegate(gateway, "alias", "set", name, "--upstream", "fake", "--split", f"{FINE_TUNE}=90", "--split", f"{new}=10")
    key = gateway.keys["airport-cs"]
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    first: dict[str, str] = {}
    for i in range(1000):
        raw = client.chat.completions.with_raw_response.create(model=name, messages=QUESTION, user=f"traveller-{i}")
        first[f"traveller-{i}"] = raw.headers["x-tunegate-model"]
        assert raw.headers["x-tunegate-weight"] == ("10" if raw.headers["x-tunegate-model"] == new else "90")
    canary_share = sum(model == new for model in first.values()) / 10  # percent of 1,000
    assert abs(canary_share - 10) <= 3, canary_share
    for user in list(first)[::10]:  # one end user sees one model
        raw = client.chat.completions.with_raw_response.create(model=name, messages=QUESTION, user=user)
        assert raw.headers["x-tunegate-model"] == first[user]
    record = gateway.usage(raw.headers["x-request-id"])
    assert (record.model, record.served_by, record.canary_weight) == (
        first[user],
        "canary" if first[user] == new else "model",
        10 if first[user] == new else 90,
    )


def test_a_team_alias_shadows_the_global_one_only_for_that_team(gateway: GatewayHandle) -> None:
    name = f"faq-{uid()}"
    tunegate(gateway, "alias", "set", name, "--upstream", "fake", "--model", "gpt-4o-mini")
    out = tunegate(gateway, "alias", "set", name, "--team", "airport-cs", "--upstream", "fake", "--model", FINE_TUNE)
    assert out.stdout.strip() == f"created alias {name} (team airport-cs): v1 → {FINE_TUNE}"
    assert ask(gateway, gateway.keys["airport-cs"], name) == (FINE_TUNE, "model")
    assert ask(gateway, gateway.keys["other-team"], name) == ("gpt-4o-mini", "model")
    rows = [line.split() for line in tunegate(gateway, "alias", "list").stdout.splitlines() if line.startswith(name)]
    assert [row[1] for row in rows] == ["(global)", "airport-cs"]


def test_a_revoked_key_and_a_disabled_team_get_401_on_the_next_request(gateway: GatewayHandle) -> None:
    team = f"kiosk-{uid()}"
    assert tunegate(gateway, "team", "create", team).stdout.strip() == f"created team {team}"
    first = tunegate_json(gateway, "key", "create", "--team", team, "--name", "kiosk-1")
    second = tunegate_json(gateway, "key", "create", "--team", team, "--name", "kiosk-2")
    assert ask(gateway, first["key"], "pudong-support")[0] == FINE_TUNE

    listing = tunegate(gateway, "key", "list", "--team", team).stdout
    assert first["key"] not in listing and first["prefix"] + "…" in listing
    out = tunegate(gateway, "key", "revoke", str(first["id"])).stdout
    assert out.strip() == f"key {first['id']} ({first['prefix']}…, team {team}) is revoked"
    with pytest.raises(openai.AuthenticationError) as revoked:
        ask(gateway, first["key"], "pudong-support")
    assert revoked.value.status_code == 401 and revoked.value.code == "invalid_api_key"
    assert ask(gateway, second["key"], "pudong-support")[0] == FINE_TUNE

    tunegate(gateway, "team", "disable", team)
    with pytest.raises(openai.AuthenticationError):
        ask(gateway, second["key"], "pudong-support")
    tunegate(gateway, "team", "enable", team)
    assert ask(gateway, second["key"], "pudong-support")[0] == FINE_TUNE
    statuses = {k["name"]: k["status"] for k in tunegate_json(gateway, "team", "show", team)["keys"]}
    assert statuses == {"kiosk-1": "revoked", "kiosk-2": "active"}


def _audit_head(gateway: GatewayHandle) -> int:
    entries = tunegate_json(gateway, "audit", "--limit", "1")
    return int(entries[0]["id"])


def test_apply_is_idempotent_and_its_dry_run_changes_nothing(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle, tmp_path: Path
) -> None:
    tag = uid()
    team, upstream, alias, canary = f"apply-{tag}", f"up-{tag}", f"applied-{tag}", f"split-{tag}"
    config = tmp_path / "tunegate.yaml"

    def write(model: str) -> None:
        config.write_text(
            textwrap.dedent(
                f"""
                upstreams:
                  {upstream}: {{base_url: "{fake_upstream.base_url}", api_key: "$TUNEGATE_TEST_UPSTREAM_KEY"}}
                teams:
                  - name: {team}
                aliases:
                  {alias}:
                    upstream: {upstream}
                    model: {model}
                    fallback: {{model: gpt-3.5-turbo, system_prompt: "{PUDONG_PROMPT}"}}
                  {canary}:
                    upstream: {upstream}
                    team: {team}
                    split:
                      - {{model: gpt-4o-mini, weight: 80}}
                      - {{model: gpt-4o, weight: 20}}
                """
            ),
            encoding="utf-8",
        )

    write(FINE_TUNE)
    head = _audit_head(gateway)
    dry = tunegate(gateway, "apply", "-f", str(config), "--dry-run").stdout.splitlines()
    assert dry[0] == f"+ team {team}"
    assert f"+ alias {alias} → v1" in dry and f"+ alias {canary} (team {team}) → v1" in dry
    assert f"    target.model: {json.dumps(FINE_TUNE)}" in dry
    assert dry[-1] == "dry run: 4 changes, nothing written"
    assert _audit_head(gateway) == head
    assert alias not in tunegate(gateway, "alias", "list").stdout
    assert tunegate(gateway, "team", "show", team, expect=1).stderr.strip() == (
        f"tunegate: error: no team named '{team}' (HTTP 404)"
    )

    applied = tunegate(gateway, "apply", "-f", str(config)).stdout.splitlines()
    assert applied == [*dry[:-1], "applied 4 changes"]  # the same diff, now written
    assert ask(gateway, gateway.keys["airport-cs"], alias) == (FINE_TUNE, "model")
    team_key = tunegate_json(gateway, "key", "create", "--team", team)["key"]
    assert ask(gateway, team_key, canary, user="someone")[0] in {"gpt-4o-mini", "gpt-4o"}
    head = _audit_head(gateway)

    again = tunegate(gateway, "apply", "-f", str(config)).stdout
    assert again.strip() == "no changes: the gateway already says what the file says"
    assert _audit_head(gateway) == head
    assert tunegate_json(gateway, "alias", "show", alias)["version"] == 1

    write("ft:gpt-3.5-turbo-0613:pudong::9def456")
    changed = tunegate(gateway, "apply", "-f", str(config)).stdout.splitlines()
    assert changed == [
        f"~ alias {alias} → v2",
        f'    target.model: "{FINE_TUNE}" → "ft:gpt-3.5-turbo-0613:pudong::9def456"',
        "applied 1 change",
    ]
    latest = tunegate_json(gateway, "alias", "history", alias)[0]
    assert (latest["version"], latest["reason"], latest["created_by"]) == (2, "apply", "admin")
    assert ask(gateway, gateway.keys["airport-cs"], alias)[0] == "ft:gpt-3.5-turbo-0613:pudong::9def456"

    pruning = tunegate(gateway, "apply", "-f", str(config), "--prune", "--dry-run").stdout.splitlines()
    assert {"- alias pudong-support", "- upstream fake", "- upstream down"} <= set(pruning)
    assert ask(gateway, gateway.keys["airport-cs"], "pudong-support")[0] == FINE_TUNE  # a dry run: still there

    config.write_text("aliases:\n  x: {upstream: nowhere, model: m}\n", encoding="utf-8")
    bad = tunegate(gateway, "apply", "-f", str(config), expect=1)
    assert bad.stderr.strip() == f"tunegate: error: {config}: aliases.x: unknown upstream 'nowhere' (HTTP 400)"


def test_upstream_and_audit_commands(gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle) -> None:
    upstream, name = f"azure-{uid()}", f"east-{uid()}"
    person = f"ops-{uid()}"
    admin_key = tunegate_json(gateway, "key", "create", "--team", "airport-cs", "--role", "admin", "--name", person)
    args = [
        "upstream",
        "set",
        upstream,
        "--base-url",
        fake_upstream.base_url,
        "--api-key-env",
        "TUNEGATE_TEST_UPSTREAM_KEY",
    ]
    out = tunegate(gateway, *args, key=admin_key["key"]).stdout.splitlines()
    assert out[0].split() == ["UPSTREAM", "BASE", "URL", "API", "KEY", "USED", "BY", "UPDATED"]
    assert out[1].split()[:3] == [upstream, fake_upstream.base_url, "$TUNEGATE_TEST_UPSTREAM_KEY"]
    tunegate(gateway, "alias", "set", name, "--upstream", upstream, "--model", "gpt-4o", key=admin_key["key"])
    assert ask(gateway, gateway.keys["airport-cs"], name) == ("gpt-4o", "model")
    refused = tunegate(gateway, "upstream", "delete", upstream, expect=1)
    assert f"upstream '{upstream}' is used by {name}" in refused.stderr

    entries = tunegate_json(gateway, "audit", "--actor", person)
    assert [(e["action"], e["target"]) for e in entries] == [("alias.set", name), ("upstream.set", upstream)]
    log = tunegate(gateway, "audit", "--actor", person).stdout.splitlines()
    assert log[1].split()[3:6] == [person, "alias.set", name]


def test_usage_errors_exit_2_and_server_errors_exit_1(gateway: GatewayHandle) -> None:
    no_key = tunegate(gateway, "team", "list", key=None, expect=2)
    assert no_key.stderr.strip() == "tunegate: set TUNEGATE_ADMIN_KEY to an admin key of the gateway"
    tunegate(gateway, "alias", "set", expect=2)  # argparse: the name is missing
    assert "not a version number" in tunegate(gateway, "alias", "rollback", "pudong-support", "latest", expect=2).stderr
    wrong = tunegate(gateway, "team", "list", key=gateway.keys["airport-cs"], expect=1)
    assert wrong.stderr.strip() == "tunegate: error: Incorrect admin key provided. (HTTP 401)"
    down = tunegate(gateway, "team", "list", "--url", "http://127.0.0.1:9", expect=1)
    assert down.stderr.startswith("tunegate: error: cannot reach the gateway at http://127.0.0.1:9")
    teams = tunegate(gateway, "team", "list").stdout.splitlines()
    assert teams[0].split() == ["TEAM", "STATE", "ACTIVE", "KEYS", "CREATED"]
    assert {row.split()[0] for row in teams[1:]} >= {"airport-cs", "other-team"}
    assert {t["name"] for t in tunegate_json(gateway, "team", "list")} >= {"airport-cs", "other-team"}

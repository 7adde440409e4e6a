"""The ``tunegate`` command as an operator drives it from a shell and from CI: --version, options before or after
the command, suggestions, completion, examples, --output, key create in $(...), apply's exit code, config check,
job statuses and time zones. Subprocesses, against the shared gateway where a server is needed."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from zoneinfo import ZoneInfo

import openai
import pytest
import yaml

from tests.utils.gateways import ADMIN_KEY, GatewayHandle
from tests.utils.processes import TUNEGATE, command_env, run_tunegate
from tests.utils.upstreams import FakeUpstreamHandle

pytestmark = pytest.mark.slow  # the command line as subprocesses
STATUSES = "validating_files, queued, running, succeeded, failed, cancelled"


def admin_env(gateway: GatewayHandle | None = None, **extra: str) -> dict[str, str]:
    env = {"TUNEGATE_ADMIN_KEY": ADMIN_KEY, **extra}
    if gateway is not None:
        env["TUNEGATE_URL"] = gateway.url
    return env


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


# -- offline ----------------------------------------------------------------------------------------------


def test_version_is_the_installed_distributions() -> None:
    done = run_tunegate(["--version"])
    assert (done.returncode, done.stdout, done.stderr) == (0, f"tunegate {metadata.version('tunegate')}\n", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["aliass"], "tunegate: error: unknown command 'aliass': did you mean 'alias'?"),
        (["alias", "sett", "x"], "tunegate alias: error: unknown command 'sett': did you mean 'set'?"),
        (["--json", "finetun", "list"], "tunegate: error: unknown command 'finetun': did you mean 'finetune'?"),
        (["zzz"], "tunegate: error: unknown command 'zzz': see 'tunegate --help'"),
        (
            ["key", "create", "--team", "t", "--role", "admn"],
            "tunegate key create: error: argument --role: invalid choice: 'admn'; did you mean 'admin'? "
            "(choose from team, finance, team_finance, admin)",
        ),
    ],
)
def test_a_mistyped_name_is_a_usage_error_with_a_suggestion(args: list[str], message: str) -> None:
    done = run_tunegate(args, env=admin_env())
    assert (done.returncode, done.stdout, last_line(done.stderr)) == (2, "", message)


def test_finetune_list_refuses_an_unknown_status_naming_the_valid_ones() -> None:
    done = run_tunegate(["finetune", "list", "--status", "done"], env=admin_env(TUNEGATE_URL="http://127.0.0.1:9"))
    assert (done.returncode, done.stdout) == (2, "")
    assert last_line(done.stderr) == (
        f"tunegate finetune list: error: argument --status: invalid choice: 'done' (choose from {STATUSES})"
    )


def bash_completes(script: str, *words: str) -> list[str]:
    """What bash offers for the command line ``words`` (the last one being completed), with the script loaded."""
    program = (
        f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        '_tunegate; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.split()


def test_completion_scripts_come_from_the_parser() -> None:
    bash = run_tunegate(["completion", "bash"])
    assert (bash.returncode, bash.stderr) == (0, "")
    assert bash.stdout.splitlines()[-1] == "complete -o default -F _tunegate tunegate"
    assert bash_completes(bash.stdout, "tunegate", "al") == ["alias"]
    assert bash_completes(bash.stdout, "tunegate", "alias", "r") == ["rollback"]
    assert bash_completes(bash.stdout, "tunegate", "--output", "yaml", "alias", "set", "x", "--pol") == ["--policy"]
    assert bash_completes(bash.stdout, "tunegate", "alias", "set", "x", "--policy", "") == [
        "prepend",
        "if_absent",
        "replace",
    ]
    assert bash_completes(bash.stdout, "tunegate", "finetune", "list", "--status", "") == STATUSES.split(", ")
    assert bash_completes(bash.stdout, "tunegate", "completion", "") == ["bash", "zsh", "fish", "-h", "--help"]
    assert bash_completes(bash.stdout, "tunegate", "apply", "--d") == ["--dry-run", "--diff-exit-code"]

    zsh = run_tunegate(["completion", "zsh"])
    assert zsh.returncode == 0
    assert zsh.stdout.splitlines()[:3] == [
        "#compdef tunegate",
        '# zsh completion for tunegate: eval "$(tunegate completion zsh)"',
        "autoload -U +X bashcompinit && bashcompinit",
    ]
    assert bash.stdout.split("\n", 1)[1] == zsh.stdout.split("\n", 3)[3]  # zsh runs the bash functions

    fish = run_tunegate(["completion", "fish"])
    assert fish.returncode == 0
    lines = fish.stdout.splitlines()
    assert "complete -c tunegate -f -n \"test (__tunegate_path) = 'tunegate'\" -a alias -d " in "\n".join(lines)
    assert (
        "complete -c tunegate -n \"test (__tunegate_path) = 'tunegate finetune list'\" -l status "
        f"-x -a '{STATUSES.replace(',', '')}' -d '{STATUSES}'"
    ) in lines

    wrong = run_tunegate(["completion", "tcsh"])
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert "argument shell: invalid choice: 'tcsh' (choose from bash, zsh, fish)" in wrong.stderr


@pytest.mark.parametrize(
    ("group", "example"),
    [
        ([], "  tunegate apply tunegate.yaml --diff-exit-code"),
        (["key"], "  KEY=$(tunegate key create --team airport-cs --name kiosk-1)   # only the key on stdout"),
        (["alias"], '  tunegate alias rollback pudong-support v1 --reason "answers got worse"'),
        (["finetune"], "  tunegate finetune list --status running"),
        (["usage"], "  tunegate usage savings --alias pudong-support"),
        (["apply"], "  tunegate apply tunegate.yaml --dry-run"),
    ],
)
def test_help_ends_with_examples(group: list[str], example: str) -> None:
    done = run_tunegate([*group, "--help"])
    assert done.returncode == 0
    tail = done.stdout.split("\nexamples:\n", 1)[1].splitlines()
    assert example in tail


def write_config(directory: Path, prices: str | None = None) -> Path:
    config = directory / "tunegate.yaml"
    text = """
        upstreams:
          fake: {base_url: "http://127.0.0.1:9/v1"}
        teams:
          - name: kiosks
          - name: desks
        aliases:
          faq: {upstream: fake, model: gpt-4o-mini}
        """
    if prices is not None:
        (directory / "prices.yaml").write_text(prices, encoding="utf-8")
        text += "prices: {file: prices.yaml}\n"
    config.write_text(textwrap.dedent(text), encoding="utf-8")
    return config


def serve_refuses(config: Path) -> str:
    """What ``tunegate serve`` prints on stderr when it refuses ``config`` at start (it must: exit 2)."""
    done = subprocess.run(
        [str(TUNEGATE), "serve", "--config", str(config), "--port", "9"],
        env=command_env({"TUNEGATE_DATABASE_URL": f"sqlite:///{config.parent}/t.db"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    return done.stderr


def test_config_check_validates_as_serve_does_without_a_server(tmp_path: Path) -> None:
    good = run_tunegate(["config", "check", str(write_config(tmp_path))])
    assert (good.returncode, good.stderr) == (0, "")
    assert (
        good.stdout
        == f"{tmp_path / 'tunegate.yaml'}: ok (2 teams, 1 upstream, 1 alias; prices: the packaged price table)\n"
    )

    config = tmp_path / "tunegate.yaml"
    config.write_text(config.read_text(encoding="utf-8") + "colour: blue\n", encoding="utf-8")
    bad = run_tunegate(["config", "check", str(config)])
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == f"tunegate: configuration error:\n{config}: unknown key 'colour'\n"
    assert bad.stderr == serve_refuses(config)

    priced = write_config(
        tmp_path, prices="prices:\n  - {model: gpt-4o, effective: 2024-05-13, input: -1, output: 1}\n"
    )
    wrong_price = run_tunegate(["config", "check", str(priced)])
    assert (wrong_price.returncode, wrong_price.stdout) == (2, "")
    assert wrong_price.stderr.startswith(f"tunegate: configuration error:\n{priced}: prices.file: ")
    assert "'input'" in wrong_price.stderr
    assert wrong_price.stderr == serve_refuses(priced)

    missing = run_tunegate(["config", "check", str(tmp_path / "nowhere.yaml")])
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr.startswith("tunegate: configuration error:\n")


# -- against the gateway -------------------------------------------------------------------------------------


def test_global_options_come_before_or_after_the_command(gateway: GatewayHandle) -> None:
    env = admin_env()  # no $TUNEGATE_URL: only --url says where the gateway is
    before = run_tunegate(["--url", gateway.url, "--output", "json", "team", "show", "airport-cs"], env=env)
    after = run_tunegate(["team", "show", "airport-cs", "--url", gateway.url, "--json"], env=env)
    mixed = run_tunegate(["--json", "team", "show", "--url", gateway.url, "airport-cs"], env=env)
    assert (before.returncode, after.returncode, mixed.returncode) == (0, 0, 0), before.stderr + after.stderr
    assert json.loads(before.stdout)["name"] == "airport-cs"
    assert before.stdout == after.stdout == mixed.stdout
    # Given twice, the one after the command wins (it is read last).
    both = run_tunegate(["--url", "http://127.0.0.1:9", "team", "show", "airport-cs", "--url", gateway.url], env=env)
    assert both.returncode == 0, both.stderr
    assert both.stdout.startswith("team airport-cs (enabled), created ")
    unreachable = run_tunegate(["--url", "http://127.0.0.1:9", "team", "list"], env=env)
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("tunegate: error: cannot reach the gateway at http://127.0.0.1:9: ")


def test_output_yaml_and_json_are_the_same_answer(gateway: GatewayHandle) -> None:
    env = admin_env(gateway)
    as_json = run_tunegate(["--output", "json", "alias", "list"], env=env)
    as_yaml = run_tunegate(["alias", "list", "-o", "yaml"], env=env)
    as_table = run_tunegate(["alias", "list", "--output", "table"], env=env)
    assert (as_json.returncode, as_yaml.returncode, as_table.returncode) == (0, 0, 0)
    aliases = json.loads(as_json.stdout)
    assert yaml.safe_load(as_yaml.stdout) == aliases and aliases
    assert not as_yaml.stdout.lstrip().startswith("[")  # block style, as a person reads YAML
    assert as_table.stdout.splitlines()[0].split()[:3] == ["ALIAS", "TEAM", "VERSION"]
    wrong = run_tunegate(["alias", "list", "--output", "xml"], env=env)
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert "argument -o/--output: invalid choice: 'xml' (choose from table, json, yaml)" in wrong.stderr


def test_key_create_prints_only_the_key_on_stdout(gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle) -> None:
    name = f"kiosk-{uuid.uuid4().hex[:6]}"
    program = f'KEY=$("{TUNEGATE}" key create --team airport-cs --name {name}) && printf "[%s]" "$KEY"'
    done = subprocess.run(
        ["bash", "-c", program],
        env=command_env(admin_env(gateway)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    key = re.fullmatch(r"\[(tg-[A-Za-z0-9_-]{43})\]", done.stdout)
    assert key is not None, done.stdout
    listed = json.loads(run_tunegate(["key", "list", "--team", "airport-cs", "--json"], env=admin_env(gateway)).stdout)
    [made] = [k for k in listed if k["name"] == name]
    assert done.stderr == f"key {made['id']} for team airport-cs (team): shown once, store it now\n"
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key.group(1), max_retries=0)
    assert "pudong-support" in [m.id for m in client.models.list()]  # the captured key works

    as_json = run_tunegate(["key", "create", "--team", "airport-cs", "--json"], env=admin_env(gateway))
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["key"].startswith("tg-")


def test_apply_diff_exit_code_says_whether_the_file_would_change_the_gateway(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    alias, upstream = f"drift-{tag}", f"up-{tag}"
    config = tmp_path / "tunegate.yaml"
    config.write_text(
        f"upstreams:\n  {upstream}: {{base_url: '{fake_upstream.base_url}', api_key: $TUNEGATE_TEST_UPSTREAM_KEY}}\n"
        f"aliases:\n  {alias}: {{upstream: {upstream}, model: gpt-4o-mini}}\n",
        encoding="utf-8",
    )
    env = admin_env(gateway)

    drift = run_tunegate(["apply", str(config), "--diff-exit-code"], env=env)
    assert (drift.returncode, drift.stderr) == (1, ""), drift.stderr
    assert drift.stdout.splitlines() == [
        f"+ upstream {upstream}",
        '    api_key: "$TUNEGATE_TEST_UPSTREAM_KEY"',
        f'    base_url: "{fake_upstream.base_url}"',
        f"+ alias {alias} → v1",
        '    policy: "prepend"',
        '    target.model: "gpt-4o-mini"',
        f'    target.upstream: "{upstream}"',
        "dry run: 2 changes, nothing written",
    ]
    assert run_tunegate(["alias", "show", alias], env=env).returncode == 1  # nothing written

    applied = run_tunegate(["apply", "-f", str(config)], env=env)
    assert (applied.returncode, last_line(applied.stdout)) == (0, "applied 2 changes")
    clean = run_tunegate(["apply", str(config), "--diff-exit-code"], env=env)
    assert (clean.returncode, clean.stdout) == (0, "no changes: the gateway already says what the file says\n")

    twice = run_tunegate(["apply", str(config), "-f", str(config)], env=env)
    assert (twice.returncode, twice.stderr) == (
        2,
        "tunegate: apply: give the file once: tunegate apply FILE (or -f FILE)\n",
    )


def test_times_are_shown_in_the_local_zone_marked_with_it(gateway: GatewayHandle) -> None:
    team = json.loads(run_tunegate(["team", "show", "airport-cs", "--json"], env=admin_env(gateway)).stdout)
    created = datetime.fromisoformat(team["created_at"])
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    for zone, offset in (("Asia/Shanghai", "+08:00"), ("UTC", "+00:00"), ("America/Sao_Paulo", "-03:00")):
        shown = run_tunegate(["team", "show", "airport-cs"], env=admin_env(gateway, TZ=zone))
        assert shown.returncode == 0
        local = created.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
        assert shown.stdout.splitlines()[0] == f"team airport-cs (enabled), created {local}{offset}"

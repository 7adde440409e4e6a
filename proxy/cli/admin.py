"""``tunegate team|key|alias|upstream|audit|apply``: the admin API of a running gateway, from a terminal.

Talks HTTP to ``--url`` (else $TUNEGATE_URL, else http://127.0.0.1:8000) with $TUNEGATE_ADMIN_KEY. Prints
tables, or the server's answer with ``--output json|yaml`` (``--json``). Exit status: 0 done, 1 the server refused
(its message is printed) or could not be reached, 2 a usage error; ``apply --diff-exit-code``: 1 when the file would
change the gateway.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunegate.proxy.cli.client import AdminClient, Handler, UsageError, common_options, runner
from tunegate.proxy.cli.output import lineage_text, short, table, when

# -- output ------------------------------------------------------------------------------------------------


def _scope(alias: dict[str, Any]) -> str:
    return f"team {alias['team']}" if alias.get("team") else "global"


def _split(alias: dict[str, Any]) -> str:
    split = alias["split"]
    if len(split) == 1:
        return str(split[0]["model"])
    return " / ".join(f"{s['model']} {s['weight']}%" for s in split)


# -- teams -------------------------------------------------------------------------------------------------


def _team_row(t: dict[str, Any]) -> list[Any]:
    return [t["name"], "disabled" if t["disabled"] else "enabled", t.get("active_keys"), when(t["created_at"])]


def team_create(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    team = client.call("POST", "/admin/teams", body={"name": args.name})
    return team, f"created team {team['name']}"


def team_list(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    teams = client.call("GET", "/admin/teams")
    return teams, table(["team", "state", "active keys", "created"], [_team_row(t) for t in teams])


def team_show(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    team = client.call("GET", f"/admin/teams/{args.name}")
    lines = [
        f"team {team['name']} ({'disabled' if team['disabled'] else 'enabled'}), created {when(team['created_at'])}",
        f"aliases: {', '.join(team['aliases']) or '-'}",
        "",
        _keys_table(team["keys"]),
    ]
    return team, "\n".join(lines)


def team_rename(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    team = client.call("PATCH", f"/admin/teams/{args.name}", body={"name": args.new_name})
    return team, f"renamed team {args.name} to {team['name']}"


def team_disable(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    disabled = args.team_command == "disable"
    team = client.call("PATCH", f"/admin/teams/{args.name}", body={"disabled": disabled})
    return team, f"team {team['name']} is {'disabled: its keys stop working' if disabled else 'enabled'}"


# -- keys --------------------------------------------------------------------------------------------------


def _keys_table(keys: list[dict[str, Any]]) -> str:
    rows = [
        [k["id"], k["prefix"] + "…", k["name"], k["team"], k["role"], k["allowed_aliases"] or "(all)",
         when(k["expires_at"]), k["status"]]
        for k in keys
    ]  # fmt: skip
    return table(["id", "prefix", "name", "team", "role", "aliases", "expires", "status"], rows)


def parse_expiry(text: str) -> str | None:
    """'never' → None; a date or a date-time (UTC unless it says otherwise) → ISO 8601 with a zone."""
    if text.lower() == "never":
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--expires: '{text}' is not a date (2030-01-31), a date-time or 'never'") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.isoformat()


def key_create(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    body: dict[str, Any] = {"team": args.team, "role": args.role}
    if args.name:
        body["name"] = args.name
    if args.alias:
        body["allowed_aliases"] = args.alias
    if args.expires:
        body["expires_at"] = parse_expiry(args.expires)
    key = client.call("POST", "/admin/keys", body=body)
    # Only the key on stdout, so KEY=$(tunegate key create ...) holds the key and the notice still reaches the terminal.
    print(f"key {key['id']} for team {key['team']} ({key['role']}): shown once, store it now", file=sys.stderr)
    return key, key["key"]


def key_list(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    keys = client.call("GET", "/admin/keys", params={"team": args.team})
    return keys, _keys_table(keys)


def key_show(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    key = client.call("GET", f"/admin/keys/{args.id}")
    return key, _keys_table([key])


def key_update(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    body: dict[str, Any] = {}
    if args.name is not None:
        body["name"] = args.name or None
    if args.all_aliases:
        body["allowed_aliases"] = None
    elif args.alias:
        body["allowed_aliases"] = args.alias
    if args.expires is not None:
        body["expires_at"] = parse_expiry(args.expires)
    if not body:
        raise UsageError("key update: give --name, --alias/--all-aliases or --expires")
    key = client.call("PATCH", f"/admin/keys/{args.id}", body=body)
    return key, _keys_table([key])


def key_revoke(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    key = client.call("POST", f"/admin/keys/{args.id}/revoke")
    return key, f"key {key['id']} ({key['prefix']}…, team {key['team']}) is revoked"


# -- aliases -----------------------------------------------------------------------------------------------


def _alias_path(name: str) -> str:
    return "/admin/aliases/" + name


def _split_entry(text: str) -> dict[str, Any]:
    target, sep, weight = text.rpartition("=")
    if not sep or not target or not weight.isdigit():
        raise UsageError(f"--split: '{text}' is not MODEL=WEIGHT (or MODEL@UPSTREAM=WEIGHT)")
    model, at, upstream = target.rpartition("@")
    entry: dict[str, Any] = {"model": model if at else target, "weight": int(weight)}
    if at:
        entry["upstream"] = upstream
    return entry


def alias_change(args: argparse.Namespace) -> dict[str, Any]:
    """The body of PUT /admin/aliases/NAME: only the fields the command line gives."""
    body: dict[str, Any] = {}
    for field in ("upstream", "model", "policy"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.system_prompt is not None:
        body["system_prompt"] = args.system_prompt or None  # '' clears it
    if args.no_fallback:
        body["fallback"] = None
    else:
        fallback = {
            field: getattr(args, f"fallback_{field}")
            for field in ("model", "upstream", "system_prompt")
            if getattr(args, f"fallback_{field}") is not None
        }
        if fallback:
            body["fallback"] = fallback
    if args.teams is not None:
        body["teams"] = [t for t in args.teams.split(",") if t]
    if args.no_canary:
        body["split"] = None
    elif args.split:
        body["split"] = [_split_entry(s) for s in args.split]
    if args.reason:
        body["reason"] = args.reason
    if args.allow_catch_all:
        body["allow_catch_all"] = True
    return body


def alias_set(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    result = client.call("PUT", _alias_path(args.name), body=alias_change(args), params={"team": args.team})
    alias = result["alias"]
    if not result["changed"]:
        return result, f"alias {alias['name']} ({_scope(alias)}) is unchanged at v{alias['version']}"
    verb = "created" if result["created"] else "updated"
    return result, f"{verb} alias {alias['name']} ({_scope(alias)}): v{alias['version']} → {_split(alias)}"


def _describe_alias(alias: dict[str, Any]) -> list[str]:
    spec = alias["spec"]
    state = "deleted" if alias["deleted"] else "disabled" if alias["disabled"] else "enabled"
    lines = [f"alias {alias['name']} ({_scope(alias)}), v{alias['version']}, {state}"]
    if alias["pattern"]:
        lines.append(f"  pattern   forwards the requested model name to upstream {spec['target']['upstream']}")
    for entry in alias["split"]:
        label = "target" if entry["served_by"] == "model" else "canary"
        lines.append(f"  {label:<9} {entry['upstream']} / {entry['model']}  {entry['weight']}%")
    if spec["target"].get("system_prompt"):
        lines.append(f"  prompt    {short(spec['target']['system_prompt'])}")
    fallback = spec.get("fallback")
    if fallback:
        lines.append(f"  fallback  {fallback['upstream']} / {fallback['model']}")
        lines.append(f"  fb prompt {short(fallback.get('system_prompt'))}")
    lines.append(f"  policy    {spec['policy']}")
    lines.append(f"  teams     {', '.join(spec['teams']) or '(every team)'}")
    return lines


def _versions_table(versions: list[dict[str, Any]]) -> str:
    rows = [
        [f"v{v['version']}", f"v{v['based_on']}" if v["based_on"] else "-", when(v["created_at"]), v["created_by"],
         _target_of(v["spec"]), v["reason"] or "-"]
        for v in versions
    ]  # fmt: skip
    return table(["version", "from", "created", "by", "target", "reason"], rows)


def _target_of(spec: dict[str, Any]) -> str:
    target = f"{spec['target']['upstream']}/{spec['target']['model']}"
    canary = spec.get("canary") or []
    if canary:
        weight = 100 - sum(c["weight"] for c in canary)
        target += f" {weight}%" + "".join(f" + {c['model']} {c['weight']}%" for c in canary)
    return target


def alias_show(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    alias = client.call("GET", _alias_path(args.name), params={"team": args.team})
    lines = [*_describe_alias(alias), "", "lineage (the current version, then the versions it was made from)"]
    lines.append(_versions_table(alias["lineage"]))
    lines += ["", "where each model comes from (job, training file, validation)", lineage_text(alias["sources"])]
    return alias, "\n".join(lines)


def alias_list(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    aliases = client.call("GET", "/admin/aliases", params={"team": args.team, "deleted": args.deleted or None})
    rows = [
        [a["name"], a["team"] or "(global)", f"v{a['version']}",
         "deleted" if a["deleted"] else "disabled" if a["disabled"] else "enabled",
         a["spec"]["target"]["upstream"], "(requested name)" if a["pattern"] else _split(a),
         (a["spec"].get("fallback") or {}).get("model"), when(a["updated_at"])]
        for a in aliases
    ]  # fmt: skip
    return aliases, table(["alias", "team", "version", "state", "upstream", "model", "fallback", "updated"], rows)


def alias_history(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    versions = client.call("GET", "/admin/alias-versions/" + args.name, params={"team": args.team})
    return versions, _versions_table(versions)


def alias_rollback(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    number = args.version.lower().removeprefix("v")
    if not number.isdigit():
        raise UsageError(f"alias rollback: '{args.version}' is not a version number (3 or v3)")
    body = {"rollback_to": int(number), "reason": args.reason or ""}
    result = client.call("POST", "/admin/alias-versions/" + args.name, body=body, params={"team": args.team})
    alias = result["alias"]
    if not result["changed"]:
        return result, f"alias {alias['name']} already serves what v{number} did (v{alias['version']}); nothing changed"
    return result, f"rolled back alias {alias['name']} to v{number}: now v{alias['version']} → {_split(alias)}"


def alias_state(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    command = args.alias_command
    params = {"team": args.team}
    if command == "delete":
        alias = client.call("DELETE", _alias_path(args.name), params=params)
        return alias, f"deleted alias {alias['name']} ({_scope(alias)}); its versions are kept"
    alias = client.call("PATCH", _alias_path(args.name), body={"disabled": command == "disable"}, params=params)
    return alias, f"alias {alias['name']} ({_scope(alias)}) is {command}d"


# -- upstreams ---------------------------------------------------------------------------------------------


def _upstreams_table(upstreams: list[dict[str, Any]]) -> str:
    rows = [[u["name"], u["base_url"], u["api_key"], u["used_by"], when(u["updated_at"])] for u in upstreams]
    return table(["upstream", "base url", "api key", "used by", "updated"], rows)


def upstream_set(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    body = {"base_url": args.base_url, "api_key": f"${args.api_key_env}" if args.api_key_env else None}
    result = client.call("PUT", f"/admin/upstreams/{args.name}", body=body)
    return result, _upstreams_table([result["upstream"]]) + ("" if result["changed"] else "\n(unchanged)")


def upstream_list(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    upstreams = client.call("GET", "/admin/upstreams")
    return upstreams, _upstreams_table(upstreams)


def upstream_show(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    upstream = client.call("GET", f"/admin/upstreams/{args.name}")
    return upstream, _upstreams_table([upstream])


def upstream_delete(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    result = client.call("DELETE", f"/admin/upstreams/{args.name}")
    return result, f"deleted upstream {args.name}"


# -- audit and apply -----------------------------------------------------------------------------------------


def audit(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    params = {"limit": args.limit, "actor": args.actor, "action": args.action, "target": args.target}
    entries = client.call("GET", "/admin/audit", params=params)
    rows = [
        [e["id"], when(e["created_at"]), e["actor"], e["action"], e["target"],
         short(", ".join(f"{k}={v}" for k, v in e["detail"].items() if v not in (None, "")), 70)]
        for e in entries
    ]  # fmt: skip
    return entries, table(["id", "when", "actor", "action", "target", "detail"], rows)


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list) and all(isinstance(v, dict) and "weight" in v for v in value):
        return ", ".join(f"{v['upstream']}/{v['model']} {v['weight']}%" for v in value) or "none"  # canaries
    return json.dumps(value, ensure_ascii=False)


def describe_change(change: dict[str, Any]) -> list[str]:
    mark = {"create": "+", "update": "~", "delete": "-"}[change["action"]]
    where = f" (team {change['team']})" if change.get("team") else ""
    version = f" → v{change['version']}" if change.get("version") else ""
    lines = [f"{mark} {change['kind']} {change['name']}{where}{version}"]
    for field, values in change["fields"].items():
        before, after = values["before"], values["after"]
        if change["action"] == "create":
            lines.append(f"    {field}: {short(_value(after), 100)}")
        else:
            lines.append(f"    {field}: {short(_value(before), 60)} → {short(_value(after), 60)}")
    return lines


def apply(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str, int]:
    import yaml

    if (args.file is None) == (args.file_option is None):
        raise UsageError("apply: give the file once: tunegate apply FILE (or -f FILE)")
    path = Path(args.file or args.file_option)
    dry_run = args.dry_run or args.diff_exit_code
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path}: the top level must be a mapping of keys")
    # YAML may hold values JSON has no type for (an unquoted date): send them as text; the server judges them.
    config = json.loads(json.dumps(config, default=str))
    body = {"config": config, "source": str(path), "dry_run": dry_run, "prune": args.prune}
    result = client.call("POST", "/admin/apply", body=body)
    lines = [line for change in result["changes"] for line in describe_change(change)]
    count = len(result["changes"])
    if not count:
        lines.append("no changes: the gateway already says what the file says")
    elif dry_run:
        lines.append(f"dry run: {count} change{'s' * (count != 1)}, nothing written")
    else:
        lines.append(f"applied {count} change{'s' * (count != 1)}")
    return result, "\n".join(lines), 1 if args.diff_exit_code and count else 0


# -- the parser ----------------------------------------------------------------------------------------------


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    help: str,
    common: argparse.ArgumentParser,
) -> Any:
    parser = sub.add_parser(name, help=help, parents=[common])
    parser.set_defaults(run=runner(handler))
    return parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = common_options()

    team = sub.add_parser("team", help="teams: create, list, show, rename, disable, enable")
    teams = team.add_subparsers(dest="team_command", required=True, metavar="ACTION")
    _command(teams, "create", team_create, "create a team", common).add_argument("name")
    _command(teams, "list", team_list, "list teams", common)
    _command(teams, "show", team_show, "a team, its keys and its aliases", common).add_argument("name")
    rename = _command(teams, "rename", team_rename, "rename a team", common)
    rename.add_argument("name")
    rename.add_argument("new_name")
    _command(teams, "disable", team_disable, "disable a team: its keys stop working", common).add_argument("name")
    _command(teams, "enable", team_disable, "enable a disabled team", common).add_argument("name")

    key = sub.add_parser("key", help="API keys: create, list, show, update, revoke")
    keys = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    create = _command(keys, "create", key_create, "make a key (printed once)", common)
    create.add_argument("--team", required=True)
    create.add_argument("--name")
    create.add_argument("--role", default="team", choices=["team", "finance", "team_finance", "admin"])
    create.add_argument("--alias", action="append", help="limit the key to this alias (repeat for more)")
    create.add_argument("--expires", help="a date (UTC) or date-time")
    _command(keys, "list", key_list, "list keys (prefix and metadata, never the key)", common).add_argument("--team")
    _command(keys, "show", key_show, "one key", common).add_argument("id", type=int)
    update = _command(keys, "update", key_update, "change a key's name, aliases or expiry", common)
    update.add_argument("id", type=int)
    update.add_argument("--name", help="'' clears it")
    limit = update.add_mutually_exclusive_group()
    limit.add_argument("--alias", action="append", help="limit the key to this alias (repeat for more)")
    limit.add_argument("--all-aliases", action="store_true", help="lift the alias limit")
    update.add_argument("--expires", help="a date (UTC), a date-time, or 'never'")
    _command(keys, "revoke", key_revoke, "revoke a key for good", common).add_argument("id", type=int)

    alias = sub.add_parser("alias", help="aliases: set, show, list, history, rollback, disable, enable, delete")
    aliases = alias.add_subparsers(dest="alias_command", required=True, metavar="ACTION")
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument("--team", help="a team's own alias (default: the global one)")
    set_ = _command(aliases, "set", alias_set, "create an alias, or change it (a new version)", common)
    set_.add_argument("name", help="the alias; a pattern such as 'gpt-4o*' forwards the requested model name")
    set_.add_argument("--team", help="make it this team's own alias, shadowing a global one for that team")
    set_.add_argument("--upstream")
    set_.add_argument("--model", help="the target model id")
    set_.add_argument("--system-prompt", help="injected when the target serves ('' removes it)")
    set_.add_argument("--policy", choices=["prepend", "if_absent", "replace"])
    set_.add_argument("--fallback-model")
    set_.add_argument("--fallback-upstream")
    set_.add_argument("--fallback-system-prompt")
    set_.add_argument("--no-fallback", action="store_true", help="remove the fallback")
    set_.add_argument("--teams", help="limit a global alias to these teams (comma-separated; '' lifts it)")
    set_.add_argument(
        "--split",
        action="append",
        metavar="MODEL[@UPSTREAM]=WEIGHT",
        help="a canary: repeat, weights adding up to 100; the first is the target, the others canaries",
    )
    set_.add_argument("--no-canary", action="store_true", help="remove the canaries")
    set_.add_argument("--reason", help="why, for the version history")
    set_.add_argument("--allow-catch-all", action="store_true", help="allow '*' or a pattern matching aliases")
    for name, handler, text in (
        ("show", alias_show, "the current version and its lineage"),
        ("history", alias_history, "every version"),
        ("disable", alias_state, "stop serving an alias (404) without deleting it"),
        ("enable", alias_state, "serve a disabled alias again"),
        ("delete", alias_state, "delete an alias (its versions are kept)"),
    ):
        parser = aliases.add_parser(name, help=text, parents=[common, scope])
        parser.add_argument("name")
        parser.set_defaults(run=runner(handler))
    listing = aliases.add_parser("list", help="list aliases", parents=[common, scope])
    listing.add_argument("--deleted", action="store_true", help="include deleted aliases")
    listing.set_defaults(run=runner(alias_list))
    rollback = aliases.add_parser("rollback", help="a new version copying an old one", parents=[common, scope])
    rollback.add_argument("name")
    rollback.add_argument("version", help="3 or v3")
    rollback.add_argument("--reason")
    rollback.set_defaults(run=runner(alias_rollback))

    upstream = sub.add_parser("upstream", help="upstreams: set, list, show, delete")
    upstreams = upstream.add_subparsers(dest="upstream_command", required=True, metavar="ACTION")
    up_set = _command(upstreams, "set", upstream_set, "create or change an upstream", common)
    up_set.add_argument("name")
    up_set.add_argument("--base-url", required=True)
    up_set.add_argument("--api-key-env", help="the environment variable holding its key, on every replica")
    _command(upstreams, "list", upstream_list, "list upstreams", common)
    _command(upstreams, "show", upstream_show, "one upstream", common).add_argument("name")
    _command(upstreams, "delete", upstream_delete, "delete an unused upstream", common).add_argument("name")

    log = _command(sub, "audit", audit, "the audit log, newest first", common)
    log.add_argument("--limit", type=int, default=50)
    log.add_argument("--actor")
    log.add_argument("--action", help="e.g. alias.rollback, or a prefix such as alias.")
    log.add_argument("--target")

    apply_ = _command(sub, "apply", apply, "bring teams, upstreams and aliases to what a file says", common)
    apply_.add_argument("file", nargs="?", help="a gateway YAML (tunegate.yaml)")
    apply_.add_argument("-f", "--file", dest="file_option", metavar="FILE", help="the same, as an option")
    apply_.add_argument("--dry-run", action="store_true", help="print the diff only; write nothing")
    apply_.add_argument(
        "--diff-exit-code",
        action="store_true",
        help="a dry run whose exit status says whether the gateway differs from the file: 1 changes, 0 none",
    )
    apply_.add_argument("--prune", action="store_true", help="also delete aliases and upstreams the file leaves out")

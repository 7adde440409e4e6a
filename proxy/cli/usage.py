"""``tunegate usage``, ``tunegate usage savings``, ``tunegate budget`` and ``tunegate limit``: finance over the
admin API of a running gateway, with the admin client of ``tunegate team|key|alias`` (``--url`` or
$TUNEGATE_URL; $TUNEGATE_ADMIN_KEY holding the admin key or a finance key). Exit status: 0 done, 1 the
gateway refused (its message is printed) or could not be reached, 2 a usage error.
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx

from tunegate.proxy.cli.client import AdminClient, CommandError, UsageError, common_options, output_of, runner
from tunegate.proxy.cli.output import table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = common_options()
    usage = sub.add_parser("usage", help="usage and cost: tokens and USD per team, alias, model, day", parents=[common])
    usage.add_argument(
        "--by",
        default="team",
        help="group by some of team,alias,model,served_by,day,kind,key,user,endpoint,metadata.<key>",
    )
    usage.add_argument("--since", help="first day, YYYY-MM-DD (default: the first of --until's month)")
    usage.add_argument("--until", help="last day, inclusive (default: the end of the current month)")
    usage.add_argument("--team")
    usage.add_argument("--alias")
    usage.add_argument("--model")
    usage.add_argument("--key", help="one key's requests: key_<id> (or the id)")
    usage.add_argument("--user", help="one end user's requests (the request's `user`)")
    usage.add_argument("--endpoint", help="chat.completions, completions, embeddings ...")
    usage.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="requests whose metadata has it"
    )
    usage.add_argument("--csv", action="store_true", help="CSV as the gateway serves it (rows, then a totals row)")
    usage.set_defaults(run=runner(usage_report))
    usage_sub = usage.add_subparsers(dest="usage_command", metavar="savings")
    saving = usage_sub.add_parser("savings", help="does the fine-tune behind an alias pay off?", parents=[common])
    saving.add_argument("--alias", required=True)
    saving.add_argument("--team", help="one team's traffic (and its own alias of that name)")
    saving.add_argument("--since")
    saving.add_argument("--until")
    saving.set_defaults(run=runner(savings_report))

    budget = sub.add_parser("budget", help="monthly USD budgets per team: set, list, clear")
    budgets = budget.add_subparsers(dest="budget_command", required=True, metavar="ACTION")
    setter = budgets.add_parser("set", help="a team's monthly budget (the hard limit) and alert", parents=[common])
    setter.add_argument("team")
    setter.add_argument("--monthly-usd", required=True, help="USD per calendar month (UTC); beyond it: 429")
    setter.add_argument("--soft-pct", type=int, default=80, help="alert at this percent of the budget (80)")
    setter.add_argument("--webhook", help="URL POSTed once a month when a threshold is crossed")
    setter.set_defaults(run=runner(budget_set))
    lister = budgets.add_parser("list", help="budgets with the month's spend", parents=[common])
    lister.add_argument("--month", help="YYYY-MM (default: this month)")
    lister.set_defaults(run=runner(budget_list))
    clearer = budgets.add_parser("clear", help="remove a team's budget", parents=[common])
    clearer.add_argument("team")
    clearer.set_defaults(run=runner(budget_clear))

    limit = sub.add_parser("limit", help="requests and tokens per minute, per team or per key: set, list")
    limits = limit.add_subparsers(dest="limit_command", required=True, metavar="ACTION")
    setter = limits.add_parser("set", help="set (with neither --rpm nor --tpm: remove) a rate limit", parents=[common])
    who = setter.add_mutually_exclusive_group(required=True)
    who.add_argument("--team")
    who.add_argument("--key-id", type=int)
    setter.add_argument("--rpm", type=int, help="requests per minute")
    setter.add_argument("--tpm", type=int, help="tokens (prompt + completion) per minute")
    setter.set_defaults(run=runner(limit_set))
    lister = limits.add_parser("list", help="every rate limit", parents=[common])
    lister.set_defaults(run=runner(limit_list))


def _range(args: argparse.Namespace) -> dict[str, Any]:
    return {"from": args.since, "to": args.until}


def usage_report(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    params = {
        "group_by": args.by,
        "team": args.team,
        "alias": args.alias,
        "model": args.model,
        "key": args.key,
        "user": args.user,
        "endpoint": args.endpoint,
        **_range(args),
    }
    for pair in args.metadata:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise UsageError(f"--metadata takes KEY=VALUE, got '{pair}'")
        params[f"metadata.{name}"] = value
    if args.csv:
        if output_of(args) != "table":
            raise UsageError(f"--csv and --output {output_of(args)} exclude each other")
        return None, _csv(client, params).rstrip("\n")
    report = client.call("GET", "/admin/usage", params=params)
    groups: list[str] = report["group_by"]
    totals = report["totals"]
    measures = list(totals)  # the report's figures, in the gateway's order
    rows = [[_label(row[g]) for g in groups] + [row[m] for m in measures] for row in report["data"]]
    rows.append(["total", *[""] * (len(groups) - 1), *(totals[m] for m in measures)])
    text = f"usage {report['from']} .. {report['to']}\n" + table([*groups, *measures], rows)
    if totals["unpriced_requests"]:
        text += f"\n{totals['unpriced_requests']} request(s) had no price and are costed at 0: see the price table"
    return report, text


def _label(value: Any) -> Any:
    return "-" if value is None else value  # a record without that key, user or metadata


def _csv(client: AdminClient, params: dict[str, Any]) -> str:
    query = {k: v for k, v in params.items() if v is not None} | {"format": "csv"}
    try:
        response = client.http.get("/admin/usage", params=query)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach the gateway at {client.url}: {exc}") from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text.strip()
        raise CommandError(f"{message} (HTTP {response.status_code})")
    return response.text


def savings_report(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    report = client.call("GET", "/admin/savings", params={"alias": args.alias, "team": args.team, **_range(args)})
    return report, _savings_text(report)


def _savings_text(r: dict[str, Any]) -> str:
    tuned, based, at = r["fine_tuned"], r["base_with_prompt"], r["at_prices"]
    span = f"{r['from'] or 'start'} .. {r['to'] or 'today'}"
    lines = [
        f"alias {r['alias']} ({span})",
        f"  fine-tuned model  {r['fine_tuned_model'] or '-'}",
        f"  base model        {r['base_model'] or '-'} + a {r['base_prompt_tokens']}-token system prompt",
        "",
        table(
            ["served by", "requests", "prompt_tokens", "completion_tokens", "cost_usd"],
            [
                ["fine-tune", *(tuned[k] for k in ("requests", "prompt_tokens", "completion_tokens", "cost_usd"))],
                ["base + prompt", *(based[k] for k in ("requests", "prompt_tokens", "completion_tokens", "cost_usd"))],
            ],
        ),
        "",
        f"  injected prompt tokens   {based['injected_tokens']:>10}  ${based['injected_usd']}",
        f"  saved prompt tokens      {tuned['saved_tokens']:>10}  ${tuned['saved_usd']} (base input price)",
    ]
    if at["difference_usd"] is not None:
        lines += [
            f"  all {at['requests']} requests at fine-tune prices       ${at['fine_tuned_usd']}",
            f"  all {at['requests']} requests at base + prompt prices   ${at['base_with_prompt_usd']}",
            f"  difference                                ${at['difference_usd']}"
            f" (${at['difference_per_request_usd']} per request)",
        ]
    training = r["training"]
    lines.append(
        f"  training cost            ${training['cost_usd']} ({training['records']} record(s), "
        f"{training['trained_tokens']} trained tokens)"
    )
    if r["break_even_requests"] is None:
        lines.append("  break-even: never at these prices (a fine-tuned request does not cost less)")
    else:
        state = "paid off" if r["paid_off"] else "not yet"
        lines.append(
            f"  break-even: {r['break_even_requests']} requests; served by the fine-tune so far: "
            f"{tuned['requests']} ({state})"
        )
    if r["unpriced_models"]:
        lines.append(f"  no price for: {', '.join(r['unpriced_models'])} (valued at 0)")
    return "\n".join(lines)


def budget_set(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    body = {"monthly_usd": args.monthly_usd, "soft_pct": args.soft_pct, "alert_webhook": args.webhook}
    row = client.call("PUT", f"/admin/budgets/{args.team}", body=body)
    text = (
        f"team {row['team']}: ${row['budget_usd']} a month, alert at {row['soft_threshold_pct']}%; "
        f"{row['month']} so far ${row['spent_usd']} ({row['used_pct']}%, {row['state']})"
    )
    return row, text


BUDGET_FIELDS = ["team", "month", "budget_usd", "soft_threshold_pct", "spent_usd", "used_pct", "state"]


def budget_list(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    data = client.call("GET", "/admin/budgets", params={"month": args.month})
    return data, table(BUDGET_FIELDS, [[row[f] for f in BUDGET_FIELDS] for row in data["data"]])


def budget_clear(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    data = client.call("DELETE", f"/admin/budgets/{args.team}")
    return data, f"team {args.team}: budget removed"


def limit_set(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    path = f"/admin/limits/teams/{args.team}" if args.team else f"/admin/limits/keys/{args.key_id}"
    data = client.call("PUT", path, body={"rpm": args.rpm, "tpm": args.tpm})
    who = f"team {args.team}" if args.team else f"key {args.key_id}"
    if args.rpm is None and args.tpm is None:
        return data, f"{who}: no rate limit"
    return data, f"{who}: {args.rpm or 'unlimited'} requests, {args.tpm or 'unlimited'} tokens per minute"


LIMIT_FIELDS = ["scope", "team", "key_id", "rpm", "tpm"]


def limit_list(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    data = client.call("GET", "/admin/limits")
    return data, table(LIMIT_FIELDS, [[row[f] for f in LIMIT_FIELDS] for row in data["data"]])

"""``tunegate finetune validate|list|status|promote|lineage|retirements`` and ``tunegate model register|list``.

``validate`` works offline on a file. The others talk to a running gateway's admin API with the admin client
of ``tunegate team|key|alias`` (``--url`` or $TUNEGATE_URL, $TUNEGATE_ADMIN_KEY). Exit status: 0 done (for
``validate``: no errors), 1 the file has errors or the gateway refused (its message is printed), 2 a usage
error.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunegate.proxy.cli.client import AdminClient, UsageError, common_options, output_of, runner
from tunegate.proxy.cli.output import file_line, lineage_text, render, table, when

DEFAULT_MODEL = "gpt-3.5-turbo-0613"
JOB_STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")  # OpenAI's


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = common_options()
    finetune = sub.add_parser("finetune", help="fine-tuning: validate a file, list and follow jobs, promote")
    actions = finetune.add_subparsers(dest="finetune_command", required=True, metavar="ACTION")

    validate = actions.add_parser(
        "validate", help="check a JSONL training file offline: errors by line, tokens, cost", parents=[common]
    )
    validate.add_argument("file", type=Path)
    validate.add_argument("--model", default=DEFAULT_MODEL, help=f"the model to fine-tune (default {DEFAULT_MODEL})")
    validate.add_argument(
        "--method",
        choices=("supervised", "dpo", "reinforcement"),
        default="supervised",
        help="the job's method.type, whose format the file must have (default supervised)",
    )
    validate.add_argument("--prices", type=Path, help="a price table (default: the shipped config/prices.yaml)")
    validate.set_defaults(run=run_validate)

    listing = actions.add_parser("list", help="fine-tuning jobs of every team", parents=[common])
    listing.add_argument("--team")
    listing.add_argument("--status", choices=JOB_STATUSES, metavar="STATUS", help=", ".join(JOB_STATUSES))
    listing.set_defaults(run=runner(job_list))

    status = actions.add_parser("status", help="a job, its events and its lineage", parents=[common])
    status.add_argument("job")
    status.set_defaults(run=runner(job_status))

    promote = actions.add_parser("promote", help="make a succeeded job's model serve its alias", parents=[common])
    promote.add_argument("job")
    promote.add_argument("--canary", type=int, metavar="N", help="as a canary taking N%% of the traffic first")
    promote.set_defaults(run=runner(job_promote))

    lineage = actions.add_parser(
        "lineage", help="an alias's version → model → job → training file → validation", parents=[common]
    )
    lineage.add_argument("alias")
    lineage.add_argument("--team", help="the owning team of a team alias; omit: the global alias")
    lineage.set_defaults(run=runner(alias_lineage))

    retire = actions.add_parser("retirements", help="aliases whose targets retire soon (or have)", parents=[common])
    retire.add_argument("--window-days", type=int, help="default: finetune.retirement_window_days")
    retire.add_argument("--refresh", action="store_true", help="read every upstream's model list first")
    retire.set_defaults(run=runner(retirement_list))

    model = sub.add_parser("model", help="models fine-tuned outside the gateway: register, list")
    models = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    register_model = models.add_parser(
        "register", help="a fine-tune made elsewhere (an Azure deployment, a vLLM LoRA name)", parents=[common]
    )
    register_model.add_argument("name", help="the model id the upstream serves it under")
    register_model.add_argument("--upstream", required=True)
    register_model.add_argument("--base-model", help="the model it was fine-tuned from")
    register_model.add_argument("--note", default="")
    register_model.set_defaults(run=runner(model_register))
    models.add_parser("list", help="registered external models", parents=[common]).set_defaults(run=runner(model_list))


# -- validate (offline) ----------------------------------------------------------------------------------


def run_validate(args: argparse.Namespace) -> int:
    from tunegate.config.prices import PriceTableError
    from tunegate.registry.finetune.files import training_price
    from tunegate.registry.finetune.validation import validate_path
    from tunegate.registry.pricing import PriceTable

    try:
        prices = PriceTable.load(args.prices)
        price = training_price(prices, args.model, datetime.now(UTC).date())
        report = validate_path(args.file, model=args.model, training_price_per_1m=price, method=args.method)
    except OSError as exc:
        print(f"tunegate: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except PriceTableError as exc:
        print(f"tunegate: {exc}", file=sys.stderr)
        return 2
    if output_of(args) != "table":
        print(render(report.to_dict(), output_of(args)))
    else:
        print(report.to_text())
        if price is None and args.method != "reinforcement":
            print(f"(the price table has no training price for {args.model})")
        if report.most_common_system_prompt:
            shared = report.most_common_system_prompt
            print(f"system prompt most examples share (a promotion offers it as the fallback prompt): {shared}")
    return 1 if report.errors else 0


# -- over the admin API ----------------------------------------------------------------------------------


def job_list(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    data = client.call("GET", "/admin/finetune/jobs", params={"team": args.team, "status": args.status})
    rows = [
        [
            job["job"],
            job["team"],
            job["status"],
            job["base_model"],
            job["fine_tuned_model"],
            job["alias"],
            job["promoted_version"],
        ]
        for job in data["data"]
    ]
    return data, table(["job", "team", "status", "model", "fine-tuned model", "alias", "promoted"], rows)


def job_text(detail: dict[str, Any]) -> str:
    job, lineage = detail["job"], detail["lineage"]
    method = (job.get("method") or {}).get("type", "supervised")
    lines = [
        f"job {job['id']}  team {lineage['team']}  status {job['status']}  upstream {lineage['upstream']}",
        f"model {job['model']} → {job['fine_tuned_model'] or '(not yet)'}  method {method}",
    ]
    if job.get("trained_tokens") is not None:
        lines.append(f"trained tokens {job['trained_tokens']}")
    if job.get("error"):
        lines.append(f"error: {job['error'].get('message')} ({job['error'].get('code')})")
    if lineage.get("alias"):
        promoted = lineage.get("promoted_version")
        how = (
            "not promoted"
            if promoted is None
            else f"promoted as version {promoted}"
            + (f" (canary {lineage['promoted_weight']}%)" if lineage.get("promoted_weight") else " (target)")
        )
        lines.append(f"alias {lineage['alias']}: {how}")
    lines.append(file_line(lineage.get("training_file")))
    if detail.get("alias"):
        lines += ["", "lineage:", lineage_text(detail["alias"])]
    lines += ["", "events (newest first):"]
    lines += [f"  {when(e['created_at'])}  {e['level']:<5}  {e['message']}" for e in detail["events"]]
    return "\n".join(lines)


def job_status(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    detail = client.call("GET", f"/admin/finetune/jobs/{args.job}")
    return detail, job_text(detail)


def job_promote(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    if args.canary is not None and not 1 <= args.canary <= 99:
        raise UsageError("--canary must be a percent from 1 to 99")
    detail = client.call("POST", f"/admin/finetune/jobs/{args.job}/promote", body={"canary": args.canary})
    return detail, job_text(detail)


def alias_lineage(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    data = client.call("GET", "/admin/finetune/lineage", params={"alias": args.alias, "team": args.team})
    return data, lineage_text(data)


def retirement_list(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    method, path = ("POST", "/admin/retirements/refresh") if args.refresh else ("GET", "/admin/retirements")
    data = client.call(method, path, params={"window_days": args.window_days})
    rows = [
        [
            r["alias"],
            r["team"] or "global",
            r["version"],
            r["role"],
            r["model"],
            r["upstream"],
            r["shutdown_date"],
            r["days_left"],
            "retired: fallback serves" if r["retired"] and r["fallback"] else "retired" if r["retired"] else "-",
            r["fallback"],
        ]
        for r in data["data"]
    ]
    heading = f"targets retiring within {data['window_days']} days of {data['today']}:"
    headers = ["alias", "scope", "version", "role", "model", "upstream", "shutdown", "days left", "state", "fallback"]
    return data, heading + "\n" + table(headers, rows)


def model_register(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    body = {"name": args.name, "upstream": args.upstream, "base_model": args.base_model, "note": args.note}
    data = client.call("POST", "/admin/finetune/models", body=body)
    return data, f"registered {data['name']} on {data['upstream']} (external, base {data['base_model'] or 'unknown'})"


def model_list(args: argparse.Namespace, client: AdminClient) -> tuple[Any, str]:
    data = client.call("GET", "/admin/finetune/models")
    rows = [[m["name"], m["upstream"], m["base_model"], m["note"], m["created_by"]] for m in data["data"]]
    return data, table(["name", "upstream", "base model", "note", "registered by"], rows)

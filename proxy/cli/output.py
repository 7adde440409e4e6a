"""What the commands print: tables, times (in the local zone, marked with it), an alias's lineage, and the server's
answer as JSON or YAML."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def render(data: Any, output: str) -> str:
    """The server's answer as ``json`` or ``yaml`` (keys in the server's order)."""
    if output == "yaml":
        import yaml

        text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
        return text.rstrip("\n")
    return json.dumps(data, indent=2, ensure_ascii=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def short(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def when(value: int | str | None) -> str:
    """A moment from the server (Unix seconds, or ISO 8601, UTC when it names no zone) in the local zone, marked
    with it: 2026-12-04 01:52:24+08:00. One word for the date and one for the time, as the tables had before."""
    if value is None:
        return "-"
    if isinstance(value, int):
        moment = datetime.fromtimestamp(value, UTC)
    elif len(value) == 10:
        return value  # a day, not a moment
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value  # not a moment (a date the server wrote as text): shown as it came
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S") + local.isoformat()[-6:]


def file_line(file: dict[str, Any] | None) -> str:
    if not file:
        return "training file: unknown"
    line = f"training file {file['id']} ({file['filename']}, {file['bytes']} bytes, sha256 {file['sha256']})"
    summary = file.get("validation")
    if summary:
        cost = summary.get("estimated_cost_usd")
        line += (
            f"\n      validated for {summary['model']}: {summary['examples']} examples ({summary['valid_examples']} "
            f"valid), {summary['errors']} error(s), {summary['warnings']} warning(s), {summary['tokens_total']} "
            f"tokens{'' if summary.get('tokens_exact') else ' (estimated)'}, {summary['epochs']} epochs ≈ "
            f"{summary['estimated_billed_tokens']} billed tokens" + (f", ${cost}" if cost else "")
        )
    return line


def _source(target: dict[str, Any]) -> str:
    if target["source"] == "job":
        trained = target.get("trained_tokens")
        return (
            f"← job {target['job']} (team {target['team']}, {target['status']}, base {target['base_model']}"
            + (f", {trained} trained tokens" if trained is not None else "")
            + ")\n    ← "
            + file_line(target.get("training_file"))
        )
    if target["source"] == "external":
        base = target.get("base_model") or "unknown base"
        note = f"; {target['note']}" if target.get("note") else ""
        return f"← external fine-tune of {base} (registered by {target['registered_by']}{note})"
    return "← served by the upstream as it is"


def lineage_text(lineage: dict[str, Any]) -> str:
    lines = [
        f"alias {lineage['alias']} ({lineage['scope']}) version {lineage['version']}: {lineage['reason'] or '-'} "
        f"(by {lineage['created_by']}, {when(lineage['created_at'])})"
    ]
    for target in lineage["targets"]:
        weight = f" {target['weight']}%" if target.get("weight") not in (None, 100) else ""
        prompt = " + system prompt" if target.get("system_prompt") else ""
        lines.append(f"  {target['role']}{weight}: {target['model']} on {target['upstream']}{prompt}")
        lines.append(f"    {_source(target)}")
    if lineage.get("suggested_fallback_prompt"):
        lines.append(f"  suggested fallback prompt (from the training data): {lineage['suggested_fallback_prompt']}")
    return "\n".join(lines)

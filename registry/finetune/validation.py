"""Validate a fine-tuning JSONL file before anything is uploaded or spent, in the format of the job's method.

Follows OpenAI's formats for its three methods (supervised chat, DPO's ``input``/``preferred_output``/
``non_preferred_output``, reinforcement's prompts for a grader) and the checks of its cookbook "Data
preparation and analysis for chat model fine-tuning": every defect of every line is reported (errors block a
job), plus warnings about size, missing system/user turns, duplicates and over-long examples, and the token,
epoch and cost figures where the method is billed by tokens. An upload names no method, so it is checked
against each and kept with what it fits; a job is then checked against its own method.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

from tunegate.registry.tokens import base_model, count_messages, count_text

ALLOWED_TOP_KEYS = ("messages", "tools", "functions", "parallel_tool_calls")
ALLOWED_MESSAGE_KEYS = (
    "role",
    "content",
    "name",
    "weight",
    "tool_calls",
    "function_call",
    "tool_call_id",
    "refusal",
)
ALLOWED_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Reinforcement prompts: OpenAI's reinforcement input takes developer, user, assistant and tool messages, and
# any other key of a line is data for the grader ({{ item.KEY }}).
REINFORCEMENT_ROLES = ("developer", "user", "assistant", "tool")
DPO_TOP_KEYS = ("input", "preferred_output", "non_preferred_output")
DPO_INPUT_KEYS = ("messages", "tools", "parallel_tool_calls")
Method = Literal["supervised", "dpo", "reinforcement"]
METHODS: tuple[Method, ...] = ("supervised", "dpo", "reinforcement")
METHOD_NAMES = {"supervised": "supervised (chat)", "dpo": "DPO", "reinforcement": "reinforcement"}
MIN_EXAMPLES = 10  # OpenAI refuses a job with fewer
RECOMMENDED_EXAMPLES = 50
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 3, 100, 25_000
MIN_DEFAULT_EPOCHS, MAX_DEFAULT_EPOCHS = 1, 25
_MICRO = Decimal("0.000001")
SHOWN_ERRORS = 5  # errors kept per method with an upload, and named in a refusal

_LIMITS = {"gpt-3.5-turbo-0613": 4096, "gpt-3.5-turbo-0301": 4096}
_LIMIT_PREFIXES = (("gpt-4o", 65_536), ("gpt-4.1", 65_536), ("gpt-3.5-turbo", 16_385))


@dataclass(frozen=True)
class Finding:
    line: int | None  # 1-based line number; None for file-level findings
    code: str
    message: str
    severity: Literal["error", "warning"]


@dataclass(frozen=True)
class ValidationReport:
    model: str
    examples: int
    valid_examples: int
    errors: list[Finding]
    warnings: list[Finding]
    tokens_total: int
    tokens_max_example: int
    billed_tokens_per_epoch: int
    epochs: int
    estimated_billed_tokens: int
    estimated_cost_usd: Decimal | None
    tokens_exact: bool
    most_common_system_prompt: str | None
    method: Method = "supervised"
    # An upload's check against every method (``fits_summary`` of each), so that a job's method can be checked
    # later without the file; empty when the report is for one method.
    fits: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def ok_for_job(self) -> bool:
        return self.ok and self.valid_examples >= MIN_EXAMPLES

    def fits_summary(self) -> dict[str, object]:
        """What a job's check needs of this report: is it clean, how many examples, its first errors."""
        return {
            "ok": self.ok,
            "ok_for_job": self.ok_for_job(),
            "valid_examples": self.valid_examples,
            "error_count": len(self.errors),
            "errors": [{"line": f.line, "message": f.message} for f in self.errors[:SHOWN_ERRORS]],
        }

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = asdict(self)
        data["estimated_cost_usd"] = None if self.estimated_cost_usd is None else str(self.estimated_cost_usd)
        data.update(ok=self.ok, ok_for_job=self.ok_for_job(), example_token_limit=example_token_limit(self.model))
        return data

    def to_text(self) -> str:
        findings = sorted(self.errors + self.warnings, key=lambda f: (f.line is None, f.line or 0))
        lines = [f"{'file' if f.line is None else f'line {f.line}'}: {f.severity}: {f.message}" for f in findings]
        cost = "unknown (no training price)" if self.estimated_cost_usd is None else f"${self.estimated_cost_usd}"
        billed = (
            "billed: by training time, not by tokens (reinforcement): no cost estimate"
            if self.method == "reinforcement"
            else f"billed: {self.billed_tokens_per_epoch} tokens/epoch × {self.epochs} epochs"
            f" = {self.estimated_billed_tokens} tokens, cost {cost}"
        )
        lines += [
            f"method: {self.method}; model: {self.model} (per-example limit {example_token_limit(self.model)} tokens)",
            f"examples: {self.examples} ({self.valid_examples} valid), "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)",
            f"tokens: {self.tokens_total} total, {self.tokens_max_example} in the longest example"
            + ("" if self.tokens_exact else " (estimated)"),
            billed,
            "ready for a fine-tuning job" if self.ok_for_job() else "NOT ready for a fine-tuning job",
        ]
        return "\n".join(lines)


def example_token_limit(model: str) -> int:
    """Tokens one training example may have before the provider truncates it."""
    name = base_model(model)
    if name in _LIMITS:
        return _LIMITS[name]
    return next((limit for prefix, limit in _LIMIT_PREFIXES if name.startswith(prefix)), 4096)


def default_epochs(n_examples: int) -> int:
    """OpenAI's default ``n_epochs`` for a training file of ``n_examples``."""
    if n_examples <= 0:
        return TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_examples))
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def _text_of(content: Any) -> str | None:
    """The text of string or text-parts content; None when it is neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = [p.get("text") if isinstance(p, dict) and p.get("type") == "text" else None for p in content]
        if all(isinstance(t, str) and t for t in parts):
            return "".join(t for t in parts if t)
    return None


def _message_problems(index: int, message: Any, *, where: str | None = None) -> list[tuple[str, str]]:
    where = where or f"message {index}"
    if not isinstance(message, dict):
        return [("not_an_object", f"{where}: is {type(message).__name__}, not an object")]
    problems: list[tuple[str, str]] = []
    problems += [
        (
            "unrecognized_key",
            f"{where}: unrecognised key {key!r} (allowed: {', '.join(ALLOWED_MESSAGE_KEYS)})",
        )
        for key in message
        if key not in ALLOWED_MESSAGE_KEYS
    ]
    role = message.get("role")
    if "role" not in message:
        problems.append(("missing_role", f"{where}: no 'role'"))
    elif role not in ALLOWED_ROLES:
        problems.append(
            (
                "unrecognized_role",
                f"{where}: unrecognised role {role!r} (allowed: {', '.join(ALLOWED_ROLES)})",
            )
        )
    content = message.get("content")
    calls = role == "assistant" and ("tool_calls" in message or "function_call" in message)
    if content is None:
        if not calls:
            problems.append(("missing_content", f"{where}: no 'content' (role {role!r})"))
    elif (role == "assistant" and not isinstance(content, str)) or _text_of(content) in (None, ""):
        shown = json.dumps(content, ensure_ascii=False)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        problems.append(
            (
                "invalid_content",
                f"{where}: 'content' must be a non-empty string"
                + ("" if role == "assistant" else " or a list of text parts")
                + f", got {shown}",
            )
        )
    if "weight" in message:
        weight = message["weight"]
        if role != "assistant":
            problems.append(("invalid_weight", f"{where}: 'weight' is only allowed on assistant messages"))
        elif isinstance(weight, bool) or not isinstance(weight, int | float) or weight not in (0, 1):
            problems.append(("invalid_weight", f"{where}: 'weight' must be 0 or 1, got {weight!r}"))
    return problems


def _example_problems(example: Any) -> list[tuple[str, str]]:
    if not isinstance(example, dict):
        return [("not_an_object", f"example is a JSON {type(example).__name__}, not an object")]
    messages = example.get("messages")
    if not isinstance(messages, list):
        if "messages" in example:
            return [("missing_messages", f"'messages' is {type(messages).__name__}, not a list")]
        legacy = " (the legacy prompt/completion format is not accepted)" if "prompt" in example else ""
        if any(key in example for key in DPO_TOP_KEYS):
            legacy = " (the DPO format: a job with method.type 'dpo' takes it)"
        found = ", ".join(map(repr, example)) or "none"
        return [("missing_messages", f"no 'messages' list; found keys: {found}{legacy}")]
    problems = [
        ("unrecognized_key", f"unrecognised key {key!r} (allowed: {', '.join(ALLOWED_TOP_KEYS)})")
        for key in example
        if key not in ALLOWED_TOP_KEYS
    ]
    if not messages:
        return [*problems, ("empty_messages", "'messages' is empty")]
    for index, message in enumerate(messages, start=1):
        problems += _message_problems(index, message)
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append(("no_assistant_message", "no assistant message to learn from"))
    return problems


def _dpo_output_problems(example: dict[str, Any], key: str) -> list[tuple[str, str]]:
    output = example.get(key)
    if key not in example:
        return [("missing_output", f"no '{key}' (a list holding the one assistant message)")]
    if not isinstance(output, list) or len(output) != 1:
        got = f"{len(output)} messages" if isinstance(output, list) else f"{type(output).__name__}"
        return [("invalid_output", f"'{key}' must be a list holding one assistant message, got {got}")]
    message = output[0]
    if isinstance(message, dict) and "role" in message and message.get("role") != "assistant":
        return [("invalid_output", f"{key} message 1: role {message.get('role')!r}, must be 'assistant'")]
    return _message_problems(1, message, where=f"{key} message 1")


def _dpo_problems(example: Any) -> list[tuple[str, str]]:
    """OpenAI's DPO line: ``input`` (``messages``, optional ``tools``), and a preferred and a non-preferred
    output, each a list holding one assistant message."""
    if not isinstance(example, dict):
        return [("not_an_object", f"example is a JSON {type(example).__name__}, not an object")]
    prompt = example.get("input")
    if not isinstance(prompt, dict):
        if "input" in example:
            return [("missing_input", f"'input' is {type(prompt).__name__}, not an object")]
        other = " (the chat format: a job with method.type 'supervised' or 'reinforcement' takes it)"
        found = ", ".join(map(repr, example)) or "none"
        return [("missing_input", f"no 'input' object; found keys: {found}{other if 'messages' in example else ''}")]
    problems = [
        ("unrecognized_key", f"unrecognised key {key!r} (allowed: {', '.join(DPO_TOP_KEYS)})")
        for key in example
        if key not in DPO_TOP_KEYS
    ]
    problems += [
        ("unrecognized_key", f"input: unrecognised key {key!r} (allowed: {', '.join(DPO_INPUT_KEYS)})")
        for key in prompt
        if key not in DPO_INPUT_KEYS
    ]
    messages = prompt.get("messages")
    if not isinstance(messages, list):
        problems.append(("missing_messages", "input: no 'messages' list"))
    elif not messages:
        problems.append(("empty_messages", "input: 'messages' is empty"))
    else:
        for index, message in enumerate(messages, start=1):
            problems += _message_problems(index, message, where=f"input message {index}")
    return (
        problems
        + _dpo_output_problems(example, "preferred_output")
        + _dpo_output_problems(example, "non_preferred_output")
    )


def _reinforcement_problems(example: Any) -> list[tuple[str, str]]:
    """OpenAI's reinforcement line: ``messages`` (the prompt, not ending with an assistant message), optional
    ``tools``, and any other keys the grader reads."""
    if not isinstance(example, dict):
        return [("not_an_object", f"example is a JSON {type(example).__name__}, not an object")]
    messages = example.get("messages")
    if not isinstance(messages, list):
        return _example_problems(example)  # the same answer as for chat: no 'messages' list
    if not messages:
        return [("empty_messages", "'messages' is empty")]
    problems: list[tuple[str, str]] = []
    for index, message in enumerate(messages, start=1):
        problems += _message_problems(index, message)
        role = message.get("role") if isinstance(message, dict) else None
        if role in ALLOWED_ROLES and role not in REINFORCEMENT_ROLES:
            problems.append(
                (
                    "unrecognized_role",
                    f"message {index}: role {role!r} is not taken for reinforcement fine-tuning "
                    f"(allowed: {', '.join(REINFORCEMENT_ROLES)}; put instructions in a 'developer' message)",
                )
            )
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        problems.append(
            (
                "ends_with_assistant",
                f"message {len(messages)}, the last, is an assistant message: a reinforcement example ends where "
                "the model answers (the supervised format trains on given answers)",
            )
        )
    return problems


_PROBLEMS = {"supervised": _example_problems, "dpo": _dpo_problems, "reinforcement": _reinforcement_problems}


def _sequences(method: Method, example: dict[str, Any], model: str) -> tuple[list[int], bool]:
    """The token counts of the sequences an example trains on: a chat or a reinforcement prompt is one; a DPO
    example is two, its input with each output. Tools (and functions) count with each."""
    prompt: dict[str, Any] = example["input"] if method == "dpo" else example
    extra, exact = 0, True
    for key in ("tools", "functions"):
        if key in prompt:
            counted = count_text(json.dumps(prompt[key], ensure_ascii=False), model)
            extra, exact = extra + counted.tokens, exact and counted.exact
    if method == "dpo":
        turns = [prompt["messages"] + example["preferred_output"], prompt["messages"] + example["non_preferred_output"]]
    else:
        turns = [prompt["messages"]]
    sizes = []
    for messages in turns:
        count = count_messages(messages, model)
        sizes.append(count.tokens + extra)
        exact = exact and count.exact
    return sizes, exact


def _lines(data: bytes | str) -> list[tuple[int, str | None]]:
    """Non-blank lines with their 1-based numbers; None for a line that is not UTF-8."""
    if isinstance(data, str):
        texts: list[str | None] = list(data.removeprefix("\ufeff").split("\n"))
    else:
        texts = []
        for line in data.removeprefix(b"\xef\xbb\xbf").split(b"\n"):
            try:
                texts.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(None)
    return [(n, text) for n, text in enumerate(texts, start=1) if text is None or text.strip()]


MAX_NESTING = 64  # arrays and objects inside one another on a line; deeper is no training example (and no parse)
_TOO_DEEP = object()


def _nesting(value: Any) -> int:
    """How many arrays and objects ``value`` holds inside one another (counted level by level, no recursion)."""
    depth, level = 0, [value]
    while True:
        level = [v for v in level if isinstance(v, dict | list)]
        if not level or depth > MAX_NESTING:
            return depth
        depth += 1
        level = [child for v in level for child in (v.values() if isinstance(v, dict) else v)]


def validate_jsonl(
    data: bytes | str,
    *,
    model: str = "gpt-3.5-turbo-0613",
    training_price_per_1m: Decimal | None = None,
    method: Method = "supervised",
) -> ValidationReport:
    """The report on ``data`` as training data for a job of ``method``."""
    errors: list[Finding] = []
    warnings: list[Finding] = []
    limit = example_token_limit(model)
    tokens: list[int] = []
    billed, exact = 0, True
    first_seen: dict[str, int] = {}
    system_prompts: Counter[str] = Counter()
    lines = _lines(data)

    for number, text in lines:
        if text is None:
            errors.append(Finding(number, "invalid_json", "line is not valid UTF-8", "error"))
            continue
        try:
            example = json.loads(text)
        except json.JSONDecodeError as exc:
            errors.append(Finding(number, "invalid_json", f"not valid JSON: {exc.msg} (column {exc.colno})", "error"))
            continue
        except RecursionError:  # deeper than Python parses (about 990 levels)
            example = _TOO_DEEP
        if example is _TOO_DEEP or _nesting(example) > MAX_NESTING:
            errors.append(Finding(number, "invalid_json", f"nested more than {MAX_NESTING} levels deep", "error"))
            continue
        problems = _PROBLEMS[method](example)
        errors += [Finding(number, code, message, "error") for code, message in problems]
        if problems:
            continue

        messages: list[dict[str, Any]] = example["input"]["messages"] if method == "dpo" else example["messages"]
        roles = [m.get("role") for m in messages]
        if "system" not in roles and "developer" not in roles:
            warnings.append(Finding(number, "no_system_message", "example has no system message", "warning"))
        else:
            system = next(m for m in messages if m.get("role") in ("system", "developer"))
            system_prompts[_text_of(system["content"]) or ""] += 1
        if "user" not in roles:
            warnings.append(Finding(number, "no_user_message", "example has no user message", "warning"))
        key = json.dumps(messages if method == "supervised" else example, sort_keys=True, ensure_ascii=False)
        if method == "dpo" and example["preferred_output"] == example["non_preferred_output"]:
            warnings.append(
                Finding(number, "same_outputs", "the preferred and non-preferred outputs are the same", "warning")
            )
        if key in first_seen:
            warnings.append(Finding(number, "duplicate_example", f"duplicate of line {first_seen[key]}", "warning"))
        first_seen.setdefault(key, number)

        sizes, counted_exactly = _sequences(method, example, model)
        exact = exact and counted_exactly
        if max(sizes) > limit:
            what = "its input with an output has" if method == "dpo" else "example has"
            warnings.append(
                Finding(
                    number,
                    "over_token_limit",
                    f"{what} {max(sizes)} tokens, over the {limit}-token limit of {model}; it would be truncated",
                    "warning",
                )
            )
        tokens.append(sum(sizes))
        billed += sum(min(n, limit) for n in sizes)

    valid = len(tokens)
    if valid < MIN_EXAMPLES:
        warnings.append(
            Finding(
                None,
                "too_few_examples",
                f"{valid} valid example(s); a fine-tuning job needs at least {MIN_EXAMPLES}",
                "warning",
            )
        )
    elif valid < RECOMMENDED_EXAMPLES:
        warnings.append(
            Finding(
                None,
                "few_examples",
                f"{valid} valid examples; at least {RECOMMENDED_EXAMPLES} are recommended",
                "warning",
            )
        )
    if not exact:
        warnings.append(
            Finding(
                None,
                "tokens_estimated",
                "tiktoken's encoding files could not be loaded; token counts and cost are estimates",
                "warning",
            )
        )
    epochs = default_epochs(valid)
    cost = None
    if method == "reinforcement":
        billed = 0  # billed by training time: the tokens are the prompts', for the record
    elif training_price_per_1m is not None:
        cost = (Decimal(billed * epochs) * training_price_per_1m / 1_000_000).quantize(_MICRO, ROUND_HALF_UP)
    return ValidationReport(
        model=model,
        examples=len(lines),
        valid_examples=valid,
        errors=errors,
        warnings=warnings,
        tokens_total=sum(tokens),
        tokens_max_example=max(tokens, default=0),
        billed_tokens_per_epoch=billed,
        epochs=epochs,
        estimated_billed_tokens=billed * epochs,
        estimated_cost_usd=cost,
        tokens_exact=exact,
        most_common_system_prompt=system_prompts.most_common(1)[0][0] if system_prompts else None,
        method=method,
    )


def validate_path(
    path: Path,
    *,
    model: str = "gpt-3.5-turbo-0613",
    training_price_per_1m: Decimal | None = None,
    method: Method = "supervised",
) -> ValidationReport:
    return validate_jsonl(
        Path(path).read_bytes(), model=model, training_price_per_1m=training_price_per_1m, method=method
    )


def validate_any_method(
    data: bytes | str, *, model: str = "gpt-3.5-turbo-0613", training_price_per_1m: Decimal | None = None
) -> ValidationReport:
    """An upload's report: ``data`` checked against every method; the report of the one it fits (or, broken,
    of the one with the fewest errors: the format it was meant to be in), with what each check found."""
    reports = {
        m: validate_jsonl(data, model=model, training_price_per_1m=training_price_per_1m, method=m) for m in METHODS
    }
    closest = min(METHODS, key=lambda m: len(reports[m].errors))  # ties: the first in METHODS
    return replace(reports[closest], fits={m: report.fits_summary() for m, report in reports.items()})


def unfit_for(validation: dict[str, Any] | None, method: Method, *, needs_examples: bool) -> str | None:
    """Why a file with this stored report cannot train a job of ``method`` (to follow "invalid training_file:
    FILE"); None when it can. A report from before the methods were known checked the chat format only."""
    report = validation or {}
    fits: dict[str, Any] = report.get("fits") or {"supervised": report}
    fit = fits.get(method)
    if not isinstance(fit, dict):
        return (
            f"was checked as supervised (chat) data only when it was uploaded; upload it again to train a job "
            f"with method.type '{method}'"
        )
    if fit.get("ok") is False:
        errors = fit.get("errors") or []
        shown = "; ".join(f"line {e.get('line')}: {e.get('message')}" for e in errors)
        more = int(fit.get("error_count") or len(errors)) - len(errors)
        fitting = [m for m in METHODS if isinstance(fits.get(m), dict) and fits[m].get("ok")]
        instead = f" It is {METHOD_NAMES[fitting[0]]} data: method.type '{fitting[0]}' takes it." if fitting else ""
        return (
            f"is not {METHOD_NAMES[method]} fine-tuning data, the format of method.type '{method}': {shown}"
            + (f"; and {more} more" if more > 0 else "")
            + f".{instead}"
        )
    if needs_examples and fit.get("ok_for_job") is False:
        return (
            f"has {fit.get('valid_examples')} valid example(s) for method.type '{method}'; a fine-tuning job needs "
            f"at least {MIN_EXAMPLES}"
        )
    return None

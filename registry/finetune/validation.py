"""Validate a chat fine-tuning JSONL file before anything is uploaded or spent.

Follows OpenAI's chat fine-tuning format and the checks of its cookbook "Data preparation and analysis for
chat model fine-tuning": every defect of every line is reported (errors block a job), plus warnings about
size, missing system/user turns, duplicates and over-long examples, and the token, epoch and cost figures.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
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
MIN_EXAMPLES = 10  # OpenAI refuses a job with fewer
RECOMMENDED_EXAMPLES = 50
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 3, 100, 25_000
MIN_DEFAULT_EPOCHS, MAX_DEFAULT_EPOCHS = 1, 25
_MICRO = Decimal("0.000001")

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

    @property
    def ok(self) -> bool:
        return not self.errors

    def ok_for_job(self) -> bool:
        return self.ok and self.valid_examples >= MIN_EXAMPLES

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = asdict(self)
        data["estimated_cost_usd"] = None if self.estimated_cost_usd is None else str(self.estimated_cost_usd)
        data.update(ok=self.ok, ok_for_job=self.ok_for_job(), example_token_limit=example_token_limit(self.model))
        return data

    def to_text(self) -> str:
        findings = sorted(self.errors + self.warnings, key=lambda f: (f.line is None, f.line or 0))
        lines = [f"{'file' if f.line is None else f'line {f.line}'}: {f.severity}: {f.message}" for f in findings]
        cost = "unknown (no training price)" if self.estimated_cost_usd is None else f"${self.estimated_cost_usd}"
        lines += [
            f"model: {self.model} (per-example limit {example_token_limit(self.model)} tokens)",
            f"examples: {self.examples} ({self.valid_examples} valid), "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)",
            f"tokens: {self.tokens_total} total, {self.tokens_max_example} in the longest example"
            + ("" if self.tokens_exact else " (estimated)"),
            f"billed: {self.billed_tokens_per_epoch} tokens/epoch × {self.epochs} epochs"
            f" = {self.estimated_billed_tokens} tokens, cost {cost}",
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


def _message_problems(index: int, message: Any) -> list[tuple[str, str]]:
    where = f"message {index}"
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


def validate_jsonl(
    data: bytes | str, *, model: str = "gpt-3.5-turbo-0613", training_price_per_1m: Decimal | None = None
) -> ValidationReport:
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
        problems = _example_problems(example)
        errors += [Finding(number, code, message, "error") for code, message in problems]
        if problems:
            continue

        messages: list[dict[str, Any]] = example["messages"]
        roles = [m.get("role") for m in messages]
        if "system" not in roles and "developer" not in roles:
            warnings.append(Finding(number, "no_system_message", "example has no system message", "warning"))
        else:
            system = next(m for m in messages if m.get("role") in ("system", "developer"))
            system_prompts[_text_of(system["content"]) or ""] += 1
        if "user" not in roles:
            warnings.append(Finding(number, "no_user_message", "example has no user message", "warning"))
        key = json.dumps(messages, sort_keys=True, ensure_ascii=False)
        if key in first_seen:
            warnings.append(Finding(number, "duplicate_example", f"duplicate of line {first_seen[key]}", "warning"))
        first_seen.setdefault(key, number)

        count = count_messages(messages, model)
        n, exact = count.tokens, exact and count.exact
        for extra in ("tools", "functions"):
            if extra in example:
                counted = count_text(json.dumps(example[extra], ensure_ascii=False), model)
                n, exact = n + counted.tokens, exact and counted.exact
        if n > limit:
            warnings.append(
                Finding(
                    number,
                    "over_token_limit",
                    f"example has {n} tokens, over the {limit}-token limit of {model}; it would be truncated",
                    "warning",
                )
            )
        tokens.append(n)
        billed += min(n, limit)

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
    if training_price_per_1m is not None:
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
    )


def validate_path(
    path: Path, *, model: str = "gpt-3.5-turbo-0613", training_price_per_1m: Decimal | None = None
) -> ValidationReport:
    return validate_jsonl(Path(path).read_bytes(), model=model, training_price_per_1m=training_price_per_1m)

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.utils.finetune import DATASET, FIXTURES, INVALID_DEFECTS, ROOT
from tests.utils.processes import run_tunegate
from tunegate.registry.finetune.validation import (
    METHODS,
    ValidationReport,
    default_epochs,
    example_token_limit,
    unfit_for,
    validate_any_method,
    validate_jsonl,
    validate_path,
)


def _dataset(name: str) -> Path:
    path = DATASET / name
    if not path.is_file():
        pytest.skip(f"shared dataset {path} is not present")
    return path


def _codes(report: ValidationReport) -> list[tuple[int | None, str]]:
    """Findings as (line, code), without the estimate notice (present when tiktoken has no files)."""
    return [(f.line, f.code) for f in report.errors + report.warnings if f.code != "tokens_estimated"]


def _exact(report: ValidationReport) -> None:
    if not report.tokens_exact:
        pytest.skip("tiktoken's encoding files are not available (set TIKTOKEN_CACHE_DIR)")


def test_invalid_dataset_reports_each_defect_on_its_line() -> None:
    report = validate_path(_dataset("invalid.jsonl"))
    assert [(f.line, f.code) for f in report.errors] == INVALID_DEFECTS
    assert all(f.severity == "error" for f in report.errors)
    line7 = [f.message for f in report.errors if f.line == 7]
    assert line7[0].startswith("message 1:") and line7[1].startswith("message 2:") and "42" in line7[1]
    assert "'foo'" in report.errors[4].message and "message 1" in report.errors[4].message
    assert "legacy prompt/completion" in report.errors[1].message
    assert (None, "too_few_examples") in _codes(report)
    assert (report.examples, report.valid_examples, report.ok, report.ok_for_job()) == (10, 0, False, False)
    assert "line 7: error: message 2" in report.to_text()


def test_train_dataset_figures_match_a_hand_count() -> None:
    path = _dataset("train.jsonl")
    report = validate_path(path, training_price_per_1m=Decimal("8.00"))
    assert report.errors == []
    assert report.examples == report.valid_examples == 22
    assert report.epochs == math.ceil(100 / 22) == 5
    _exact(report)
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base")
    examples = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    sizes = [
        3 + sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in ex["messages"])
        for ex in examples
    ]
    assert report.tokens_total == sum(sizes)
    assert report.tokens_max_example == max(sizes)
    assert report.billed_tokens_per_epoch == sum(sizes)  # all under 4096
    assert report.estimated_billed_tokens == sum(sizes) * 5
    expected_cost = (Decimal(sum(sizes) * 5) * 8 / Decimal(1_000_000)).quantize(Decimal("0.000001"))
    assert report.estimated_cost_usd == expected_cost
    assert report.most_common_system_prompt == examples[0]["messages"][0]["content"]
    assert report.ok_for_job()
    assert [f.code for f in report.warnings] == ["few_examples"]
    data = report.to_dict()
    assert data["estimated_cost_usd"] == str(expected_cost)
    json.dumps(data)


def test_valid_fixture_is_ready_for_a_job() -> None:
    report = validate_path(FIXTURES / "valid_12.jsonl", training_price_per_1m=Decimal("3"))
    assert report.ok and report.ok_for_job()
    assert (report.examples, report.valid_examples, report.epochs) == (12, 12, 9)
    assert _codes(report) == [(None, "few_examples")]
    assert report.estimated_billed_tokens == report.tokens_total * 9
    assert report.estimated_cost_usd == Decimal(report.tokens_total * 9 * 3) / Decimal(1_000_000)
    assert report.most_common_system_prompt is not None
    assert report.most_common_system_prompt.startswith("You are the help desk")


def test_duplicates_missing_system_and_blank_lines() -> None:
    report = validate_path(FIXTURES / "duplicate.jsonl")
    assert report.ok and not report.ok_for_job()
    assert report.examples == 4  # the blank line 3 is not an example
    assert _codes(report) == [(4, "duplicate_example"), (5, "no_system_message"), (None, "too_few_examples")]
    assert "line 1" in report.warnings[0].message


def test_assistant_tool_call_with_null_content_is_valid() -> None:
    report = validate_path(FIXTURES / "tool_calls.jsonl")
    assert report.errors == []
    assert report.valid_examples == 1
    plain = json.loads((FIXTURES / "tool_calls.jsonl").read_text())
    del plain["tools"]
    assert report.tokens_total > validate_jsonl(json.dumps(plain)).tokens_total  # tools are counted


def test_other_format_rules() -> None:
    report = validate_path(FIXTURES / "invalid_mixed.jsonl")
    assert [(f.line, f.code) for f in report.errors] == [
        (1, "missing_messages"),
        (2, "not_an_object"),
        (3, "missing_role"),
        (4, "invalid_weight"),
        (5, "invalid_content"),
        (6, "unrecognized_key"),
        (7, "missing_content"),
    ]
    assert report.valid_examples == 1  # line 8: text parts on a user message are accepted
    assert (8, "no_system_message") in _codes(report)


def test_several_defects_on_one_line_and_bad_bytes() -> None:
    line = {"messages": [{"role": "bot", "content": 42, "x": 1}], "extra": True}
    report = validate_jsonl(json.dumps(line).encode() + b"\n\xff\xfe\n")
    assert [(f.line, f.code) for f in report.errors] == [
        (1, "unrecognized_key"),
        (1, "unrecognized_key"),
        (1, "unrecognized_role"),
        (1, "invalid_content"),
        (1, "no_assistant_message"),
        (2, "invalid_json"),
    ]


def test_over_limit_example_is_billed_at_the_limit() -> None:
    long = {
        "messages": [
            {"role": "system", "content": "Repeat."},
            {"role": "user", "content": "word " * 5000},
            {"role": "assistant", "content": "ok"},
        ]
    }
    report = validate_jsonl(json.dumps(long) + "\n", model="gpt-3.5-turbo-0613")
    assert report.tokens_total > 4096
    assert report.billed_tokens_per_epoch == 4096
    assert (1, "over_token_limit") in _codes(report)
    roomy = validate_jsonl(json.dumps(long), model="gpt-4o-mini-2024-07-18")
    assert (1, "over_token_limit") not in _codes(roomy)
    assert roomy.billed_tokens_per_epoch == roomy.tokens_total


def test_token_limits_and_epochs() -> None:
    assert example_token_limit("gpt-3.5-turbo-0613") == 4096
    assert example_token_limit("ft:gpt-3.5-turbo-0613:acme::abc123") == 4096
    assert example_token_limit("gpt-3.5-turbo-0125") == 16385
    assert example_token_limit("gpt-3.5-turbo") == 16385
    assert example_token_limit("gpt-4o-mini-2024-07-18") == 65536
    assert example_token_limit("gpt-4.1-nano-2025-04-14") == 65536
    assert example_token_limit("some-unknown-model") == 4096
    assert [default_epochs(n) for n in (1, 10, 22, 34, 100, 8333, 8334, 30000)] == [25, 10, 5, 3, 3, 3, 2, 1]


@pytest.mark.slow
def test_counts_are_marked_as_estimates_without_tiktoken_files(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from tunegate.registry.finetune.validation import validate_path\n"
        "print(json.dumps(validate_path(__import__('pathlib').Path(sys.argv[1])).to_dict()))\n"
    )
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(empty)}
    env.pop("DATA_GYM_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", code, str(FIXTURES / "valid_12.jsonl")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data = json.loads(done.stdout)
    assert data["tokens_exact"] is False
    assert data["tokens_total"] > 0
    warnings = data["warnings"]
    assert isinstance(warnings, list)
    assert {"line": None, "code": "tokens_estimated"}.items() <= next(
        w for w in warnings if w["code"] == "tokens_estimated"
    ).items()


# -- the DPO and reinforcement formats -------------------------------------------------------------------


def test_dpo_lines_report_each_defect_on_its_line() -> None:
    report = validate_path(FIXTURES / "dpo_broken.jsonl", method="dpo")
    assert [(f.line, f.code, f.message) for f in report.errors] == [
        (
            1,
            "missing_input",
            "no 'input' object; found keys: 'messages' (the chat format: a job with method.type 'supervised' "
            "or 'reinforcement' takes it)",
        ),
        (2, "missing_output", "no 'non_preferred_output' (a list holding the one assistant message)"),
        (3, "invalid_output", "'preferred_output' must be a list holding one assistant message, got dict"),
        (4, "invalid_output", "'preferred_output' must be a list holding one assistant message, got 2 messages"),
        (5, "invalid_output", "preferred_output message 1: role 'user', must be 'assistant'"),
        (6, "unrecognized_key", "input: unrecognised key 'seed' (allowed: messages, tools, parallel_tool_calls)"),
        (6, "empty_messages", "input: 'messages' is empty"),
        (6, "invalid_content", "non_preferred_output message 1: 'content' must be a non-empty string, got \"\""),
        (7, "unrecognized_key", "unrecognised key 'score' (allowed: input, preferred_output, non_preferred_output)"),
    ]
    assert _codes(report)[len(report.errors) :] == [
        (8, "no_system_message"),
        (8, "same_outputs"),
        (None, "too_few_examples"),
    ]
    assert (report.method, report.examples, report.valid_examples) == ("dpo", 8, 1)
    assert "line 5: error: preferred_output message 1: role 'user', must be 'assistant'" in report.to_text()


def test_dpo_tokens_count_the_input_with_each_output() -> None:
    report = validate_path(FIXTURES / "dpo_12.jsonl", method="dpo", training_price_per_1m=Decimal("25"))
    assert report.errors == [] and report.ok_for_job()
    _exact(report)
    from tunegate.registry.tokens import count_messages

    lines = [json.loads(line) for line in (FIXTURES / "dpo_12.jsonl").read_text().splitlines()]
    sizes = [
        count_messages(ex["input"]["messages"] + ex["preferred_output"], "gpt-3.5-turbo-0613").tokens
        + count_messages(ex["input"]["messages"] + ex["non_preferred_output"], "gpt-3.5-turbo-0613").tokens
        for ex in lines
    ]
    assert report.tokens_total == sum(sizes) == 1075
    assert (report.epochs, report.billed_tokens_per_epoch, report.estimated_billed_tokens) == (9, 1075, 9675)
    assert report.estimated_cost_usd == Decimal("0.241875")  # 9675 tokens at $25 per 1M
    assert report.most_common_system_prompt == "You are the help desk of Pudong airport. Answer briefly."


def test_reinforcement_lines_report_each_defect_on_its_line() -> None:
    report = validate_path(FIXTURES / "reinforcement_broken.jsonl", method="reinforcement")
    assert [(f.line, f.code, f.message) for f in report.errors] == [
        (
            1,
            "ends_with_assistant",
            "message 2, the last, is an assistant message: a reinforcement example ends where the model answers "
            "(the supervised format trains on given answers)",
        ),
        (
            2,
            "unrecognized_role",
            "message 1: role 'system' is not taken for reinforcement fine-tuning (allowed: developer, user, "
            "assistant, tool; put instructions in a 'developer' message)",
        ),
        (
            3,
            "missing_messages",
            "no 'messages' list; found keys: 'prompt', 'reference_answer' (the legacy prompt/completion format is "
            "not accepted)",
        ),
        (4, "empty_messages", "'messages' is empty"),
        (5, "missing_content", "message 1: no 'content' (role 'user')"),
    ]
    assert report.valid_examples == 1  # line 6: a developer message, reference keys of any name


def test_reinforcement_is_billed_by_time_not_tokens() -> None:
    report = validate_path(
        FIXTURES / "reinforcement_12.jsonl", method="reinforcement", training_price_per_1m=Decimal(25)
    )
    assert report.errors == [] and report.ok_for_job()
    assert report.tokens_total > 0  # the prompts'
    assert (report.billed_tokens_per_epoch, report.estimated_billed_tokens, report.estimated_cost_usd) == (0, 0, None)
    assert "billed: by training time, not by tokens (reinforcement): no cost estimate" in report.to_text()


def test_a_dpo_line_in_a_chat_check_names_the_dpo_format() -> None:
    report = validate_path(FIXTURES / "dpo_12.jsonl")
    assert report.errors[0].message == (
        "no 'messages' list; found keys: 'input', 'preferred_output', 'non_preferred_output' "
        "(the DPO format: a job with method.type 'dpo' takes it)"
    )
    assert [f.line for f in report.errors] == list(range(1, 13))


@pytest.mark.parametrize(
    ("name", "method"),
    [("valid_12.jsonl", "supervised"), ("dpo_12.jsonl", "dpo"), ("reinforcement_12.jsonl", "reinforcement")],
)
def test_an_upload_is_checked_against_every_method(name: str, method: str) -> None:
    report = validate_any_method((FIXTURES / name).read_bytes())
    assert report.method == method and report.ok_for_job()
    assert [m for m, fit in report.fits.items() if fit["ok"]] == [method]
    assert report.to_dict()["fits"] == report.fits
    for other in METHODS:
        why = unfit_for(report.to_dict(), other, needs_examples=True)
        assert (why is None) == (other == method)


def test_a_file_unfit_for_the_method_is_refused_naming_its_lines_and_format() -> None:
    dpo = validate_any_method((FIXTURES / "dpo_12.jsonl").read_bytes()).to_dict()
    assert unfit_for(dpo, "supervised", needs_examples=True) == (
        "is not supervised (chat) fine-tuning data, the format of method.type 'supervised': line 1: no 'messages' "
        "list; found keys: 'input', 'preferred_output', 'non_preferred_output' (the DPO format: a job with "
        "method.type 'dpo' takes it); line 2: no 'messages' list; found keys: 'input', 'preferred_output', "
        "'non_preferred_output' (the DPO format: a job with method.type 'dpo' takes it); line 3: no 'messages' "
        "list; found keys: 'input', 'preferred_output', 'non_preferred_output' (the DPO format: a job with "
        "method.type 'dpo' takes it); line 4: no 'messages' list; found keys: 'input', 'preferred_output', "
        "'non_preferred_output' (the DPO format: a job with method.type 'dpo' takes it); line 5: no 'messages' "
        "list; found keys: 'input', 'preferred_output', 'non_preferred_output' (the DPO format: a job with "
        "method.type 'dpo' takes it); and 7 more. It is DPO data: method.type 'dpo' takes it."
    )
    few = validate_any_method("".join((FIXTURES / "dpo_12.jsonl").read_text().splitlines(True)[:4])).to_dict()
    assert unfit_for(few, "dpo", needs_examples=True) == (
        "has 4 valid example(s) for method.type 'dpo'; a fine-tuning job needs at least 10"
    )
    assert unfit_for(few, "dpo", needs_examples=False) is None  # a validation file
    old = validate_path(FIXTURES / "valid_12.jsonl").to_dict()
    del old["fits"]  # a file uploaded before the methods were known
    assert unfit_for(old, "supervised", needs_examples=True) is None
    assert unfit_for(old, "dpo", needs_examples=True) == (
        "was checked as supervised (chat) data only when it was uploaded; upload it again to train a job with "
        "method.type 'dpo'"
    )


def test_a_broken_upload_is_reported_in_the_format_it_is_closest_to() -> None:
    assert validate_any_method((FIXTURES / "dpo_broken.jsonl").read_bytes()).method == "supervised"  # line 1 fits
    assert validate_any_method((FIXTURES / "reinforcement_broken.jsonl").read_bytes()).method == "reinforcement"
    assert validate_any_method((FIXTURES / "invalid_mixed.jsonl").read_bytes()).method == "supervised"


@pytest.mark.slow
def test_validate_command_takes_the_method() -> None:
    validate = ["finetune", "validate", str(FIXTURES / "dpo_12.jsonl")]
    done = run_tunegate([*validate, "--method", "dpo", "--json"])
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["method"], data["valid_examples"], data["ok_for_job"]) == ("dpo", 12, True)
    refused = run_tunegate(validate)
    assert refused.returncode == 1
    assert "line 1: error: no 'messages' list; found keys: 'input'" in refused.stdout
    assert "method: supervised;" in refused.stdout
    wrong = run_tunegate([*validate, "--method", "ppo"])
    assert wrong.returncode == 2 and "invalid choice: 'ppo'" in wrong.stderr

"""``tunegate finetune ...`` and ``tunegate model ...`` as a user runs them: subprocesses, offline on a file or
against a running gateway's admin API."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.utils.finetune import DATASET, FIXTURES, INVALID_DEFECTS, FinetuneEnv, finetune_env
from tests.utils.gateways import ADMIN_KEY
from tests.utils.processes import run_tunegate
from tests.utils.tokens import NEEDS_ENCODINGS, TIKTOKEN_EXACT
from tests.utils.upstreams import FakeUpstreamHandle

pytestmark = pytest.mark.slow  # the command line as subprocesses


def tunegate(*args: str, env: FinetuneEnv | None = None) -> subprocess.CompletedProcess[str]:
    """The command offline, or against ``env``'s gateway with the admin key."""
    gateway = {"TUNEGATE_URL": env.gateway.url, "TUNEGATE_ADMIN_KEY": ADMIN_KEY} if env is not None else None
    return run_tunegate(args, env=gateway)


def tiktoken_or_skip() -> Any:
    if not TIKTOKEN_EXACT:
        pytest.skip(NEEDS_ENCODINGS)
    import tiktoken

    return tiktoken


def hand_count(path: Path, encoding: str) -> list[int]:
    """OpenAI's count of a chat example: 3 to prime, 3 per message, its role and content tokens."""
    enc = tiktoken_or_skip().get_encoding(encoding)
    sizes = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            sizes.append(3 + sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in messages))
    return sizes


# -- validate: offline -------------------------------------------------------------------------------------


def test_validate_reports_each_defect_of_the_shared_invalid_file_on_its_line() -> None:
    path = DATASET / "invalid.jsonl"
    if not path.is_file():
        pytest.skip(f"shared dataset {path} is not present")
    done = tunegate("finetune", "validate", str(path))
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stdout.splitlines() if ": error: " in line]
    assert [line.split(":")[0] for line in errors] == [f"line {n}" for n in (1, 2, 3, 4, 5, 6, 7, 7, 8, 9, 10)]
    assert "line 5: error: message 1: unrecognised key 'foo'" in done.stdout
    assert "line 7: error: message 2: 'content' must be a non-empty string, got 42" in done.stdout
    assert "line 9: error: message 2: 'weight' must be 0 or 1, got 2" in done.stdout
    assert done.stdout.rstrip().endswith("NOT ready for a fine-tuning job")

    as_json = tunegate("finetune", "validate", str(path), "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert [(e["line"], e["code"]) for e in report["errors"]] == INVALID_DEFECTS
    assert (report["examples"], report["valid_examples"], report["ok"]) == (10, 0, False)


def test_validate_the_project_fixtures() -> None:
    mixed = tunegate("finetune", "validate", str(FIXTURES / "invalid_mixed.jsonl"), "--json")
    assert mixed.returncode == 1
    assert [e["line"] for e in json.loads(mixed.stdout)["errors"]] == [1, 2, 3, 4, 5, 6, 7]
    duplicate = tunegate("finetune", "validate", str(FIXTURES / "duplicate.jsonl"))
    assert duplicate.returncode == 0  # warnings only: the file is usable, a job is not (too few examples)
    assert "line 4: warning: duplicate of line 1" in duplicate.stdout
    assert "NOT ready for a fine-tuning job" in duplicate.stdout
    missing = tunegate("finetune", "validate", str(FIXTURES / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


@pytest.mark.parametrize(
    ("model", "encoding", "price"),
    [("gpt-3.5-turbo-0613", "cl100k_base", Decimal("8.00")), ("gpt-4o-mini-2024-07-18", "o200k_base", Decimal("3.00"))],
)
def test_validate_figures_match_a_hand_count(model: str, encoding: str, price: Decimal) -> None:
    path = FIXTURES / "valid_12.jsonl"
    sizes = hand_count(path, encoding)
    done = tunegate("finetune", "validate", str(path), "--model", model)
    assert done.returncode == 0, done.stdout + done.stderr
    epochs = math.ceil(100 / 12)  # 9: raised so that examples × epochs reaches 100
    billed = sum(sizes) * epochs
    cost = (Decimal(billed) * price / 1_000_000).quantize(Decimal("0.000001"), ROUND_HALF_UP)
    assert f"tokens: {sum(sizes)} total, {max(sizes)} in the longest example\n" in done.stdout
    assert f"billed: {sum(sizes)} tokens/epoch × {epochs} epochs = {billed} tokens, cost ${cost}" in done.stdout
    assert "ready for a fine-tuning job" in done.stdout
    assert "fallback prompt): You are the help desk of the Riverside public library. Answer briefly." in done.stdout


def test_validate_the_shared_training_set() -> None:
    path = DATASET / "train.jsonl"
    if not path.is_file():
        pytest.skip(f"shared dataset {path} is not present")
    sizes = hand_count(path, "cl100k_base")
    report = json.loads(tunegate("finetune", "validate", str(path), "--json").stdout)
    assert (report["valid_examples"], report["epochs"], report["tokens_total"]) == (22, 5, sum(sizes))
    expected = (Decimal(sum(sizes) * 5) * 8 / 1_000_000).quantize(Decimal("0.000001"), ROUND_HALF_UP)
    assert Decimal(report["estimated_cost_usd"]) == expected
    assert report["most_common_system_prompt"].startswith("你是上海浦东国际机场的智慧客服")


# -- against a running gateway -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FinetuneEnv]:
    with finetune_env(own_database_url, fake_upstream, tmp_path_factory.mktemp("finetune-cli")) as environment:
        yield environment


def test_status_list_promote_and_lineage(env: FinetuneEnv) -> None:
    job_id = env.start_job("canary-desk", tunegate_canary="10")
    assert env.drive(job_id) == "succeeded"
    model = env.job(job_id).fine_tuned_model
    before = env.alias("canary-desk")[0]

    listed = tunegate("finetune", "list", "--team", "airport-cs", env=env)
    assert listed.returncode == 0, listed.stderr
    [row] = [line.split() for line in listed.stdout.splitlines() if line.startswith(job_id)]
    assert row == [job_id, "airport-cs", "succeeded", "gpt-4o-mini-2024-07-18", model, "canary-desk", str(before)]

    status = tunegate("finetune", "status", job_id, env=env)
    assert status.returncode == 0, status.stderr
    assert f"alias canary-desk: promoted as version {before} (canary 10%)" in status.stdout
    assert f"  canary 10%: {model} on fake\n    ← job {job_id} (team airport-cs, succeeded" in status.stdout
    sha = hashlib.sha256((FIXTURES / "valid_12.jsonl").read_bytes()).hexdigest()
    assert f"(valid_12.jsonl, 3265 bytes, sha256 {sha})" in status.stdout
    warnings = 1 if TIKTOKEN_EXACT else 2  # without tiktoken's files, the counts are estimates: a warning too
    assert f"12 examples (12 valid), 0 error(s), {warnings} warning(s)" in status.stdout

    promoted = tunegate("finetune", "promote", job_id, env=env)
    assert promoted.returncode == 0, promoted.stderr
    assert f"alias canary-desk: promoted as version {before + 1} (target)" in promoted.stdout
    _, spec, _ = env.alias("canary-desk")
    assert (spec.target.model, spec.canary) == (model, ())

    refused = tunegate("finetune", "promote", job_id, "--canary", "20", env=env)
    assert refused.returncode == 1 and "is the alias's target already" in refused.stderr
    unbound = env.start_job(None)
    env.drive(unbound)
    refused = tunegate("finetune", "promote", unbound, env=env)
    assert refused.returncode == 1 and "not bound to an alias" in refused.stderr
    missing = tunegate("finetune", "status", "ftjob-nope", env=env)
    assert missing.returncode == 1 and "Could not find fine-tuning job: ftjob-nope (HTTP 404)" in missing.stderr

    lineage = tunegate("finetune", "lineage", "canary-desk", env=env)
    assert lineage.returncode == 0, lineage.stderr
    assert lineage.stdout.startswith(f"alias canary-desk (global) version {before + 1}: promoted from job {job_id}")
    assert f"  target: {model} on fake\n    ← job {job_id}" in lineage.stdout
    assert "  fallback: gpt-4o-mini on fake + system prompt\n    ← served by the upstream as it is" in lineage.stdout


def test_an_external_model_shows_as_external_in_the_lineage(env: FinetuneEnv) -> None:
    registered = tunegate(
        "model", "register", "pudong-lora", "--upstream", "second", "--base-model", "Qwen2.5-7B-Instruct",
        "--note", "vLLM LoRA adapter", env=env,
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    assert "registered pudong-lora on second (external, base Qwen2.5-7B-Instruct)" in registered.stdout
    again = tunegate("model", "register", "pudong-lora", "--upstream", "second", env=env)
    assert again.returncode == 1 and "registered already" in again.stderr
    unknown = tunegate("model", "register", "x", "--upstream", "nowhere", env=env)
    assert unknown.returncode == 1 and "unknown upstream 'nowhere'" in unknown.stderr
    assert "pudong-lora  second    Qwen2.5-7B-Instruct" in tunegate("model", "list", env=env).stdout
    lineage = tunegate("finetune", "lineage", "lora-desk", env=env)
    assert (
        "  target: pudong-lora on second\n"
        "    ← external fine-tune of Qwen2.5-7B-Instruct (registered by admin; vLLM LoRA adapter)"
    ) in lineage.stdout
    data = json.loads(tunegate("finetune", "lineage", "lora-desk", "--json", env=env).stdout)
    assert [(t["role"], t["source"]) for t in data["targets"]] == [("target", "external"), ("fallback", "upstream")]


def test_retirements_command(env: FinetuneEnv) -> None:
    model = "ft:gpt-4o-mini-2024-07-18:pudong::retiring"
    httpx.post(env.fake.url + "/_models", json={"id": model, "shutdown_date": "2099-01-01"}).raise_for_status()
    try:
        done = tunegate("finetune", "retirements", "--refresh", "--window-days", "100000", env=env)
        assert done.returncode == 0, done.stderr
        [row] = [line.split() for line in done.stdout.splitlines() if line.startswith("retiring ")]
        assert row[:7] == ["retiring", "global", "1", "target", model, "fake", "2099-01-01"]
        quiet = tunegate("finetune", "retirements", env=env)
        assert not [line for line in quiet.stdout.splitlines() if line.startswith("retiring ")]  # 30-day window
    finally:
        httpx.post(env.fake.url + "/_models", json={"id": model, "shutdown_date": None}).raise_for_status()
        env.gateway.admin("POST", "/admin/retirements/refresh")

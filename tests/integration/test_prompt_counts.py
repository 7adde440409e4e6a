"""A system prompt's token counts are stored when an alias version naming it is written (the admin API, the file
applied at start, and at start for versions written before), so that the first model call after a prompt change
only reads them: nothing on the request path counts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from tests.utils.gateways import ADMIN_KEY, PUDONG_PROMPT, GatewayHandle, gateway_yaml, running_gateway
from tests.utils.processes import TUNEGATE, serve_tunegate
from tests.utils.servers import free_port
from tests.utils.tokens import NEEDS_ENCODINGS, TIKTOKEN_EXACT
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tests.utils.waiting import eventually
from tunegate.registry.bootstrap import prepare_database
from tunegate.registry.db import make_engine
from tunegate.registry.models import SystemPromptCount, UsageRecord
from tunegate.registry.prompt_counts import prompt_sha256
from tunegate.registry.tokens import ENCODINGS, TokenCount, count_here, count_system_prompt, set_prompt_counter

pytestmark = pytest.mark.skipif(not TIKTOKEN_EXACT, reason=NEEDS_ENCODINGS)

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is gate D?"}]
Calls = list[list[tuple[str, str]]]


def uid() -> str:
    return uuid.uuid4().hex[:8]


def exact_counts(prompt: str) -> dict[str, tuple[int, bool]]:
    """What the table must hold for ``prompt``: its exact count in each encoding (a model of each)."""
    return {
        "cl100k_base": (count_system_prompt(prompt, "gpt-3.5-turbo"), True),
        "o200k_base": (count_system_prompt(prompt, "gpt-4o-mini"), True),
    }


def stored(engine: Engine, prompt: str) -> dict[str, tuple[int, bool]]:
    with Session(engine) as session:
        rows = session.exec(select(SystemPromptCount).where(SystemPromptCount.prompt_sha256 == prompt_sha256(prompt)))
        return {row.encoding: (row.tokens, row.exact) for row in rows}


@pytest.fixture
def counter_calls() -> Iterator[Calls]:
    """Every call to this process's prompt counter (the test gateways run here), installed through the seam."""
    calls: Calls = []

    def counting(pairs: Sequence[tuple[str, str]]) -> list[TokenCount]:
        calls.append(list(pairs))
        return count_here(pairs)

    previous = set_prompt_counter(counting)
    yield calls
    set_prompt_counter(previous)


def chat(gateway: GatewayHandle, model: str) -> UsageRecord:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.keys["airport-cs"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=QUESTION)
    return gateway.usage(raw.headers["x-request-id"])


def put_alias(gateway: GatewayHandle, name: str, **body: object) -> None:
    response = gateway.admin("PUT", f"/admin/aliases/{name}", json=body)
    assert response.status_code == 200, response.text


def test_a_prompt_change_is_counted_when_written_and_the_first_call_only_reads_it(
    gateway: GatewayHandle, counter_calls: Calls
) -> None:
    name = f"counted-{uid()}"
    prompt = f"你是浦东机场问询处的助手 ({name})。请用一句话回答。"
    put_alias(gateway, name, upstream="fake", model="gpt-4o-mini", system_prompt="Answer briefly.")
    assert chat(gateway, name).injected_tokens == count_system_prompt("Answer briefly.", "gpt-4o-mini") == 7
    counter_calls.clear()

    put_alias(gateway, name, system_prompt=prompt)  # the prompt changes: a new version
    counts = exact_counts(prompt)
    assert counts["cl100k_base"] != counts["o200k_base"]  # so that the encoding used shows
    assert stored(gateway.engine, prompt) == counts  # before any model call
    assert counter_calls == [[(prompt, "cl100k_base"), (prompt, "o200k_base")]]  # one count for the write
    counter_calls.clear()

    first, second = chat(gateway, name), chat(gateway, name)
    assert first.alias_version == second.alias_version == 2
    assert first.injected_tokens == second.injected_tokens == counts["o200k_base"][0]
    assert counter_calls == []  # the request path read the count, it did not count


def test_a_pattern_alias_has_its_prompt_counted_for_the_model_each_client_names(
    gateway: GatewayHandle, counter_calls: Calls
) -> None:
    stem = uid()
    prompt = f"你是 {stem} 的助手。请简洁地回答旅客问题。"
    put_alias(gateway, f"*-{stem}", upstream="fake", system_prompt=prompt)
    counts = exact_counts(prompt)
    assert counts["cl100k_base"] != counts["o200k_base"]
    counter_calls.clear()

    assert chat(gateway, f"gpt-4o-{stem}").injected_tokens == counts["o200k_base"][0]
    assert chat(gateway, f"gpt-3.5-turbo-{stem}").injected_tokens == counts["cl100k_base"][0]
    assert counter_calls == []


def test_a_version_written_before_counts_were_stored_is_counted_once_and_at_the_next_start(
    gateway: GatewayHandle, counter_calls: Calls
) -> None:
    name = f"old-{uid()}"
    prompt = f"You are the lost-and-found desk ({name}). Answer in one sentence."
    put_alias(gateway, name, upstream="fake", model="gpt-4o-mini", system_prompt=prompt)
    with Session(gateway.engine) as session:  # what a database written before this table looks like
        session.execute(delete(SystemPromptCount).where(col(SystemPromptCount.prompt_sha256) == prompt_sha256(prompt)))
        session.commit()
    counter_calls.clear()

    assert chat(gateway, name).injected_tokens == exact_counts(prompt)["o200k_base"][0]
    assert counter_calls == [[(prompt, "o200k_base")]]  # counted when resolved, with the seam, once

    counter_calls.clear()
    prepare_database(gateway.engine, gateway.gateway.settings)  # the next start
    assert stored(gateway.engine, prompt) == exact_counts(prompt)
    assert counter_calls == [[(prompt, encoding) for encoding in ENCODINGS]]


def test_the_aliases_applied_from_the_file_at_start_have_their_counts_before_the_first_call(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path: Path, counter_calls: Calls
) -> None:
    with running_gateway(own_database_url, fake_upstream.base_url, tmp_path) as gateway:
        for prompt in (PUDONG_PROMPT, "Answer briefly."):
            assert stored(gateway.engine, prompt) == exact_counts(prompt)
        # One count for each new prompt's alias write, the aliases naming it again after it counting nothing.
        assert sorted(counter_calls) == sorted(
            [[(prompt, encoding) for encoding in ENCODINGS] for prompt in ("Answer briefly.", PUDONG_PROMPT)]
        )
        counter_calls.clear()

        assert chat(gateway, "prompted-prepend").injected_tokens == exact_counts("Answer briefly.")["o200k_base"][0]
        # Served by its fine-tuned model: the fallback's prompt it did not need, in the fallback's encoding.
        assert chat(gateway, "pudong-support").saved_tokens == exact_counts(PUDONG_PROMPT)["cl100k_base"][0]
        assert counter_calls == []


@pytest.mark.slow
def test_a_serving_process_counts_in_a_child_and_never_loads_the_encodings() -> None:
    code = (
        "import json, sys\n"
        "from tunegate.proxy.serving import lean_serving_process\n"
        "lean_serving_process()\n"
        "from tunegate.registry.tokens import ENCODINGS, count_system_prompts, encodings_loaded\n"
        "counts = count_system_prompts([(sys.argv[1], e) for e in ENCODINGS])\n"
        "print(json.dumps({'counts': {e: [c.tokens, c.exact] for e, c in zip(ENCODINGS, counts)},\n"
        "                  'loaded': encodings_loaded(), 'tiktoken': 'tiktoken' in sys.modules}))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, PUDONG_PROMPT], capture_output=True, text=True, timeout=120, check=True
    )
    answer = json.loads(child.stdout)
    assert {e: tuple(c) for e, c in answer["counts"].items()} == exact_counts(PUDONG_PROMPT)
    assert (answer["loaded"], answer["tiktoken"]) == (False, False)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which(str(TUNEGATE)), reason="the tunegate command is not installed in this environment")
def test_tunegate_serve_stores_an_admin_writes_counts_without_loading_the_encodings(
    fake_upstream: FakeUpstreamHandle, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'serve.db'}"
    config = tmp_path / "tunegate.yaml"
    config.write_text(gateway_yaml(database, fake_upstream.base_url), encoding="utf-8")
    env = {"TUNEGATE_ADMIN_KEY": ADMIN_KEY, "TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    engine = make_engine(database)
    try:
        with serve_tunegate(["--config", str(config)], port=free_port(), cwd=tmp_path, env=env) as served:
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            name, prompt = f"served-{uid()}", f"你是 {uid()} 的助手。请用一句话回答。"
            written = httpx.put(
                f"{served.url}/admin/aliases/{name}",
                json={"upstream": "fake", "model": "gpt-4o-mini", "system_prompt": prompt},
                headers=admin,
                timeout=60,
            )
            assert written.status_code == 200, written.text
            assert stored(engine, prompt) == exact_counts(prompt)  # counted in a child of the serving process

            keys = httpx.post(f"{served.url}/admin/keys", json={"team": "airport-cs"}, headers=admin, timeout=30)
            client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=keys.json()["key"], max_retries=0)
            raw = client.chat.completions.with_raw_response.create(model=name, messages=QUESTION)
            maps = Path(f"/proc/{served.process.pid}/maps")
            if maps.exists():
                assert "_tiktoken" not in maps.read_text()

            def recorded() -> UsageRecord | None:
                with Session(engine) as session:
                    query = select(UsageRecord).where(UsageRecord.request_id == raw.headers["x-request-id"])
                    return session.exec(query).first()

            record = eventually(recorded, what="the usage record")
            assert record.injected_tokens == exact_counts(prompt)["o200k_base"][0]
    finally:
        engine.dispose()

"""`tunegate serve` as a user runs it: a subprocess, the demo set-up, and usage flushed on SIGTERM."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from sqlmodel import Session, select

from tests.utils.processes import TUNEGATE, Served, run_tunegate, serve_tunegate
from tests.utils.servers import free_port
from tunegate.config import DEFAULT_CONFIG, load_settings
from tunegate.registry.db import make_engine
from tunegate.registry.models import UsageRecord
from tunegate.registry.tokens import system_prompt_tokens

pytestmark = pytest.mark.slow  # `tunegate serve` as a subprocess


@pytest.fixture
def demo_gateway(tmp_path: Path) -> Iterator[tuple[str, str, Served]]:
    """`tunegate serve --demo` on the example config, with usage held for a minute unless flushed at exit."""
    config = tmp_path / "tunegate.yaml"
    config.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8") + "usage: {flush_interval: 60}\n", encoding="utf-8")
    database = f"sqlite:///{tmp_path / 'demo.db'}"
    args = ["--demo", "--config", str(config)]
    env = {"TUNEGATE_DATABASE_URL": database}
    with serve_tunegate(args, port=free_port(), cwd=tmp_path, env=env, port_by_environment=True) as served:
        yield served.url + "/v1", database, served


@pytest.mark.skipif(not shutil.which(str(TUNEGATE)), reason="the tunegate command is not installed in this environment")
def test_demo_answers_pudong_support_offline_and_flushes_usage_on_sigterm(
    demo_gateway: tuple[str, str, Served],
) -> None:
    base_url, database, served = demo_gateway
    process = served.process
    client = openai.OpenAI(base_url=base_url, api_key="tg-demo-key", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="pudong-support", messages=[{"role": "user", "content": "国际航班提前多久办理值机?"}]
    )
    assert raw.parse().choices[0].message.content == "Echo: 国际航班提前多久办理值机?"
    request_id = raw.headers["x-request-id"]
    # The prompt's tokens were counted in a child process: the serving process holds no tiktoken encodings.
    maps = Path(f"/proc/{process.pid}/maps")
    if maps.exists():
        assert "_tiktoken" not in maps.read_text()

    output = served.stop(timeout=30)
    assert process.returncode == 0, output
    assert "tg-demo-key" in output  # the demo prints the key a newcomer needs

    engine = make_engine(database)
    with Session(engine) as session:
        record = session.exec(select(UsageRecord).where(UsageRecord.request_id == request_id)).one()
    engine.dispose()
    assert record.alias == "pudong-support" and record.completion_tokens == 1 + 1 + 13
    # Served by the fine-tuned model: the fallback's prompt it did not need, counted with the model's encoding.
    fallback = load_settings(DEFAULT_CONFIG).aliases["pudong-support"].fallback
    assert fallback is not None and fallback.system_prompt
    assert record.served_by == "model"
    assert record.saved_tokens == system_prompt_tokens(fallback.system_prompt, fallback.model) > 0


def test_a_bad_configuration_exits_2_with_the_key_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("servre: {port: 1}\n", encoding="utf-8")
    result = run_tunegate(["serve", "--config", str(config)], timeout=60)
    assert result.returncode == 2
    assert f"{config}: unknown key 'servre'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_it_cannot_prepare_exits_3_without_a_traceback(tmp_path: Path) -> None:
    """The child that migrates (started while the server imports) fails: the server does not start."""
    config = tmp_path / "tunegate.yaml"
    config.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    env = {
        "TUNEGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}",
        "TUNEGATE_PORT": str(free_port()),
        "TUNEGATE_ADMIN_KEY": "tg-admin",
        "OPENAI_API_KEY": "sk-unused",
    }
    result = run_tunegate(["serve", "--config", str(config)], timeout=60, env=env)
    assert result.returncode == 3, result.stderr
    assert "tunegate: preparing the database failed: OperationalError" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Application startup complete" not in result.stderr

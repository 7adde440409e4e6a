"""`tunegate serve` on a file with a name the registry would refuse: a configuration error (exit 2) naming the
file and the key, before any database is touched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.utils.processes import TUNEGATE, run_tunegate
from tests.utils.servers import free_port

UPSTREAMS = "upstreams:\n  u: {base_url: 'http://127.0.0.1:9/v1'}\n"


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which(str(TUNEGATE)), reason="the tunegate command is not installed in this environment")
@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ("teams:\n  - name: airport-cs\n  - name: 'ops:eu'\n", "teams[1].name", "'ops:eu' is not a usable team name"),
        (
            "aliases:\n  'pudong support': {upstream: u, model: gpt-4o-mini}\n",
            "aliases.pudong support",
            "'pudong support' is not a usable alias name",
        ),
        (
            "upstreams:\n  'open/ai': {base_url: 'http://127.0.0.1:9/v1'}\n",
            "upstreams.open/ai",
            "'open/ai' is not a usable upstream name",
        ),
    ],
    ids=["team", "alias", "upstream"],
)
def test_a_bad_name_exits_2_naming_the_file_and_the_key(tmp_path: Path, body: str, key: str, words: str) -> None:
    config = tmp_path / "bad-names.yaml"
    database = tmp_path / "never-made.db"
    text = f"database: {{url: 'sqlite:///{database}'}}\n" + (body if body.startswith("upstreams") else UPSTREAMS + body)
    config.write_text(text, encoding="utf-8")
    env = {"TUNEGATE_PORT": str(free_port()), "TUNEGATE_ADMIN_KEY": "tg-admin", "OPENAI_API_KEY": "sk-unused"}
    result = run_tunegate(["serve", "--config", str(config)], timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    assert f"{config}: {key}: {words}" in result.stderr
    assert result.stderr.startswith("tunegate: configuration error:\n")
    assert "Traceback" not in result.stderr
    assert not database.exists()  # refused before the database was prepared

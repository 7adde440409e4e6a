"""The access log as an operator reads it: ``tunegate serve --log-format json`` as a subprocess, a model call through
the openai SDK and an admin call, and the one JSON line each leaves on the process's output."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.utils.gateways import ADMIN_KEY, gateway_yaml
from tests.utils.processes import Served, serve_tunegate
from tests.utils.servers import free_port
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tests.utils.waiting import eventually

pytestmark = pytest.mark.slow  # `tunegate serve` as a subprocess

QUESTION = "Where is the lost and found desk in Terminal 2?"


@pytest.fixture(scope="module")
def served(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("access-log")
    config = tmp / "tunegate.yaml"
    config.write_text(gateway_yaml(own_database_url, fake_upstream.base_url), encoding="utf-8")
    env = {"TUNEGATE_ADMIN_KEY": ADMIN_KEY, "TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    with serve_tunegate(["--config", str(config), "--log-format", "json"], port=free_port(), cwd=tmp, env=env) as s:
        yield s


def json_lines(served: Served) -> list[dict[str, Any]]:
    """Every line of the output, each parsed as JSON (one that is not fails the test here)."""
    return [orjson.loads(line) for line in served.output().splitlines() if line.strip()]


def access_line(served: Served, request_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        lines = [line for line in json_lines(served) if line.get("request_id") == request_id]
        assert len(lines) <= 1, lines  # one line per request
        return lines[0] if lines else None

    line: dict[str, Any] = eventually(found, what=f"the access log line of {request_id}")
    return line


def admin(served: Served, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.request(method, served.url + path, headers=headers, timeout=30, **kwargs)


def test_a_model_call_leaves_one_json_line_with_its_figures_and_no_prompt(served: Served) -> None:
    key = admin(served, "POST", "/admin/keys", json={"team": "airport-cs"}).json()["key"]
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="pudong-support", messages=[{"role": "user", "content": QUESTION}]
    )
    answer = raw.parse()
    assert answer.usage is not None
    request_id = raw.headers["x-request-id"]

    line = access_line(served, request_id)
    assert line["logger"] == "tunegate.access" and line["level"] == "info"
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions" and line["status"] == 200
    assert line["team"] == "airport-cs" and line["alias"] == "pudong-support" and line["alias_version"] == 1
    assert line["served_by"] == "model" and line["upstream"] == "fake"
    assert line["model"] == "ft:gpt-3.5-turbo-0613:pudong::8abc123"
    # The figures the upstream counted, as the SDK saw them.
    assert line["prompt_tokens"] == answer.usage.prompt_tokens > 0
    assert line["completion_tokens"] == answer.usage.completion_tokens > 0
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    output = served.output()
    assert QUESTION not in output and "Echo:" not in output  # neither the prompt nor the answer is logged
    assert key not in output and UPSTREAM_KEY not in output


def test_a_refused_model_call_and_an_admin_call_have_lines_of_their_own(served: Served) -> None:
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="tg-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="pudong-support", messages=[{"role": "user", "content": QUESTION}])
    request_id = refused.value.response.headers["x-request-id"]
    line = access_line(served, request_id)
    assert line["status"] == 401 and line["path"] == "/v1/chat/completions"
    assert "team" not in line and "prompt_tokens" not in line  # no caller, no usage record

    teams = admin(served, "GET", "/admin/teams")
    assert teams.status_code == 200
    line = access_line(served, teams.headers["x-request-id"])  # the access log gave the answer its id
    assert line["method"] == "GET" and line["path"] == "/admin/teams" and line["status"] == 200
    assert line["duration_ms"] > 0


def test_the_demo_logs_its_model_calls_too(tmp_path: Any) -> None:
    """``make run``: the demo's built-in upstream configures uvicorn's logging (logging.config closes every handler
    it finds); the gateway's access lines still reach the output."""
    env = {"TUNEGATE_ADMIN_KEY": ADMIN_KEY}
    with serve_tunegate(["--demo"], port=free_port(), cwd=tmp_path, env=env) as demo:
        client = openai.OpenAI(base_url=demo.url + "/v1", api_key="tg-demo-key", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="pudong-support", messages=[{"role": "user", "content": QUESTION}]
        )
        request_id = raw.headers["x-request-id"]
        line: str = eventually(
            lambda: next((line for line in demo.output().splitlines() if request_id in line), None),
            what=f"the demo's access log line of {request_id}",
        )
    assert "tunegate.access" in line and "status=200" in line and "alias=pudong-support" in line

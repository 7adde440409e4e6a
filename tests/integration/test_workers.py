"""`tunegate serve --workers N`: N worker processes on one port, the database prepared once by the parent,
usage and metrics whole across the workers."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session, select

from tests.utils.gateways import ADMIN_KEY, METRICS_TOKEN, gateway_yaml
from tests.utils.processes import Served, run_tunegate, serve_tunegate
from tests.utils.servers import free_port
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tests.utils.waiting import eventually
from tunegate.config import DEFAULT_CONFIG
from tunegate.registry.db import make_engine
from tunegate.registry.models import UsageRecord

pytestmark = pytest.mark.slow  # `tunegate serve --workers 2` as a subprocess
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "国际航班提前多久办理值机?"}]


def worker_pids(served: Served) -> list[int]:
    """The worker processes: the children of the parent, without multiprocessing's resource tracker and the
    child that counts system prompts' tokens (``python -m tunegate.registry.tokens``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        helper = b"resource_tracker" in command or b"tunegate.registry.tokens" in command
        if int(stat.rsplit(")", 1)[1].split()[1]) == served.process.pid and not helper:
            found.append(int(entry))
    return sorted(found)


@pytest.fixture
def two_workers(own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path: Path) -> Iterator[Served]:
    config = tmp_path / "tunegate.yaml"
    config.write_text(gateway_yaml(own_database_url, fake_upstream.base_url), encoding="utf-8")
    env = {
        "TUNEGATE_ADMIN_KEY": ADMIN_KEY,
        "TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
        "TUNEGATE_METRICS_TOKEN": METRICS_TOKEN,
    }
    args = ["--config", str(config), "--workers", "2"]
    with serve_tunegate(args, port=free_port(), cwd=tmp_path, env=env, port_by_environment=True) as served:
        yield served


def _owner(connection: http.client.HTTPConnection, gateway_port: int, workers: list[int]) -> int | None:
    """The worker process holding the server side of ``connection`` (from /proc/net/tcp and the fd tables)."""
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == gateway_port and int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    for pid in workers:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def _chat(connection: http.client.HTTPConnection, key: str) -> dict[str, object]:
    body = json.dumps({"model": "pudong-support", "messages": QUESTION})
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
    response = connection.getresponse()
    payload: dict[str, object] = json.loads(response.read())
    assert response.status == 200, payload
    return payload


def test_two_workers_serve_on_one_port_with_one_migration_and_whole_usage_and_metrics(
    two_workers: Served, own_database_url: str
) -> None:
    workers = worker_pids(two_workers)
    assert len(workers) == 2, workers
    created = httpx.post(
        two_workers.url + "/admin/keys",
        json={"team": "airport-cs", "name": "workers"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    client = openai.OpenAI(base_url=two_workers.url + "/v1", api_key=key, max_retries=0)

    answers = []
    for _ in range(6):
        raw = client.chat.completions.with_raw_response.create(model="pudong-support", messages=QUESTION)
        assert raw.parse().choices[0].message.content == "Echo: 国际航班提前多久办理值机?"
        assert raw.headers["x-tunegate-served-by"] == "model"
        answers.append(raw.headers["x-request-id"])
    stream = client.chat.completions.create(model="pudong-support", messages=QUESTION, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: 国际航班提前多久办理值机?"
    chats = len(answers) + 1

    # New connections go to whichever worker accepts them first: keep opening until both have answered one.
    owners: dict[int, str] = {}
    connections = []

    def answered_by_both() -> bool:
        nonlocal chats
        connection = http.client.HTTPConnection("127.0.0.1", two_workers.port, timeout=10)
        connections.append(connection)
        payload = _chat(connection, key)
        chats += 1
        owner = _owner(connection, two_workers.port, workers)
        assert owner in workers
        owners.setdefault(owner, str(payload["id"]))
        return len(owners) == 2

    eventually(answered_by_both, what="a chat answered by each worker", timeout=30, interval=0)
    for connection in connections:
        connection.close()
    assert sorted(owners) == workers  # each worker answered a chat completion

    # /metrics from any one worker counts the answers of both (PROMETHEUS_MULTIPROC_DIR set by the parent).
    metrics = http.client.HTTPConnection("127.0.0.1", two_workers.port, timeout=10)
    metrics.request("GET", "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    text = metrics.getresponse().read().decode()
    metrics.close()
    line = 'tunegate_http_responses_total{route="/v1/chat/completions",status_class="2xx"} '
    assert f"{line}{float(chats)}" in text, [x for x in text.splitlines() if "http_responses_total" in x]

    output = two_workers.stop()
    assert two_workers.process.returncode == 0, output
    # The parent migrated once; the workers did not (each would log its own Alembic context).
    assert output.count("Context impl") == 1, output

    engine = make_engine(own_database_url)
    with Session(engine) as session:
        records = session.exec(select(UsageRecord).where(UsageRecord.alias == "pudong-support")).all()
    engine.dispose()
    assert len(records) == chats  # both workers flushed their records on SIGTERM
    assert set(answers) <= {r.request_id for r in records}


def test_demo_with_two_workers_answers_from_the_built_in_upstream(tmp_path: Path) -> None:
    config = tmp_path / "tunegate.yaml"
    config.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    env = {"TUNEGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    args = ["--demo", "--config", str(config), "--workers", "2"]
    with serve_tunegate(args, port=free_port(), cwd=tmp_path, env=env, port_by_environment=True) as served:
        client = openai.OpenAI(base_url=served.url + "/v1", api_key="tg-demo-key", max_retries=0)
        for _ in range(4):
            answer = client.chat.completions.create(model="pudong-support", messages=QUESTION)
            assert answer.choices[0].message.content == "Echo: 国际航班提前多久办理值机?"
        assert httpx.get(served.url + "/metrics", timeout=10).status_code == 200  # open in demo mode, each worker
        output = served.stop()
        assert served.process.returncode == 0, output
        assert "tg-demo-key" in output
        assert "(open to everyone: demo mode)" in output


def test_workers_below_one_is_refused(tmp_path: Path) -> None:
    result = run_tunegate(["serve", "--workers", "0", "--config", str(DEFAULT_CONFIG)], timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert "--workers must be 1 or more" in result.stderr

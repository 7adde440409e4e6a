"""Two gateway processes sharing one database: a change made through one is served by the other within
``cache.ttl_seconds`` (set to 0.5 s here), and by the one that made it on the very next request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, FakeUpstreamHandle, gateway_yaml
from tests.utils.servers import free_port, wait_until_ready

TUNEGATE = Path(sys.executable).with_name("tunegate")
TTL = 0.5
BOUND = 4 * TTL  # the documented bound is the TTL; the rest is room for a slow machine
QUESTION = [{"role": "user", "content": "Where is gate D?"}]


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]

    def model(self, key: str, alias: str) -> str:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model=alias, messages=QUESTION)
        return raw.headers["x-tunegate-model"]

    def tunegate(self, *args: str) -> str:
        env = {**os.environ, "TUNEGATE_URL": self.url, "TUNEGATE_ADMIN_KEY": ADMIN_KEY}
        result = subprocess.run([str(TUNEGATE), *args], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture(scope="module")
def replicas(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica]]:
    directory = tmp_path_factory.mktemp("replicas")
    config = directory / "tunegate.yaml"
    text = gateway_yaml(own_database_url, fake_upstream.base_url, extra=f"cache: {{ttl_seconds: {TTL}}}")
    # Subprocesses on a busy machine: a slow answer must not turn into a fallback and hide what is tested.
    assert "read_timeout: 1.5" in text
    config.write_text(text.replace("read_timeout: 1.5", "read_timeout: 30"), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("TUNEGATE_DATABASE_URL", "TUNEGATE_CONFIG")}
    env.update(TUNEGATE_ADMIN_KEY=ADMIN_KEY, TUNEGATE_TEST_UPSTREAM_KEY=UPSTREAM_KEY)
    started: list[Replica] = []
    try:
        for name in ("a", "b"):  # one after the other: the second start-up applies the same file, changing nothing
            port = free_port()
            with (directory / f"{name}.log").open("wb") as log:
                process = subprocess.Popen(
                    [str(TUNEGATE), "serve", "--config", str(config), "--port", str(port)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=directory,
                )
            started.append(Replica(f"http://127.0.0.1:{port}", process))
            wait_until_ready(started[-1].url)
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.process.terminate()
        for replica in started:
            replica.process.wait(30)


def within(bound: float, check: Callable[[], bool]) -> float:
    """Seconds until ``check`` holds, polling; fails once ``bound`` has passed."""
    start = time.monotonic()
    while not check():
        waited = time.monotonic() - start
        assert waited < bound, f"not seen after {waited:.2f}s (bound {bound}s)"
        time.sleep(0.05)
    return time.monotonic() - start


def team_key(replica: Replica) -> str:
    team = f"replica-{uuid.uuid4().hex[:8]}"
    replica.tunegate("team", "create", team)
    key: str = json.loads(replica.tunegate("key", "create", "--team", team, "--json"))["key"]
    return key


def test_an_alias_change_through_one_replica_is_served_by_the_other_within_the_ttl(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    key = team_key(a)
    alias = f"shared-{uuid.uuid4().hex[:8]}"
    a.tunegate("alias", "set", alias, "--upstream", "fake", "--model", "ft:gpt-4o-mini:pudong::v1")
    assert b.model(key, alias) == "ft:gpt-4o-mini:pudong::v1"  # b now holds it in its cache
    assert a.model(key, alias) == "ft:gpt-4o-mini:pudong::v1"

    a.tunegate("alias", "set", alias, "--model", "ft:gpt-4o-mini:pudong::v2")
    assert a.model(key, alias) == "ft:gpt-4o-mini:pudong::v2"  # the replica that made the change: at once
    within(BOUND, lambda: b.model(key, alias) == "ft:gpt-4o-mini:pudong::v2")

    b.tunegate("alias", "rollback", alias, "1")
    assert b.model(key, alias) == "ft:gpt-4o-mini:pudong::v1"
    within(BOUND, lambda: a.model(key, alias) == "ft:gpt-4o-mini:pudong::v1")


def refused(replica: Replica, key: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            replica.model(key, "pudong-support")
        except openai.AuthenticationError:
            return True
        return False

    return check


def test_a_revoked_key_and_a_disabled_team_stop_on_the_other_replica_within_the_ttl(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    key = team_key(a)
    assert b.model(key, "pudong-support") == "ft:gpt-3.5-turbo-0613:pudong::8abc123"  # cached in b
    revoked = json.loads(a.tunegate("key", "list", "--json"))[-1]
    a.tunegate("key", "revoke", str(revoked["id"]))
    assert refused(a, key)()
    within(BOUND, refused(b, key))

    other = team_key(b)
    assert a.model(other, "pudong-support") == "ft:gpt-3.5-turbo-0613:pudong::8abc123"  # cached in a
    team = json.loads(b.tunegate("key", "list", "--json"))[-1]["team"]
    b.tunegate("team", "disable", team)
    assert refused(b, other)()
    within(BOUND, refused(a, other))

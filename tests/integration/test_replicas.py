"""Two gateway processes sharing one database: a change made through one is served by the other within
``cache.ttl_seconds`` (set to 0.5 s here), and by the one that made it on the very next request."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.utils.gateways import ADMIN_KEY, gateway_yaml
from tests.utils.processes import run_tunegate, serve_tunegate
from tests.utils.servers import free_port
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tests.utils.waiting import eventually

pytestmark = pytest.mark.slow  # two `tunegate serve` processes
TTL = 0.5
BOUND = 4 * TTL  # the documented bound is the TTL; the rest is room for a slow machine
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is gate D?"}]


@dataclass
class Replica:
    url: str

    def model(self, key: str, alias: str) -> str:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model=alias, messages=QUESTION)
        return raw.headers["x-tunegate-model"]

    def tunegate(self, *args: str) -> str:
        result = run_tunegate(args, env={"TUNEGATE_URL": self.url, "TUNEGATE_ADMIN_KEY": ADMIN_KEY}, timeout=60)
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
    env = {"TUNEGATE_ADMIN_KEY": ADMIN_KEY, "TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    with ExitStack() as started:
        served: list[Replica] = []
        for _ in range(2):  # one after the other: the second start-up applies the same file, changing nothing
            args = ["--config", str(config)]
            served.append(
                Replica(started.enter_context(serve_tunegate(args, port=free_port(), cwd=directory, env=env)).url)
            )
        yield served[0], served[1]


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
    eventually(lambda: b.model(key, alias) == "ft:gpt-4o-mini:pudong::v2", what="v2 served by b", timeout=BOUND)

    b.tunegate("alias", "rollback", alias, "1")
    assert b.model(key, alias) == "ft:gpt-4o-mini:pudong::v1"
    eventually(lambda: a.model(key, alias) == "ft:gpt-4o-mini:pudong::v1", what="v1 served by a", timeout=BOUND)


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
    eventually(refused(b, key), what="the revoked key refused by b", timeout=BOUND)

    other = team_key(b)
    assert a.model(other, "pudong-support") == "ft:gpt-3.5-turbo-0613:pudong::8abc123"  # cached in a
    team = json.loads(b.tunegate("key", "list", "--json"))[-1]["team"]
    b.tunegate("team", "disable", team)
    assert refused(b, other)()
    eventually(refused(a, other), what="the disabled team refused by a", timeout=BOUND)

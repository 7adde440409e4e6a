"""An upstream that echoes the Authorization it received (the fake upstream's ``echo_authorization``) never gets
the gateway's upstream keys to a client or into the database: every answer's status line, headers, body and SSE
events, and every column of every stored row, are scanned for the keys' bytes; its messages still reach the
client, without the key."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session, SQLModel, select

from tests.utils.finetune import FIXTURES, WRONG_KEY
from tests.utils.gateways import ADMIN_KEY, GATEWAY_TEAMS, GatewayHandle, serve_gateway
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tunegate.proxy.finetune.background import FinetunePoller
from tunegate.registry.models import FineTuneFile, UpstreamModel

KEYS = (UPSTREAM_KEY.encode(), WRONG_KEY.encode())
ECHO = " (Authorization: Bearer ***)"  # what is left of the echoed header once the key is taken out
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is gate D?"}]


def secrets_yaml(database_url: str, fake_url: str) -> str:
    return textwrap.dedent(
        f"""
        database: {{url: "{database_url}"}}
        server: {{admin_key: "$TUNEGATE_ADMIN_KEY", max_body_bytes: 65536, read_timeout: 5}}
        usage: {{flush_interval: 0.05}}
        finetune: {{upstream: fake, poll_interval: 3600}}
        upstreams:
          fake: {{base_url: "{fake_url}/v1", api_key: "$TUNEGATE_TEST_UPSTREAM_KEY"}}
          wrong-key: {{base_url: "{fake_url}/v1", api_key: "$TUNEGATE_TEST_WRONG_KEY"}}
        teams:
          - name: airport-cs
          - name: other-team
        aliases:
          desk: {{upstream: fake, model: gpt-4o-mini}}
          broken: {{upstream: fake, model: gpt-broken}}
          legacy: {{upstream: fake, model: gpt-3.5-turbo-instruct}}
          embed: {{upstream: fake, model: text-embedding-3-small}}
          wrong-key-desk: {{upstream: wrong-key, model: gpt-4o-mini}}
        """
    )


def _answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    return b"%d\n" % status + b"".join(name + b": " + value + b"\n" for name, value in headers) + body


class Recording(httpx2.BaseTransport):
    """The SDK's transport, keeping every answer's status, headers and body (a stream's, whole) as it came."""

    def __init__(self, seen: list[bytes]) -> None:
        self.inner = httpx2.HTTPTransport()
        self.seen = seen

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        body = response.read()
        self.seen.append(_answer(response.status_code, response.headers.raw, body))
        return httpx2.Response(response.status_code, headers=response.headers, content=body, request=request)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Env:
    gateway: GatewayHandle
    fake: FakeUpstreamHandle
    seen: list[bytes] = field(default_factory=list)

    def http(self) -> httpx.Client:
        """A raw httpx client whose answers are kept."""

        def keep(response: httpx.Response) -> None:
            self.seen.append(_answer(response.status_code, response.headers.raw, response.read()))

        return httpx.Client(timeout=30, event_hooks={"response": [keep]})

    def client(self) -> openai.OpenAI:
        """The openai SDK, its answers kept."""
        return openai.OpenAI(
            base_url=self.gateway.base_url,
            api_key=self.gateway.keys["airport-cs"],
            max_retries=0,
            http_client=httpx2.Client(transport=Recording(self.seen), timeout=30),
        )

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.gateway.keys['airport-cs']}"}
        with self.http() as http:
            return http.post(self.gateway.base_url + path, json=body, headers=headers)

    def calm(self) -> None:
        """The upstream's faults cleared, its hostile mode kept."""
        self.fake.reset()
        self.fake.fault(echo_authorization=True)

    def leaks(self) -> list[bytes]:
        return [answer for answer in self.seen if any(key in answer for key in KEYS)]


@pytest.fixture(scope="module")
def env(
    own_database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    directory: Path = tmp_path_factory.mktemp("secrets")
    secrets = {"TUNEGATE_TEST_UPSTREAM_KEY": UPSTREAM_KEY, "TUNEGATE_TEST_WRONG_KEY": WRONG_KEY}
    text = secrets_yaml(own_database_url, fake_upstream.url)
    with serve_gateway(directory / "tunegate.yaml", text, secrets=secrets, keys_for=GATEWAY_TEAMS) as gateway:
        yield Env(gateway, fake_upstream)


@pytest.fixture
def hostile(env: Env) -> Iterator[Env]:
    """The upstream echoes the Authorization it gets; afterwards nothing any client was sent holds a key."""
    env.fake.fault(echo_authorization=True)
    env.seen.clear()
    yield env
    assert env.seen, "the test sent nothing"
    leaks = env.leaks()
    assert not leaks, f"{len(leaks)} of {len(env.seen)} answers hold an upstream key: {leaks[0][:600]!r}"


def _message(exc: openai.APIStatusError) -> str:
    assert isinstance(exc.body, dict)
    message: str = exc.body["message"]
    return message


def test_the_fake_upstream_echoes_the_key_it_is_sent(env: Env) -> None:
    """The hostile mode is real: asked directly, its answers hold the key (the other tests can fail)."""
    env.fake.fault(echo_authorization=True)
    headers = {"authorization": f"Bearer {UPSTREAM_KEY}"}
    error = httpx.post(env.fake.base_url + "/chat/completions", json={"model": "x"}, headers=headers)
    models = httpx.get(env.fake.base_url + "/models", headers=headers)
    assert error.status_code == 400 and UPSTREAM_KEY in error.json()["error"]["message"]
    assert error.headers["x-upstream-authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert f"ft:gpt-4o-mini:Bearer {UPSTREAM_KEY}" in {m["id"] for m in models.json()["data"]}


def test_model_call_errors_keep_the_message_without_the_key(hostile: Env) -> None:
    client = hostile.client()
    answer = client.chat.completions.create(model="desk", messages=QUESTION)
    assert answer.choices[0].message.content == "Echo: Where is gate D?"

    hostile.fake.fault(model="gpt-4o-mini", status=400, message="'temperature' must be at most 2")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="desk", messages=QUESTION, temperature=5)
    assert _message(bad.value) == "'temperature' must be at most 2" + ECHO
    assert bad.value.body == {
        "message": "'temperature' must be at most 2" + ECHO,
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }

    hostile.fake.fault(model="gpt-4o-mini", status=429, message="Rate limit reached for requests.")
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="desk", messages=QUESTION)
    assert _message(limited.value) == "Rate limit reached for requests." + ECHO

    for status in (403, 422):
        hostile.fake.fault(model="gpt-4o-mini", status=status, message=f"refused with {status}")
        raw = hostile.post("/chat/completions", {"model": "desk", "messages": QUESTION})
        expected = 502 if status == 403 else 422  # a 403 is about the gateway's key, not the client's
        assert raw.status_code == expected, raw.text
    hostile.calm()

    # The upstream's 401 to a key it does not know: the gateway's own credentials, a 502.
    with pytest.raises(openai.InternalServerError) as refused:
        client.chat.completions.create(model="wrong-key-desk", messages=QUESTION)
    assert refused.value.status_code == 502
    assert _message(refused.value) == "Upstream 'wrong-key' did not accept the gateway's credentials."

    # A 404 and a 5xx become the gateway's 502 with the upstream's message, the key taken out.
    for status, said in ((404, "The model `gpt-broken` does not exist"), (500, "boom"), (503, "overloaded")):
        message = None if status == 404 else said
        hostile.fake.fault(model="gpt-broken", status=status, message=message)
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="broken", messages=QUESTION)
        assert failed.value.status_code == 502
        assert _message(failed.value).startswith(f"Upstream 'fake' answered {status}: {said}")
        assert _message(failed.value).endswith(ECHO)

    hostile.fake.fault(model="gpt-3.5-turbo-instruct", status=400, message="bad prompt")
    with pytest.raises(openai.BadRequestError) as legacy:
        client.completions.create(model="legacy", prompt="Where is gate D?")
    assert _message(legacy.value) == "bad prompt" + ECHO
    hostile.fake.fault(model="text-embedding-3-small", status=500, message="no vectors today")
    with pytest.raises(openai.InternalServerError) as embed:
        client.embeddings.create(model="embed", input="Where is gate D?")
    assert _message(embed.value) == "Upstream 'fake' answered 500: no vectors today" + ECHO


def test_streamed_errors_keep_the_message_without_the_key(hostile: Env) -> None:
    client = hostile.client()
    chunks = list(client.chat.completions.create(model="desk", messages=QUESTION, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: Where is gate D?"

    hostile.fake.fault(model="gpt-4o-mini", error_after_chunks=2)
    raw = hostile.post("/chat/completions", {"model": "desk", "messages": QUESTION, "stream": True})
    events = [line.removeprefix("data: ") for line in raw.text.splitlines() if line.startswith("data: ")]
    assert raw.status_code == 200 and len(events) == 3
    assert events[-1] == (
        '{"error":{"message":"The server had an error while streaming.' + ECHO + '",'
        '"type":"server_error","param":null,"code":null}}'
    )
    with pytest.raises(openai.APIError, match="The server had an error while streaming"):
        list(client.chat.completions.create(model="desk", messages=QUESTION, stream=True))

    hostile.fake.fault(model="gpt-4o-mini", error_after_chunks=None, status=400, message="no streams today")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="desk", messages=QUESTION, stream=True)
    assert _message(refused.value) == "no streams today" + ECHO
    hostile.fake.fault(model="gpt-3.5-turbo-instruct", error_after_chunks=1)
    legacy = hostile.post("/completions", {"model": "legacy", "prompt": "Where is gate D?", "stream": True})
    assert legacy.text.count("The server had an error while streaming." + ECHO) == 1


def test_files_and_jobs_keep_the_message_without_the_key(hostile: Env) -> None:
    client = hostile.client()
    data = (FIXTURES / "valid_12.jsonl").read_bytes()
    uploaded = client.files.create(file=("valid_12.jsonl", data), purpose="fine-tune")
    assert client.files.content(uploaded.id).content == data

    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=uploaded.id)
    poller = FinetunePoller(hostile.gateway.gateway)
    try:
        for _ in range(10):  # each pass moves the fake's job one step: validating, queued, running, succeeded
            poller.poll_once()
            if client.fine_tuning.jobs.retrieve(job.id).status == "succeeded":
                break
    finally:
        poller.close()
    assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data

    # The file gone at the upstream behind the gateway's back: the upstream's 404s and 400s, passed on.
    with Session(hostile.gateway.engine) as session:
        file = session.get(FineTuneFile, uploaded.id)
        assert file is not None
        upstream_id = file.upstream_file_id
    headers = {"authorization": f"Bearer {UPSTREAM_KEY}"}
    httpx.delete(f"{hostile.fake.base_url}/files/{upstream_id}", headers=headers).raise_for_status()
    with pytest.raises(openai.NotFoundError) as gone:
        client.files.content(uploaded.id)
    assert (
        _message(gone.value) == f"Upstream 'fake' refused reading the file: No such File object: {upstream_id}" + ECHO
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=uploaded.id)
    assert _message(refused.value) == (
        f"Upstream 'fake' refused the fine-tuning job: invalid training_file: {upstream_id}" + ECHO
    )
    assert refused.value.body["param"] == "training_file"  # type: ignore[index]


def test_model_lists_are_stored_without_the_key(hostile: Env) -> None:
    client = hostile.client()
    assert {m.id for m in client.models.list()} == {"desk", "broken", "legacy", "embed", "wrong-key-desk"}
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    with hostile.http() as http:
        refreshed = http.post(hostile.gateway.url + "/admin/retirements/refresh", headers=headers)
    assert refreshed.status_code == 200, refreshed.text
    with Session(hostile.gateway.engine) as session:
        stored = {(row.upstream, row.model) for row in session.exec(select(UpstreamModel))}
    assert ("fake", "ft:gpt-4o-mini:Bearer ***") in stored
    assert ("wrong-key", "ft:gpt-4o-mini:Bearer ***") not in stored  # its GET /v1/models was a 401


def test_no_stored_row_holds_the_key(env: Env) -> None:
    """After the tests above: every column of every table (usage records, upstream models, fine-tuning files,
    jobs and events, the audit log), as text."""
    rows = 0
    with env.gateway.engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            for row in connection.execute(table.select()):
                rows += 1
                text = " ".join(str(value) for value in row).encode()
                assert not any(key in text for key in KEYS), f"{table.name} holds an upstream key: {text[:400]!r}"
    assert rows > 20

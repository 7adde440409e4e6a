"""Bad input through the real server: each answers 400 ``invalid_request_error`` naming the ``param``, in OpenAI's
shape (never a 500 or a 502), and a model call's usage records are exactly the ones it should have."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import Session, select

from tests.utils.gateways import ADMIN_KEY, GatewayHandle
from tests.utils.upstreams import FakeUpstreamHandle
from tests.utils.waiting import eventually
from tunegate.registry.models import Team, UsageRecord

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Where is gate D?"}]


def nested(depth: int) -> Any:
    """``depth`` arrays inside one another."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_text(depth: int) -> str:
    return "[" * depth + "]" * depth


def assert_refused(response: httpx.Response, param: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    return error


class Team_:
    """A team of its own on the shared gateway: its usage records are this test's only."""

    def __init__(self, gateway: GatewayHandle) -> None:
        self.gateway = gateway
        self.name, self.key = gateway.new_team_key("bad-input")
        with Session(gateway.engine) as session:
            team = session.exec(select(Team).where(Team.name == self.name)).one()
            assert team.id is not None
            self.team_id = team.id

    def post(self, path: str, body: Any = None, *, content: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.key}", "content-type": "application/json"}
        if content is None:
            return httpx.post(self.gateway.base_url + path, json=body, headers=headers, timeout=30)
        return httpx.post(self.gateway.base_url + path, content=content, headers=headers, timeout=30)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.base_url, api_key=self.key, max_retries=0)

    def records(self) -> list[UsageRecord]:
        return self.gateway.usage_of_team(self.team_id)


@pytest.fixture
def team(gateway: GatewayHandle) -> Team_:
    return Team_(gateway)


def test_stream_fields_of_the_wrong_type(team: Team_) -> None:
    chat = {"model": "prompted-replace", "messages": QUESTION}
    for options in ("yes", 1, [True], True):
        assert_refused(
            team.post("/chat/completions", {**chat, "stream": True, "stream_options": options}), "stream_options"
        )
    for stream in ("yes", 1, "true", [True]):
        assert_refused(team.post("/chat/completions", {**chat, "stream": stream}), "stream")
    assert_refused(
        team.post("/completions", {"model": "legacy", "prompt": "x", "stream_options": "no"}), "stream_options"
    )
    error = assert_refused(team.post("/embeddings", {"model": "embed", "input": "x", "stream": True}), "stream")
    assert error["message"] == "Embeddings cannot be streamed: leave out 'stream' or set it to false."
    with pytest.raises(openai.BadRequestError) as sdk:
        team.client().chat.completions.create(
            model="prompted-replace", messages=QUESTION, stream=True, extra_body={"stream_options": "yes"}
        )
    assert sdk.value.status_code == 400 and sdk.value.param == "stream_options"
    # Still served as before: null stream options, stream false, and both right.
    assert team.post("/chat/completions", {**chat, "stream": False, "stream_options": None}).status_code == 200
    streamed = team.post("/chat/completions", {**chat, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    records = eventually(lambda: team.records() if len(team.records()) == 2 else None, what="two usage records")
    assert [r.status_code for r in records] == [200, 200]


@pytest.mark.parametrize("depth", [200, 253, 254, 255, 300, 600, 1_000, 1_023])
def test_deep_bodies_are_refused_naming_the_field(team: Team_, depth: int) -> None:
    body = '{"model": "prompted-replace", "messages": [{"role": "user", "content": "hi"}], "metadata": %s}'
    response = team.post("/chat/completions", content=body % nested_text(depth))
    if depth <= 253:  # what the upstream can be sent: forwarded as it came
        assert response.status_code == 200, response.text
    else:
        error = assert_refused(response, "metadata")
        assert error["message"] == "Invalid value for 'metadata': it is nested too deeply (at most 253 levels)."
    deeper = team.post("/chat/completions", content=body % nested_text(1_030))  # beyond what JSON parsing takes
    assert deeper.status_code == 400 and deeper.json()["error"]["type"] == "invalid_request_error"
    # One request served after them: its record is the last, and the refused ones left none.
    last = team.post("/chat/completions", {"model": "prompted-replace", "messages": QUESTION})
    served = 2 if depth <= 253 else 1
    records = eventually(lambda: team.records() if len(team.records()) == served else None, what="the records")
    assert records[-1].request_id == last.headers["x-request-id"]
    assert [r.status_code for r in records] == [200] * served


def test_streamed_chat_with_a_non_object_message_keeps_its_record(
    team: Team_, fake_upstream: FakeUpstreamHandle
) -> None:
    fake_upstream.fault(model="gpt-4o-mini", drop_after_chunks=2)  # the stream ends without the upstream's usage
    messages = ["not a message", 7, None, *QUESTION]
    body = {"model": "prompted-replace", "messages": messages, "stream": True}
    response = team.post("/chat/completions", body)
    assert response.status_code == 200
    assert '"code":"upstream_unreachable"' in response.text  # the drop, as an error event
    (record,) = eventually(lambda: team.records() or None, what="the stream's usage record")
    assert (record.status_code, record.partial) == (502, True)
    # The estimate counts the messages that are objects: the injected system prompt and the question.
    assert record.prompt_tokens > 0


def test_training_file_lines_nested_deeply(team: Team_) -> None:
    line = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": %s}]}'
    for depth in (70, 989, 990, 1_200):
        data = (line % nested_text(depth) + "\n").encode()
        with pytest.raises(openai.BadRequestError) as refused:
            team.client().files.create(file=("deep.jsonl", data), purpose="fine-tune")
        assert refused.value.param == "file"
        assert refused.value.code == "invalid_file_format"
        assert "line 1: nested more than 64 levels deep" in str(refused.value.body)


def test_admin_bodies_nested_deeply(gateway: GatewayHandle) -> None:
    for depth in (1_000, 1_023, 5_000):
        body = '{"team": "airport-cs", "name": ' + nested_text(depth) + "}"
        response = httpx.post(
            gateway.url + "/admin/keys",
            content=body,
            headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_integers_beyond_64_bits_in_admin_paths_queries_and_bodies(gateway: GatewayHandle) -> None:
    huge = 2**70
    for method, path in (
        ("GET", f"/admin/keys/{huge}"),
        ("PATCH", f"/admin/keys/{huge}"),
        ("POST", f"/admin/keys/{huge}/revoke"),
    ):
        body = {"name": "x"} if method == "PATCH" else None
        assert_refused(gateway.admin(method, path, json=body), "key_id")
    assert_refused(gateway.admin("PUT", f"/admin/limits/keys/{huge}", json={"rpm": 5}), "key_id")
    assert_refused(gateway.admin("GET", "/admin/audit", params={"before": huge}), "before")
    assert_refused(gateway.admin("GET", "/admin/retirements", params={"window_days": huge}), "window_days")
    assert_refused(gateway.admin("POST", "/admin/retirements/refresh", params={"window_days": huge}), "window_days")
    team, _ = gateway.new_team_key("huge")
    for field in ("rpm", "tpm"):
        assert_refused(gateway.admin("PUT", f"/admin/limits/teams/{team}", json={field: huge}), field)
        assert_refused(gateway.admin("PUT", f"/admin/limits/teams/{team}", json={field: 2**31}), field)
    assert gateway.admin("PUT", f"/admin/limits/teams/{team}", json={"rpm": 2**31 - 1}).status_code == 200
    assert_refused(
        gateway.admin("POST", "/admin/alias-versions/pudong-support", json={"rollback_to": huge}), "rollback_to"
    )


def test_a_budget_beyond_the_column(gateway: GatewayHandle) -> None:
    team, _ = gateway.new_team_key("budget")
    for amount in ("1e12", "1000000000000", "1e30"):
        error = assert_refused(
            gateway.admin("PUT", f"/admin/budgets/{team}", json={"monthly_usd": amount}), "monthly_usd"
        )
        assert error["message"] == "'monthly_usd' must be less than 1,000,000,000,000 USD"
    fits = gateway.admin("PUT", f"/admin/budgets/{team}", json={"monthly_usd": "999999999999.99999999"})
    assert fits.status_code == 200, fits.text

"""Stored chat completions (``store: true``) through the gateway, driven by the openai SDK to the fake upstream on
loopback: kept at the upstream, shown under the alias, listed with OpenAI's filters and paging, and seen, changed
and deleted by the team that created them only."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from sqlmodel import Session

from tests.utils.gateways import GatewayHandle
from tests.utils.upstreams import UPSTREAM_KEY, FakeUpstreamHandle
from tunegate.registry.models import StoredObject

QUESTION = "Where is gate D?"
ANSWER = "Echo: Where is gate D?"
FT_PUDONG = "ft:gpt-3.5-turbo-0613:pudong::8abc123"


def client(gateway: GatewayHandle, team: str = "airport-cs") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.keys[team], max_retries=0)


def unknown(completion_id: str) -> dict[str, Any]:
    return {
        "message": f"Chat completion with id '{completion_id}' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def run_tag() -> dict[str, str]:
    """Metadata of this test's own (the gateway and its database are shared by the session's tests)."""
    return {"run": f"run-{time.time_ns()}"}


def test_a_stored_chat_completion_is_kept_at_the_upstream_and_shown_under_its_alias(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    mine, run = client(gateway), run_tag()
    created = mine.chat.completions.create(
        model="pudong-support",
        messages=[{"role": "user", "content": QUESTION}],
        store=True,
        metadata={**run, "topic": "gates"},
    )
    assert fake_upstream.last_json()["store"] is True
    at_upstream = httpx.get(
        f"{fake_upstream.base_url}/chat/completions/{created.id}", headers={"authorization": f"Bearer {UPSTREAM_KEY}"}
    ).json()
    assert at_upstream["model"] == FT_PUDONG  # the upstream keeps the target; the team sees the alias

    kept = mine.chat.completions.retrieve(created.id)
    assert (kept.id, kept.model, kept.choices[0].message.content, kept.metadata) == (
        created.id,
        "pudong-support",
        ANSWER,
        {**run, "topic": "gates"},
    )
    messages = mine.chat.completions.messages.list(created.id)
    assert [(m.id, m.role, m.content) for m in messages.data] == [(f"{created.id}-0", "user", QUESTION)]
    assert messages.has_more is False
    with Session(gateway.engine) as session:
        owned = session.get(StoredObject, created.id)
        assert owned is not None
        assert (owned.kind, owned.alias, owned.model, owned.upstream, owned.meta) == (
            "chat.completion",
            "pudong-support",
            FT_PUDONG,
            "fake",
            {**run, "topic": "gates"},
        )

    updated = mine.chat.completions.update(created.id, metadata={**run, "topic": "lounges"})
    assert (updated.model, updated.metadata) == ("pudong-support", {**run, "topic": "lounges"})
    assert [c.id for c in mine.chat.completions.list(metadata={**run, "topic": "lounges"})] == [created.id]
    assert mine.chat.completions.list(metadata={**run, "topic": "gates"}).data == []

    deleted = mine.chat.completions.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError) as gone:
        mine.chat.completions.retrieve(created.id)
    assert gone.value.body == unknown(created.id)
    assert mine.chat.completions.list(metadata=run).data == []


def test_a_streamed_chat_completion_is_stored_and_an_unstored_one_is_not(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    mine, run = client(gateway), run_tag()
    stream = mine.chat.completions.create(
        model="prompted-prepend",
        messages=[{"role": "user", "content": QUESTION}],
        store=True,
        metadata=run,
        stream=True,
    )
    chunks = list(stream)
    streamed_id = {chunk.id for chunk in chunks}.pop()
    assert {chunk.model for chunk in chunks} == {"prompted-prepend"}
    kept = mine.chat.completions.retrieve(streamed_id)
    assert (kept.model, kept.choices[0].message.content) == ("prompted-prepend", ANSWER)
    said = mine.chat.completions.messages.list(streamed_id)
    assert [(m.role, m.content) for m in said.data] == [("system", "Answer briefly."), ("user", QUESTION)]

    unstored = mine.chat.completions.create(
        model="pudong-support", messages=[{"role": "user", "content": QUESTION}], metadata=run
    )
    with Session(gateway.engine) as session:
        assert session.get(StoredObject, unstored.id) is None
    with pytest.raises(openai.NotFoundError) as never:
        mine.chat.completions.retrieve(unstored.id)
    assert never.value.body == unknown(unstored.id)
    assert [c.id for c in mine.chat.completions.list(metadata=run)] == [streamed_id]


def test_the_list_shows_the_teams_own_with_openais_filters_and_paging(
    gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle
) -> None:
    mine, theirs, run = client(gateway), client(gateway, "other-team"), run_tag()

    def create(who: openai.OpenAI, model: str, n: str) -> str:
        messages: Any = [{"role": "user", "content": QUESTION}]
        return who.chat.completions.create(model=model, messages=messages, store=True, metadata={**run, "n": n}).id

    ids = [create(mine, model, n) for n, model in (("1", "pudong-support"), ("2", "legacy"), ("3", "pudong-support"))]
    ids.append(create(mine, "pudong-support", "4"))
    their_id = create(theirs, "pudong-support", "1")

    everything = mine.chat.completions.list(metadata=run)
    assert ([c.id for c in everything.data], everything.has_more) == (ids, False)
    assert {c.model for c in everything.data} == {"pudong-support", "legacy"}
    assert [c.id for c in theirs.chat.completions.list(metadata=run)] == [their_id]
    assert [c.id for c in mine.chat.completions.list(metadata={**run, "n": "1"})] == [ids[0]]
    assert [c.id for c in mine.chat.completions.list(metadata=run, model="legacy")] == [ids[1]]
    assert (
        mine.chat.completions.list(metadata=run, model="gpt-3.5-turbo-instruct").data == []
    )  # the alias, not the target

    first = mine.chat.completions.list(metadata=run, limit=2)
    assert ([c.id for c in first.data], first.has_more) == (ids[:2], True)
    rest = mine.chat.completions.list(metadata=run, limit=2, after=ids[1])
    assert ([c.id for c in rest.data], rest.has_more) == (ids[2:], False)
    newest = mine.chat.completions.list(metadata=run, order="desc", limit=3)
    assert ([c.id for c in newest.data], newest.has_more) == (ids[::-1][:3], True)
    assert [c.id for c in mine.chat.completions.list(metadata=run, limit=1)] == ids  # the SDK pages through
    assert mine.chat.completions.list(metadata=run, after=their_id).data == []  # another team's id is no cursor

    headers = {"authorization": f"Bearer {gateway.keys['airport-cs']}"}
    page = httpx.get(f"{gateway.base_url}/chat/completions", params={"metadata[run]": run["run"]}, headers=headers)
    assert (page.json()["first_id"], page.json()["last_id"], page.json()["object"]) == (ids[0], ids[-1], "list")
    for params, param in (({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"order": "up"}, "order")):
        refused = httpx.get(f"{gateway.base_url}/chat/completions", params=params, headers=headers)
        assert (refused.status_code, refused.json()["error"]["param"]) == (400, param)
        assert refused.headers["x-request-id"]
    bad = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "pudong-support", "messages": [{"role": "user", "content": "x"}], "store": True, "metadata": 7},
        headers=headers,
    )
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "metadata")


def test_a_stored_chat_completion_is_its_teams_only(gateway: GatewayHandle, fake_upstream: FakeUpstreamHandle) -> None:
    mine, theirs, run = client(gateway), client(gateway, "other-team"), run_tag()
    created = mine.chat.completions.create(
        model="pudong-support", messages=[{"role": "user", "content": QUESTION}], store=True, metadata=run
    )
    response = mine.responses.create(model="pudong-support", input=QUESTION)

    asked = len(fake_upstream.requests(200))
    chats = theirs.chat.completions
    for completion_id in (created.id, "chatcmpl-0123456789abcdef", response.id):  # theirs, unknown, a response's
        for call in (
            lambda c=completion_id: chats.retrieve(c),
            lambda c=completion_id: chats.update(c, metadata={"taken": "yes"}),
            lambda c=completion_id: chats.delete(c),
            lambda c=completion_id: chats.messages.list(c),
        ):
            with pytest.raises(openai.NotFoundError) as refused:
                call()
            assert refused.value.body == unknown(completion_id)
            assert refused.value.request_id
    assert theirs.chat.completions.list(metadata=run).data == []
    assert len(fake_upstream.requests(200)) == asked  # none of them reached the upstream

    with pytest.raises(openai.NotFoundError):
        mine.chat.completions.retrieve(response.id)  # a response is not a chat completion, even the team's own
    kept = mine.chat.completions.retrieve(created.id)
    assert (kept.metadata, kept.model) == (run, "pudong-support")  # untouched by the other team's update

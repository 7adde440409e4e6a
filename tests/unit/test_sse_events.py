"""The SSE splitter the stream relay reads the upstream with: events in the groups the network delivers them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tunegate.proxy.calls.relay import Events as _Events


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def groups(*parts: bytes) -> list[list[bytes]]:
    events = _Events(pieces(*parts))
    found = []
    while (group := await events.next()) is not None:
        found.append(group)
    return found


async def test_events_that_arrive_together_come_together_and_a_split_line_waits_for_its_end() -> None:
    assert await groups(
        b'data: {"a":1}\n\ndata: {"b":2}\n\nda',  # two whole events, and the start of a third
        b'ta: {"c"',
        b":3}\n\n",
        b"data: [DONE]\n\n",
    ) == [[b'{"a":1}', b'{"b":2}'], [b'{"c":3}'], [b"[DONE]"]]


async def test_crlf_comments_other_fields_and_a_last_line_without_newline() -> None:
    assert await groups(
        b': keep-alive\r\n\r\nevent: chunk\r\ndata: {"a":1}\r\n\r\n',
        b"retry: 10\n\n",  # nothing to relay in these bytes: wait for more
        b"data: [DONE]",
    ) == [[b'{"a":1}'], [b"[DONE]"]]


async def test_an_empty_body_has_no_events() -> None:
    assert await groups() == []
    assert await groups(b": only a comment\n") == []

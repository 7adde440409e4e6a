"""The SSE splitter keeps each event's ``event:`` line (the Responses API's), across the pieces the network splits
an event into, and forgets it at the blank line that ends the event."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tunegate.proxy.calls.relay import Events, Named


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def named(*parts: bytes) -> list[list[tuple[bytes | None, bytes]]]:
    events = Events(pieces(*parts), named=True)
    found = []
    while (group := await events.next()) is not None:
        found.append([(e.name if isinstance(e, Named) else None, bytes(e)) for e in group])
    return found


async def test_event_lines_name_their_data_even_split_across_reads() -> None:
    assert await named(
        b'event: response.created\ndata: {"a":1}\n\nevent: response.output_',
        b'text.delta\ndata: {"b":2}\n\n',
        b'data: {"c":3}\n\n',  # no event line: no name
        b'event: response.completed\r\ndata: {"d":4}',  # CRLF, and the body ends without a newline
    ) == [
        [(b"response.created", b'{"a":1}')],
        [(b"response.output_text.delta", b'{"b":2}')],
        [(None, b'{"c":3}')],
        [(b"response.completed", b'{"d":4}')],
    ]

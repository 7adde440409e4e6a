"""What the admin and finance routes share: the session helpers (a write runs as the request's actor, then this
process forgets its cached lookups), the parameters every resource takes, and the time format of answers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from litestar import Request
from litestar.params import Parameter
from sqlmodel import Session

from tunegate.proxy.state import gateway_of
from tunegate.proxy.state import read as read_session
from tunegate.proxy.state import write as write_session

T = TypeVar("T")
AnyRequest = Request[Any, Any, Any]
MAX_ID = 2**31 - 1  # ids and versions are INTEGER columns: a bigger one is refused, not sent to the database
KeyId = Parameter(ge=1, le=MAX_ID, description="the key's id")
TeamQuery = Parameter(query="team", required=False, description="the owning team of a team alias; omit: global")


async def read(request: AnyRequest, work: Callable[[Session], T]) -> T:
    return await read_session(gateway_of(request), work)


async def write(request: AnyRequest, work: Callable[[Session, str], T]) -> T:
    """Run ``work`` in one transaction as the request's admin, then forget this process's cached lookups."""
    actor: str = request.state.actor
    return await write_session(gateway_of(request), lambda session: work(session, actor))


def stamp(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None

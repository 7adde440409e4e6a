"""The objects a model call leaves at the upstream (stored responses, ``store: true`` chat completions) and the
team that owns them: noted before the client has the id, checked when a call names one (``previous_response_id``),
and read, changed, deleted, cancelled or listed at the upstream that stored them for that team only; another
team's id is answered exactly as an unknown one."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from tunegate.proxy.calls.exchange import Attempt, Own, new_request_id
from tunegate.proxy.calls.parsing import metadata_of
from tunegate.proxy.errors import GatewayError, InvalidRequest, NotFound
from tunegate.proxy.state import Gateway, read, transaction
from tunegate.proxy.upstream.calls import answered_badly, model_call_headers, refused, unreachable
from tunegate.registry.models import StoredObject
from tunegate.registry.stored import (
    CHAT_COMPLETION,
    RESPONSE,
    forget_object,
    keep_object,
    set_metadata,
    team_object,
    team_objects,
)
from tunegate.registry.teams import Caller

# Where each kind is kept at the upstream, and OpenAI's words for an id it does not know.
_PATHS = {RESPONSE: "/responses", CHAT_COMPLETION: "/chat/completions"}
_UNKNOWN = {RESPONSE: "Response with id '{}' not found.", CHAT_COMPLETION: "Chat completion with id '{}' not found."}
_METADATA = re.compile(r"metadata\[(.+)\]")
MAX_LIMIT = 100  # a list's largest page, as OpenAI's


def owner(state: Gateway, caller: Caller, alias: str, kind: str, metadata: dict[str, str] | None = None) -> Own:
    """What forwarding calls with the id of an object the upstream stored: the caller's team owns it."""

    async def own(attempt: Attempt, object_id: str) -> None:
        await transaction(
            state,
            lambda session: keep_object(
                session,
                kind=kind,
                object_id=object_id,
                team_id=caller.team_id,
                upstream=attempt.upstream.name,
                alias=alias,
                model=attempt.target.model,
                metadata=metadata,
            ),
        )

    return own


async def check_previous(state: Gateway, caller: Caller, body: dict[str, Any]) -> None:
    """A ``previous_response_id`` must name one of the caller's team's responses: another team's is refused as the
    upstream refuses an unknown one (404 previous_response_not_found)."""
    previous = body.get("previous_response_id")
    if previous is None:
        return
    found = None
    if isinstance(previous, str):
        found = await _owned(state, caller, RESPONSE, previous)
    if found is None:
        raise NotFound(
            f"Previous response with id '{previous}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )


def unknown(kind: str, object_id: str) -> GatewayError:
    """OpenAI's words for an id it does not know: the same for another team's id."""
    return NotFound(_UNKNOWN[kind].format(object_id), code=None)


async def _owned(state: Gateway, caller: Caller, kind: str, object_id: str) -> StoredObject | None:
    return await read(
        state, lambda session: team_object(session, kind=kind, object_id=object_id, team_id=caller.team_id)
    )


async def at_upstream(
    state: Gateway,
    caller: Caller,
    kind: str,
    object_id: str,
    method: str,
    suffix: str,
    query: Mapping[str, Any] | None,
    body: dict[str, Any] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """``method`` on the caller's team's stored ``kind`` object (``suffix``: "", "/cancel", "/input_items",
    "/messages"), made at the upstream that stored it: the answer's status, JSON body (``model`` the alias it was
    created on) and headers. A chat completion's new metadata (``POST`` with ``body``) is kept for the list."""
    request_id = new_request_id()
    try:
        return await _on_object(state, caller, kind, object_id, method, suffix, query, body, request_id)
    except GatewayError as error:  # a refusal carries the request's id too
        error.headers.setdefault("x-request-id", request_id)
        raise


async def _on_object(
    state: Gateway,
    caller: Caller,
    kind: str,
    object_id: str,
    method: str,
    suffix: str,
    query: Mapping[str, Any] | None,
    body: dict[str, Any] | None,
    request_id: str,
) -> tuple[int, bytes, dict[str, str]]:
    stored = await _owned(state, caller, kind, object_id)
    if stored is None:
        raise unknown(kind, object_id)
    if body is not None:
        body = {"metadata": metadata_of(body)}
    status, data, headers = await _call(state, stored, method, suffix, query, body, request_id)
    if method == "DELETE":
        await transaction(
            state, lambda session: forget_object(session, kind=kind, object_id=object_id, team_id=caller.team_id)
        )
    elif isinstance(data, dict) and data.get("object") == kind:
        data["model"] = stored.alias
        if body is not None:
            kept = data.get("metadata")
            metadata: dict[str, str] = kept if isinstance(kept, dict) else body["metadata"] or {}
            await transaction(
                state,
                lambda session: set_metadata(
                    session, kind=kind, object_id=object_id, team_id=caller.team_id, metadata=metadata
                ),
            )
    return status, orjson.dumps(data), headers


async def list_chat_completions(
    state: Gateway, caller: Caller, query: Mapping[str, str]
) -> tuple[int, bytes, dict[str, str]]:
    """``GET /v1/chat/completions``: the team's stored chat completions from the gateway's own index (``model``
    the alias, ``metadata[key]=value`` filters, ``after``, ``limit``, ``order``), each read at its upstream."""
    request_id = new_request_id()
    try:
        return await _list_chats(state, caller, query, request_id)
    except GatewayError as error:
        error.headers.setdefault("x-request-id", request_id)
        raise


async def _list_chats(
    state: Gateway, caller: Caller, query: Mapping[str, str], request_id: str
) -> tuple[int, bytes, dict[str, str]]:
    order = query.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"Invalid value for 'order': {order!r} is not one of 'asc' or 'desc'.", param="order")
    raw_limit = query.get("limit") or "20"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidRequest(
            f"Invalid value for 'limit': expected an integer from 1 to {MAX_LIMIT}, got {raw_limit!r}.", param="limit"
        )
    wanted = {m.group(1): value for key, value in query.items() if (m := _METADATA.fullmatch(key))}
    model, after = query.get("model"), query.get("after")
    rows = await read(state, lambda session: team_objects(session, kind=CHAT_COMPLETION, team_id=caller.team_id))
    rows = [
        row
        for row in rows
        if (model is None or row.alias == model) and all((row.meta or {}).get(k) == v for k, v in wanted.items())
    ]
    if order == "desc":
        rows.reverse()
    if after:
        start = next((i + 1 for i, row in enumerate(rows) if row.id == after), len(rows))
        rows = rows[start:]
    page, has_more = rows[: int(raw_limit)], len(rows) > int(raw_limit)
    answers = await asyncio.gather(
        *(_call(state, row, "GET", "", None, None, request_id) for row in page), return_exceptions=True
    )
    data = []
    for row, answer in zip(page, answers, strict=True):
        if isinstance(answer, NotFound):
            continue  # gone at its upstream
        if isinstance(answer, BaseException):
            raise answer
        obj = answer[1]
        if isinstance(obj, dict):
            obj["model"] = row.alias
            data.append(obj)
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    listing = {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more}
    return 200, orjson.dumps(listing), {"x-request-id": request_id}


async def _call(
    state: Gateway,
    stored: StoredObject,
    method: str,
    suffix: str,
    query: Mapping[str, Any] | None,
    body: dict[str, Any] | None,
    request_id: str,
) -> tuple[int, Any, dict[str, str]]:
    """One call on ``stored`` at its upstream: the status, the decoded JSON and the headers to answer with."""
    upstream = await state.upstream(stored.upstream)
    try:
        answer = await state.http.request(
            method,
            f"{upstream.base_url}{_PATHS[stored.kind]}/{stored.id}{suffix}",
            params=query,
            content=None if body is None else orjson.dumps(body),
            headers=model_call_headers(upstream, request_id),
        )
    except httpx.TransportError as exc:
        raise unreachable(upstream, exc) from None
    headers = {"x-request-id": request_id}
    if answer.status_code == 404:
        raise unknown(stored.kind, stored.id)  # gone at the upstream too
    if answer.status_code >= 400:  # cancelling one not in the background: the upstream's words, without any key
        error = refused(upstream, answer.status_code, answer.content)
        error.headers = headers
        raise error
    try:
        data = orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        raise answered_badly(upstream, 502, b"") from None
    return answer.status_code, data, headers

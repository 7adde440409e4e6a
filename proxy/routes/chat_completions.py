"""Stored chat completions (``store: true``): listed, read, their metadata changed, deleted and their messages
listed at the upstream that stored them, by the team that created them only: another team's id is answered
exactly as an unknown one (404), and a list shows the team's own. The handlers translate HTTP; the work is
tunegate.proxy.calls.stored's. (``POST /v1/chat/completions`` itself is the model call: routes/openai.py.)"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post

from tunegate.proxy.auth import team_caller
from tunegate.proxy.calls.parsing import read_json
from tunegate.proxy.calls.stored import at_upstream, list_chat_completions
from tunegate.proxy.errors import json_response
from tunegate.proxy.state import gateway_of
from tunegate.registry.stored import CHAT_COMPLETION
from tunegate.registry.teams import Caller

AnyRequest = Request[Any, Any, Any]


class ChatCompletionsController(Controller):
    path = "/v1/chat/completions"
    tags = ["openai"]  # noqa: RUF012

    @get("/{completion_id:str}")
    async def retrieve_chat_completion(self, request: AnyRequest, completion_id: str) -> Response[bytes]:
        return await _at_upstream(request, completion_id, "GET", "")

    @post("/{completion_id:str}", status_code=200)
    async def update_chat_completion(self, request: AnyRequest, completion_id: str) -> Response[bytes]:
        return await _at_upstream(request, completion_id, "POST", "", await read_json(request))

    @delete("/{completion_id:str}", status_code=200)
    async def delete_chat_completion(self, request: AnyRequest, completion_id: str) -> Response[bytes]:
        return await _at_upstream(request, completion_id, "DELETE", "")

    @get("/{completion_id:str}/messages")
    async def list_chat_completion_messages(self, request: AnyRequest, completion_id: str) -> Response[bytes]:
        return await _at_upstream(request, completion_id, "GET", "/messages")


# A handler of its own, not the controller's: litestar merges a second controller onto the path of POST
# /v1/chat/completions (routes/openai.py) with two OPTIONS handlers and refuses to start; a plain handler merges.
@get("/v1/chat/completions", tags=["openai"])
async def list_stored_chat_completions(request: AnyRequest) -> Response[bytes]:
    query = {key: value for key, value in request.query_params.items()}
    status, body, headers = await list_chat_completions(gateway_of(request), await _caller(request), query)
    return json_response(status, body, headers)


async def _caller(request: AnyRequest) -> Caller:
    return await team_caller(
        gateway_of(request).keys, request.headers.get("authorization"), cannot="use stored chat completions"
    )


async def _at_upstream(
    request: AnyRequest, completion_id: str, method: str, suffix: str, body: dict[str, Any] | None = None
) -> Response[bytes]:
    caller = await _caller(request)
    query = request.url.query_params if request.url.query else None
    status, answer, headers = await at_upstream(
        gateway_of(request), caller, CHAT_COMPLETION, completion_id, method, suffix, query, body
    )
    return json_response(status, answer, headers)

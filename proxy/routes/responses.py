"""OpenAI's Responses API on aliases: ``POST /v1/responses`` is a model call (run by tunegate.proxy.calls.endpoint),
and a stored response is read, deleted, cancelled and its input items listed at the upstream that stored it, by
the team that created it only: another team's id is answered exactly as an unknown one (404). The handlers
translate HTTP; the work is tunegate.proxy.calls.stored's (and counting's, for ``POST …/input_tokens``)."""

from __future__ import annotations

from typing import Any, cast

from litestar import Controller, Request, Response, delete, get, post
from litestar.types import ASGIApp

from tunegate.proxy.auth import team_caller
from tunegate.proxy.calls.counting import count_input_tokens
from tunegate.proxy.calls.endpoint import model_call
from tunegate.proxy.calls.stored import at_upstream
from tunegate.proxy.errors import json_response
from tunegate.proxy.state import gateway_of
from tunegate.registry.stored import RESPONSE

AnyRequest = Request[Any, Any, Any]


class ResponsesController(Controller):
    path = "/v1/responses"
    tags = ["openai"]  # noqa: RUF012

    # Served by tunegate.proxy.app.ModelCalls ahead of litestar's router; declared here for the OpenAPI schema.
    @post("", status_code=200)
    async def create_response(self, request: AnyRequest) -> ASGIApp:
        return cast("ASGIApp", await model_call(gateway_of(request), request, "/responses"))

    @post("/input_tokens", status_code=200)
    async def input_tokens(self, request: AnyRequest) -> ASGIApp:
        return cast("ASGIApp", await count_input_tokens(gateway_of(request), request))

    @get("/{response_id:str}")
    async def retrieve_response(self, request: AnyRequest, response_id: str) -> Response[bytes]:
        return await _at_upstream(request, response_id, "GET", "")

    @delete("/{response_id:str}", status_code=200)
    async def delete_response(self, request: AnyRequest, response_id: str) -> Response[bytes]:
        return await _at_upstream(request, response_id, "DELETE", "")

    @post("/{response_id:str}/cancel", status_code=200)
    async def cancel_response(self, request: AnyRequest, response_id: str) -> Response[bytes]:
        return await _at_upstream(request, response_id, "POST", "/cancel")

    @get("/{response_id:str}/input_items")
    async def list_input_items(self, request: AnyRequest, response_id: str) -> Response[bytes]:
        return await _at_upstream(request, response_id, "GET", "/input_items")


async def _at_upstream(request: AnyRequest, response_id: str, method: str, suffix: str) -> Response[bytes]:
    gateway = gateway_of(request)
    caller = await team_caller(gateway.keys, request.headers.get("authorization"), cannot="use responses")
    query = request.url.query_params if request.url.query else None
    status, body, headers = await at_upstream(gateway, caller, RESPONSE, response_id, method, suffix, query)
    return json_response(status, body, headers)

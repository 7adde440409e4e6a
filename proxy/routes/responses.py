"""OpenAI's Responses API on aliases: ``POST /v1/responses`` is a model call (run by tunegate.proxy.calls.endpoint),
and a stored response is read, deleted, cancelled and its input items listed at the upstream that stored it, by
the team that created it only: another team's id is answered exactly as an unknown one (404)."""

from __future__ import annotations

import os
from typing import Any, cast

import httpx
import orjson
from litestar import Controller, Request, Response, delete, get, post
from litestar.types import ASGIApp

from tunegate.proxy.auth import team_caller
from tunegate.proxy.calls.endpoint import model_call
from tunegate.proxy.errors import GatewayError, NotFound, json_response
from tunegate.proxy.state import gateway_of, read, transaction
from tunegate.proxy.upstream.calls import answered_badly, model_call_headers, refused, unreachable
from tunegate.registry.responses import forget_response, team_response

AnyRequest = Request[Any, Any, Any]


class ResponsesController(Controller):
    path = "/v1/responses"
    tags = ["openai"]  # noqa: RUF012

    # Served by tunegate.proxy.app.ModelCalls ahead of litestar's router; declared here for the OpenAPI schema.
    @post("", status_code=200)
    async def create_response(self, request: AnyRequest) -> ASGIApp:
        return cast("ASGIApp", await model_call(gateway_of(request), request, "/responses"))

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


def _unknown(response_id: str) -> GatewayError:
    # OpenAI's words for an id it does not know; the same for another team's id.
    return NotFound(f"Response with id '{response_id}' not found.", code=None)


async def _at_upstream(request: AnyRequest, response_id: str, method: str, suffix: str) -> Response[bytes]:
    """The call on one of the team's stored responses, made at the upstream that stored it; ``model`` shows the
    alias it was created on."""
    gateway = gateway_of(request)
    caller = await team_caller(gateway.keys, request.headers.get("authorization"), cannot="use responses")
    stored = await read(
        gateway, lambda session: team_response(session, response_id=response_id, team_id=caller.team_id)
    )
    if stored is None:
        raise _unknown(response_id)
    upstream = await gateway.upstream(stored.upstream)
    request_id = "req_" + os.urandom(16).hex()
    try:
        answer = await gateway.http.request(
            method,
            f"{upstream.base_url}/responses/{response_id}{suffix}",
            params=request.url.query_params if request.url.query else None,
            headers=model_call_headers(upstream, request_id),
        )
    except httpx.TransportError as exc:
        raise unreachable(upstream, exc) from None
    headers = {"x-request-id": request_id}
    if answer.status_code == 404:
        raise _unknown(response_id)  # gone at the upstream too
    if answer.status_code >= 400:  # cancelling one not in the background: the upstream's words, without any key
        error = refused(upstream, answer.status_code, answer.content)
        error.headers = headers
        raise error
    try:
        data = answer.json()
    except ValueError:
        raise answered_badly(upstream, 502, b"") from None
    if method == "DELETE":
        await transaction(
            gateway, lambda session: forget_response(session, response_id=response_id, team_id=caller.team_id)
        )
    elif isinstance(data, dict) and data.get("object") == "response":
        data["model"] = stored.alias
    return json_response(answer.status_code, orjson.dumps(data), headers)

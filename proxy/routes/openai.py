"""The OpenAI-compatible surface: chat completions, completions, embeddings (declared here, run by
tunegate.proxy.calls.endpoint) and the models a team may call."""

from __future__ import annotations

from typing import Any, cast

import orjson
from litestar import Controller, Request, Response, get, post
from litestar.types import ASGIApp
from sqlmodel import Session

from tunegate.proxy.auth import reader
from tunegate.proxy.calls.endpoint import model_call
from tunegate.proxy.errors import json_response, model_not_found
from tunegate.proxy.state import gateway_of
from tunegate.registry.aliases import visible_aliases


class OpenAIController(Controller):
    path = "/v1"
    tags = ["openai"]  # noqa: RUF012

    # Served by tunegate.proxy.app.ModelCalls ahead of litestar's router; declared here for the OpenAPI schema and for
    # the paths it leaves to litestar (a trailing slash).
    @post("/chat/completions", status_code=200)
    async def chat_completions(self, request: Request[Any, Any, Any]) -> ASGIApp:
        return cast("ASGIApp", await model_call(gateway_of(request), request, "/chat/completions"))

    @post("/completions", status_code=200)
    async def completions(self, request: Request[Any, Any, Any]) -> ASGIApp:
        return cast("ASGIApp", await model_call(gateway_of(request), request, "/completions"))

    @post("/embeddings", status_code=200)
    async def embeddings(self, request: Request[Any, Any, Any]) -> ASGIApp:
        return cast("ASGIApp", await model_call(gateway_of(request), request, "/embeddings"))

    @get("/models")
    async def list_models(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        data = await _models(request)
        return json_response(200, orjson.dumps({"object": "list", "data": data}))

    @get("/models/{model_id:path}")
    async def retrieve_model(self, request: Request[Any, Any, Any], model_id: str) -> Response[bytes]:
        name = model_id.lstrip("/")
        for model in await _models(request):
            if model["id"] == name:
                return json_response(200, orjson.dumps(model))
        # A name a pattern alias (`gpt-4o*`) forwards is callable, though listings leave patterns out.
        gateway = gateway_of(request)
        resolved = await gateway.resolve_alias(await reader(gateway.keys, request.headers.get("authorization")), name)
        if resolved.pattern is None:
            raise model_not_found(name)
        return json_response(200, orjson.dumps({"id": name, "object": "model", "created": 0, "owned_by": "tunegate"}))


async def _models(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    gateway = gateway_of(request)
    caller = await reader(gateway.keys, request.headers.get("authorization"))
    with Session(gateway.engine) as session:
        aliases = visible_aliases(session=session, team_id=caller.team_id, team=caller.team)
    return [
        {
            "id": alias.name,
            "object": "model",
            "created": int(alias.created_at.timestamp()),
            "owned_by": caller.team if alias.team_id is not None else "tunegate",
        }
        for alias, _spec in aliases
        if caller.allowed_aliases is None or alias.name in caller.allowed_aliases
    ]

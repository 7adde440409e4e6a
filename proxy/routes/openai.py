"""The OpenAI-compatible surface: chat completions, completions, embeddings and models, per team."""

from __future__ import annotations

from typing import Any, cast

import orjson
from litestar import Controller, Request, Response, get, post
from litestar.types import ASGIApp
from sqlmodel import Session

from proxy.calls.forwarding import Exchange, forward
from proxy.errors import GatewayError, json_response, model_not_found
from proxy.state import gateway_of
from registry.aliases import visible_aliases


async def read_json(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"We could not parse the JSON body of your request ({exc}).") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.")
    return body


def require(body: dict[str, Any], field: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(field)
    if value is None:
        raise GatewayError(
            400, f"Missing required parameter: '{field}'.", param=field, code="missing_required_parameter"
        )
    if not isinstance(value, kind) or (isinstance(value, str | list) and not value):
        raise GatewayError(400, f"Invalid value for '{field}': expected {what}.", param=field, code="invalid_value")
    return value


# The model calls: the path after /v1, the endpoint their usage records name, and the fields they must have.
MODEL_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "/chat/completions": ("chat.completions", {"messages": (list, "a non-empty array of messages")}),
    "/completions": ("completions", {"prompt": ((str, list), "a string or an array")}),
    "/embeddings": ("embeddings", {"input": ((str, list), "a string or an array")}),
}


async def model_call(request: Request[Any, Any, Any], path: str) -> ASGIApp:
    """The model call at ``path`` (one of MODEL_CALLS): checked, limited, forwarded; its answer."""
    endpoint, required = MODEL_CALLS[path]
    gateway = gateway_of(request)
    caller = await gateway.authenticate(request.headers.get("authorization"))
    if caller.role != "team":
        raise GatewayError(403, "This key may read usage only; it cannot call models.", code="permission_denied")
    body = await read_json(request)
    name = require(body, "model", str, "the name of a model (an alias)")
    for field, (kind, what) in required.items():
        require(body, field, kind, what)
    alias = await gateway.resolve_alias(caller, name)
    with gateway.limits.calling():
        quota = await gateway.limits.admit(caller)  # budget and rate limits: a 429 before anything is spent
        answer = await quota.finish(await forward(Exchange(gateway, caller, endpoint, path, alias, body)))
    # A JSONAnswer or an SSEAnswer: ASGI apps, which litestar sends as they are.
    return cast("ASGIApp", answer)


class OpenAIController(Controller):
    path = "/v1"
    tags = ["openai"]  # noqa: RUF012

    # Served by proxy.app.ModelCalls ahead of litestar's router; declared here for the OpenAPI schema and for
    # the paths it leaves to litestar (a trailing slash).
    @post("/chat/completions", status_code=200)
    async def chat_completions(self, request: Request[Any, Any, Any]) -> ASGIApp:
        return await model_call(request, "/chat/completions")

    @post("/completions", status_code=200)
    async def completions(self, request: Request[Any, Any, Any]) -> ASGIApp:
        return await model_call(request, "/completions")

    @post("/embeddings", status_code=200)
    async def embeddings(self, request: Request[Any, Any, Any]) -> ASGIApp:
        return await model_call(request, "/embeddings")

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
        resolved = await gateway.resolve_alias(await gateway.authenticate(request.headers.get("authorization")), name)
        if resolved.pattern is None:
            raise model_not_found(name)
        return json_response(200, orjson.dumps({"id": name, "object": "model", "created": 0, "owned_by": "tunegate"}))


async def _models(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    gateway = gateway_of(request)
    caller = await gateway.authenticate(request.headers.get("authorization"))
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

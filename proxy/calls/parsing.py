"""Reading a JSON request body, and the checks on its fields that answer 400 in OpenAI's words."""

from __future__ import annotations

from typing import Any

import orjson
from litestar import Request

from tunegate.proxy.errors import InvalidRequest, MalformedBody, MissingParameter


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says why it is not one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"We could not parse the JSON body of your request ({exc}).") from None
    if not isinstance(body, dict):
        raise MalformedBody("The request body must be a JSON object.")
    return body


def require(body: dict[str, Any], field: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``body[field]``, present and of ``kind`` (a non-empty one for strings and lists), else a 400 naming it."""
    value = body.get(field)
    if value is None:
        raise MissingParameter(f"Missing required parameter: '{field}'.", param=field)
    if not isinstance(value, kind) or (isinstance(value, str | list) and not value):
        raise InvalidRequest(f"Invalid value for '{field}': expected {what}.", param=field)
    return value


def optional(body: dict[str, Any], field: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``body[field]`` if it is there (None if not), of ``kind``, else a 400 naming it."""
    value = body.get(field)
    if value is not None and not isinstance(value, kind):
        raise InvalidRequest(f"Invalid value for '{field}': expected {what}.", param=field)
    return value


async def read_json(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The request's body as a JSON object (see :func:`parse_json`)."""
    return parse_json(await request.body())

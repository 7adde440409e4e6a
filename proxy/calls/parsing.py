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


def check_streaming(body: dict[str, Any], endpoint: str) -> None:
    """``stream`` a boolean (never on embeddings) and ``stream_options`` an object, else a 400 naming it."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest(f"Invalid type for 'stream': expected a boolean, but got {_kind(stream)}.", param="stream")
    if stream and endpoint == "embeddings":
        raise InvalidRequest("Embeddings cannot be streamed: leave out 'stream' or set it to false.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest(
            f"Invalid type for 'stream_options': expected an object, but got {_kind(options)}.", param="stream_options"
        )


MAX_DEPTH = 253  # the levels orjson encodes in a field of the body (it stops at 255, the body one of them)


def encode(payload: dict[str, Any]) -> bytes:
    """``payload`` as JSON for the upstream; a body nested deeper than JSON encoding allows (orjson's limit)
    is the client's mistake: a 400 naming the top-level field that holds it. Checked only when encoding fails, so
    a body that encodes costs nothing more."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        for field, value in payload.items():
            try:
                orjson.dumps([value])  # one level for the body around it
            except orjson.JSONEncodeError:
                raise InvalidRequest(
                    f"Invalid value for '{field}': it is nested too deeply (at most {MAX_DEPTH} levels).", param=field
                ) from None
        raise


def _kind(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def metadata_of(body: dict[str, Any]) -> dict[str, str] | None:
    """A body's ``metadata``: an object of strings, as OpenAI takes it (chat completions, fine-tuning jobs), else a
    400 naming it."""
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidRequest("Invalid value for 'metadata': expected an object of strings.", param="metadata")
    return metadata

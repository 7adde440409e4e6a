"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, so SDKs raise the right type.

GatewayError is the one exception the request path raises; registry errors and litestar's own HTTP
errors are translated into the same shape here. Nothing reaches a client as a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from registry.errors import Conflict, Invalid, NotFound, RegistryError

log = logging.getLogger("tunegate")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.payload())


def model_not_found(name: str) -> GatewayError:
    # The same answer for "does not exist" and "not yours", so other teams' aliases are not revealed.
    return GatewayError(
        404,
        f"The model `{name}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def invalid_api_key() -> GatewayError:
    return GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")


def json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _from_registry(exc: RegistryError) -> GatewayError:
    status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
    code = (
        {404: "not_found", 409: "conflict"}.get(status, "invalid_value")
        if isinstance(exc, Invalid | NotFound | Conflict)
        else None
    )
    return GatewayError(status, exc.message, param=exc.param, code=code)


def _from_validation(exc: ValidationException) -> GatewayError:
    problems = exc.extra if isinstance(exc.extra, list) else []
    parts, param = [], None
    for problem in problems:
        if isinstance(problem, dict):
            field = str(problem.get("key") or "body")
            param = param or field
            parts.append(f"'{field}': {problem.get('message')}")
    message = "Invalid request: " + ("; ".join(parts) if parts else str(exc.detail))
    return GatewayError(400, message, param=param, code="invalid_value")


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, GatewayError):
        error = exc
    elif isinstance(exc, RegistryError):
        error = _from_registry(exc)
    elif isinstance(exc, ValidationException):
        error = _from_validation(exc)
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        message = {
            404: f"Unknown request URL: {request.method} {request.url.path}.",
            405: f"Method {request.method} is not allowed on {request.url.path}.",
            413: "The request body is larger than this gateway accepts (server.max_body_bytes).",
        }.get(status, str(exc.detail))
        error = GatewayError(status, message, code="request_too_large" if status == 413 else None)
    else:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        error = GatewayError(500, "The gateway had an internal error; it has been logged.", code="internal_error")
    return json_response(error.status, error.body(), error.headers)

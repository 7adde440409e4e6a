"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, so SDKs raise the right type.

GatewayError is the one exception the HTTP side raises; each kind is a class that carries its status, type and
code, so a raise says what went wrong and this module alone says what the client sees:

    GatewayError                 status  type                   code
    ├── InvalidRequest           400     invalid_request_error  invalid_value
    │   └── MissingParameter     400     invalid_request_error  missing_required_parameter
    ├── MalformedBody            400     invalid_request_error  (none: the body is no JSON object)
    ├── AuthenticationFailed     401     invalid_request_error  invalid_api_key
    ├── PermissionDenied         403     invalid_request_error  permission_denied
    ├── NotFound                 404     invalid_request_error  not_found
    │   └── ModelNotFound        404     invalid_request_error  model_not_found
    ├── ConflictError            409     invalid_request_error  conflict
    ├── RequestTooLarge          413     invalid_request_error  request_too_large
    ├── RateLimited              429     rate_limit_error       rate_limit_exceeded
    │   └── QuotaExceeded        429     insufficient_quota     insufficient_quota
    ├── InternalError            500     server_error           internal_error
    ├── UpstreamFailed           502     server_error           upstream_error
    │   ├── UpstreamUnreachable  502     server_error           upstream_unreachable
    │   └── UpstreamTimeout      504     server_error           upstream_timeout
    └── Unavailable              503     server_error           database_unavailable

``GatewayError(status, message, ...)`` itself still makes an error of any status (its type follows the status).
Registry errors and litestar's own HTTP errors are translated into the same shape by :func:`handle_exception`.
Nothing reaches a client as a traceback.
"""

from __future__ import annotations

import enum
import logging
from typing import Any, ClassVar, Literal

import orjson
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from tunegate.registry.errors import Conflict, RegistryError
from tunegate.registry.errors import NotFound as RegistryNotFound

log = logging.getLogger("tunegate")


class GatewayError(Exception):
    """An answer in OpenAI's error shape; subclasses fix its status, ``kind`` (the error type) and ``default_code``."""

    status: int = 500
    kind: ClassVar[str | None] = None
    default_code: ClassVar[str | None] = None

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
        self.type = type or self.kind or _type_of(status)
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.payload())


def _type_of(status: int) -> str:
    return "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"


class _Default(enum.Enum):
    CODE = "the class's default_code"


class _Kind(GatewayError):
    """An error whose status the class decides: raised with the message (and a code, param or headers if needed;
    ``code=None`` for none at all)."""

    fixed_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | Literal[_Default.CODE] | None = _Default.CODE,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        given = self.default_code if code is _Default.CODE else code
        super().__init__(self.fixed_status, message, code=given, param=param, type=type, headers=headers)


class InvalidRequest(_Kind):
    fixed_status = 400
    kind = "invalid_request_error"
    default_code = "invalid_value"


class MissingParameter(InvalidRequest):
    default_code = "missing_required_parameter"


class MalformedBody(_Kind):
    """A body that is not the JSON object the route reads."""

    fixed_status = 400
    kind = "invalid_request_error"


class AuthenticationFailed(_Kind):
    fixed_status = 401
    kind = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDenied(_Kind):
    fixed_status = 403
    kind = "invalid_request_error"
    default_code = "permission_denied"


class NotFound(_Kind):
    fixed_status = 404
    kind = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class ConflictError(_Kind):
    fixed_status = 409
    kind = "invalid_request_error"
    default_code = "conflict"


class RequestTooLarge(_Kind):
    fixed_status = 413
    kind = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(_Kind):
    fixed_status = 429
    kind = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class QuotaExceeded(RateLimited):
    kind = "insufficient_quota"
    default_code = "insufficient_quota"


class InternalError(_Kind):
    fixed_status = 500
    kind = "server_error"
    default_code = "internal_error"


class UpstreamFailed(_Kind):
    fixed_status = 502
    kind = "server_error"
    default_code = "upstream_error"


class UpstreamUnreachable(UpstreamFailed):
    default_code = "upstream_unreachable"


class UpstreamTimeout(UpstreamFailed):
    fixed_status = 504
    default_code = "upstream_timeout"


class Unavailable(_Kind):
    fixed_status = 503
    kind = "server_error"
    default_code = "database_unavailable"


def model_not_found(name: str) -> GatewayError:
    # The same answer for "does not exist" and "not yours", so other teams' aliases are not revealed.
    return ModelNotFound(f"The model `{name}` does not exist or you do not have access to it.", param="model")


def invalid_api_key() -> GatewayError:
    return AuthenticationFailed("Incorrect API key provided.")


def json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _from_registry(exc: RegistryError) -> GatewayError:
    if isinstance(exc, RegistryNotFound):
        return NotFound(exc.message, param=exc.param)
    if isinstance(exc, Conflict):
        return ConflictError(exc.message, param=exc.param)
    return InvalidRequest(exc.message, param=exc.param)


def _from_validation(exc: ValidationException) -> GatewayError:
    problems = exc.extra if isinstance(exc.extra, list) else []
    parts, param = [], None
    for problem in problems:
        if isinstance(problem, dict):
            field = str(problem.get("key") or "body")
            param = param or field
            parts.append(f"'{field}': {problem.get('message')}")
    message = "Invalid request: " + ("; ".join(parts) if parts else str(exc.detail))
    return InvalidRequest(message, param=param)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, GatewayError):
        error = exc
    elif isinstance(exc, RegistryError):
        error = _from_registry(exc)
    elif isinstance(exc, ValidationException):
        error = _from_validation(exc)
    elif isinstance(exc, RecursionError):  # litestar's JSON decoder on a body nested ~1,000 levels deep
        error = MalformedBody("The request body is nested too deeply to be read.")
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
        error = InternalError("The gateway had an internal error; it has been logged.")
    return json_response(error.status, error.body(), error.headers)

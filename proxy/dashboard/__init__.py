"""The spend dashboard at ``/dashboard``: one HTML page, a script and a stylesheet, served from package data.

The page holds no data and no secret: it asks for a finance or admin key, keeps it in the tab's
sessionStorage and sends it as ``Authorization: Bearer`` to the finance JSON APIs, which do the checking.
A strict Content-Security-Policy allows only these same-origin files to run.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from litestar import Controller, Response, get

from tunegate.proxy.errors import GatewayError

_ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@cache
def asset(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


class DashboardController(Controller):
    path = "/dashboard"
    tags = ["dashboard"]  # noqa: RUF012
    include_in_schema = False

    @get("/")
    async def page(self) -> Response[bytes]:
        return Response(
            asset("index.html"),
            media_type="text/html",
            headers={**_SECURITY_HEADERS, "cache-control": "no-store"},
        )

    @get("/{name:str}")
    async def static(self, name: str) -> Response[bytes]:
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise GatewayError(404, f"Unknown request URL: GET /dashboard/{name}.")  # as litestar's own 404
        return Response(asset(name), media_type=media_type, headers={**_SECURITY_HEADERS, "cache-control": "no-cache"})

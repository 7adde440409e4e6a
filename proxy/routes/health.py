"""Health: the process is alive (/healthz), and it can reach its database (/readyz)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from tunegate.proxy.errors import Unavailable
from tunegate.proxy.state import gateway_of
from tunegate.registry.db import ping


@get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["health"])
async def readyz(request: Request[Any, Any, Any]) -> dict[str, str]:
    if not ping(gateway_of(request).engine):
        raise Unavailable("The database is not reachable.")
    return {"status": "ready"}

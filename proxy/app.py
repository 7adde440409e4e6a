"""The app factory: one Litestar application per process, around one ``Gateway``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, get
from litestar.openapi import OpenAPIConfig

from config import Settings
from proxy.admin_routes import AdminController
from proxy.errors import GatewayError, handle_exception
from proxy.gateway import Gateway
from proxy.openai_routes import OpenAIController, gateway_of
from registry.db import ping


@get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["health"])
async def readyz(request: Request[Any, Any, Any]) -> dict[str, str]:
    if not ping(gateway_of(request).engine):
        raise GatewayError(503, "The database is not reachable.", code="database_unavailable")
    return {"status": "ready"}


def create_app(settings: Settings, *, gateway: Gateway | None = None) -> Litestar:
    gw = gateway or Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.gateway = gw
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    return Litestar(
        route_handlers=[OpenAIController, AdminController, healthz, readyz],
        lifespan=[lifespan],
        exception_handlers={Exception: handle_exception},
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="tunegate", version="0.1.0", path="/schema"),
        debug=False,
    )

"""The app factory: one Litestar application per process, around one ``Gateway``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, get
from litestar.openapi import OpenAPIConfig

from config import Settings
from proxy.admin_routes import ADMIN_CONTROLLERS
from proxy.dashboard import DashboardController
from proxy.errors import GatewayError, handle_exception
from proxy.finance_routes import FinanceController, TeamUsageController
from proxy.finetune_poller import FinetuneBackground
from proxy.finetune_routes import finetune_route_handlers
from proxy.gateway import Gateway, gateway_of
from proxy.metrics import metrics_endpoint
from proxy.openai_routes import OpenAIController
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
        finetune = FinetuneBackground(gw)  # the job poller and the retirement watch
        await finetune.start()
        try:
            yield
        finally:
            await finetune.stop()
            await gw.stop()

    return Litestar(
        route_handlers=[
            OpenAIController,
            *ADMIN_CONTROLLERS,
            healthz,
            readyz,
            metrics_endpoint,
            DashboardController,
            FinanceController,
            TeamUsageController,
            *finetune_route_handlers(settings),
        ],
        lifespan=[lifespan],
        middleware=[gw.metrics.middleware],
        exception_handlers={Exception: handle_exception},
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="tunegate", version="0.1.0", path="/schema"),
        debug=False,
    )


def create_app_from_env() -> Litestar:
    """One worker of ``tunegate serve --workers N`` (uvicorn imports it by name, once per worker process).

    Settings come from $TUNEGATE_CONFIG and the environment, as the parent read them; the parent has migrated
    the database and applied the file already.
    """
    from config import load_settings
    from proxy.cli.serve import PREPARED_ENV, configure_logging, demo_upstreams, lean_serving_process

    configure_logging()
    lean_serving_process()
    settings = demo_upstreams(load_settings())
    prepared = os.environ.get(PREPARED_ENV) == "1"
    return create_app(settings, gateway=Gateway(settings, prepared=prepared))

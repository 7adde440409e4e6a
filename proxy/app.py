"""The app factory: one Litestar application per process, around one ``Gateway``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from litestar import Litestar, Request
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Receive, Scope, Send

from tunegate.config import Settings
from tunegate.proxy.access_log import AccessLog
from tunegate.proxy.calls.endpoint import MODEL_CALLS, model_call
from tunegate.proxy.dashboard import DashboardController
from tunegate.proxy.errors import handle_exception
from tunegate.proxy.finetune.background import FinetuneBackground
from tunegate.proxy.metrics import metrics_endpoint
from tunegate.proxy.routes.aliases import AliasController
from tunegate.proxy.routes.apply import ApplyController
from tunegate.proxy.routes.audit import AuditController
from tunegate.proxy.routes.chat_completions import ChatCompletionsController, list_stored_chat_completions
from tunegate.proxy.routes.finance import FinanceController, TeamUsageController
from tunegate.proxy.routes.finetune import finetune_route_handlers
from tunegate.proxy.routes.health import healthz, readyz
from tunegate.proxy.routes.keys import KeyController
from tunegate.proxy.routes.openai import OpenAIController
from tunegate.proxy.routes.organization import OrganizationController
from tunegate.proxy.routes.responses import ResponsesController
from tunegate.proxy.routes.teams import TeamController
from tunegate.proxy.routes.upstreams import UpstreamController
from tunegate.proxy.state import Gateway


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

    app = Litestar(
        route_handlers=[
            OpenAIController,
            ResponsesController,
            ChatCompletionsController,
            list_stored_chat_completions,  # after OpenAIController (routes/chat_completions.py says why)
            TeamController,
            KeyController,
            AliasController,
            UpstreamController,
            AuditController,
            ApplyController,
            healthz,
            readyz,
            metrics_endpoint,
            DashboardController,
            FinanceController,
            TeamUsageController,
            OrganizationController,
            *finetune_route_handlers(settings),
        ],
        lifespan=[lifespan],
        middleware=[gw.metrics.middleware],
        exception_handlers={Exception: handle_exception},
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=OpenAPIConfig(title="tunegate", version="0.1.0", path="/schema"),
        debug=False,
        logging_config=None,  # the process's logging is proxy.serving.configure_logging's (text or JSON)
    )
    app.asgi_handler = AccessLog(ModelCalls(app, gw))  # a line per request (proxy.access_log)
    return app


class ModelCalls:
    """The model calls (``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``) straight to their
    handler, ahead of litestar's router, exception middleware and handler layers; everything else to litestar.

    What a call gets is what litestar would give it: a Request with the route's handler in its scope (so the
    same body size limit), the same metrics middleware, the handler's own response conversion, and errors
    answered by the app's exception handler; less CPU a call (README, Performance).
    """

    def __init__(self, app: Litestar, gateway: Gateway) -> None:
        self._litestar = app.asgi_handler
        self._app = app
        self._gateway = gateway
        self._routes: dict[str, tuple[Any, ASGIApp]] = {}
        for route in app.routes:
            path = route.path.removeprefix("/v1")
            if isinstance(route, HTTPRoute) and route.path.startswith("/v1/") and path in MODEL_CALLS:
                handler = next(h for h in route.route_handlers if "POST" in h.http_methods)
                self._routes[route.path] = (handler, gateway.metrics.middleware(partial(self._call, handler, path)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "POST":
            found = self._routes.get(scope["path"])
            if found is not None:
                scope["route_handler"], app = found
                scope["path_params"] = {}
                await app(scope, receive, send)
                return
        await self._litestar(scope, receive, send)

    async def _call(self, handler: Any, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        request: Request[Any, Any, Any] = Request(scope, receive)
        try:
            answer = await handler.to_response(
                app=self._app, data=await model_call(self._gateway, request, path), request=request
            )
        except Exception as exc:
            answer = handle_exception(request, exc).to_asgi_response(app=self._app, request=request)
        await answer(scope, receive, send)

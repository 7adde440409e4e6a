"""OpenAI's organization usage and costs: ``GET /v1/organization/usage/{completions,embeddings,responses}`` and
``GET /v1/organization/costs``, for the admin keys and finance keys (what the openai SDK's
``client.admin.organization.usage`` reads). A team's finance key reads its own team's (project's) figures only."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, get

from tunegate.proxy.auth import finance_guard, readable_teams
from tunegate.proxy.state import gateway_of
from tunegate.proxy.state import read as read_session
from tunegate.registry.organization import Kind, organization_page, parse_query

AnyRequest = Request[Any, Any, Any]
_PARAMS = (
    "start_time",
    "end_time",
    "bucket_width",
    "limit",
    "page",
    "batch",
    "group_by",
    "project_ids",
    "user_ids",
    "api_key_ids",
    "models",
    "line_items",
)


async def _page(request: AnyRequest, kind: Kind) -> dict[str, Any]:
    # The SDK writes a list as name[]=a&name[]=b; others repeat name=a&name=b: both are read.
    query = request.query_params
    params = {name: [*query.getall(name, []), *query.getall(f"{name}[]", [])] for name in _PARAMS}
    parsed = parse_query(kind, params, now=int(time.time()))
    teams = readable_teams(request)
    return await read_session(
        gateway_of(request), lambda session: organization_page(session=session, query=parsed, team_ids=teams)
    )


class OrganizationController(Controller):
    path = "/v1/organization"
    tags = ["organization"]  # noqa: RUF012
    guards = [finance_guard]  # noqa: RUF012

    @get("/usage/completions")
    async def completions(self, request: AnyRequest) -> dict[str, Any]:
        return await _page(request, "completions")

    @get("/usage/embeddings")
    async def embeddings(self, request: AnyRequest) -> dict[str, Any]:
        return await _page(request, "embeddings")

    @get("/usage/responses")
    async def responses(self, request: AnyRequest) -> dict[str, Any]:
        return await _page(request, "responses")

    @get("/costs")
    async def costs(self, request: AnyRequest) -> dict[str, Any]:
        return await _page(request, "costs")

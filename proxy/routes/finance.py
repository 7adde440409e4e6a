"""Finance: usage reports, budgets, rate limits and fine-tune savings.

Reads (``/admin/usage``, ``/admin/budgets``, ``/admin/savings``) take the admin key or a finance key (a
``team_finance`` key reads its own team's figures only: another team's read as a team with none, an empty
result; its alias as an unknown one); changes (budgets, limits) take the admin key. ``/v1/usage`` is the same
report for a team key, its own team's rows only.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from litestar import Controller, Response, delete, get, put
from litestar.params import Parameter
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from tunegate.proxy.auth import admin_guard, finance_guard, readable_teams, reader
from tunegate.proxy.errors import json_response
from tunegate.proxy.routes.common import AnyRequest, read, write
from tunegate.proxy.state import gateway_of
from tunegate.registry.budgets import budget_status, clear_budget, list_rate_limits, set_budget, set_rate_limit
from tunegate.registry.errors import Invalid
from tunegate.registry.reports import (
    METADATA,
    parse_day,
    parse_group_by,
    parse_key_id,
    parse_range,
    savings,
    usage_report,
)

_MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"
_GROUPS = "team,alias,model,served_by,day,kind,key,user,endpoint,metadata.<key>"


def _filters(request: AnyRequest, key: str | None, user: str | None, endpoint: str | None) -> dict[str, Any]:
    """The report's filters below the team: ``key`` (key_<id>), ``user``, ``endpoint`` and ``metadata.<key>=value``."""
    metadata = {
        name[len(METADATA) :]: value for name, value in request.query_params.items() if name.startswith(METADATA)
    }
    return {
        "key_id": parse_key_id(key, "key") if key else None,
        "user": user or None,
        "endpoint": endpoint or None,
        "metadata": metadata,
    }


def _report(
    request: AnyRequest,
    *,
    start: str | None,
    end: str | None,
    group_by: str | None,
    output: str | None,
    default_group: tuple[str, ...],
    **filters: Any,
) -> Callable[[Session], Response[bytes]]:
    first, last = parse_range(start, end)
    groups = parse_group_by(group_by, default_group)
    output = output or "json"
    if output not in ("json", "csv"):
        raise Invalid(f"'format' must be json or csv, got '{output}'", param="format")

    def work(session: Session) -> Response[bytes]:
        report = usage_report(session=session, start=first, end=last, group_by=groups, **filters)
        if output == "csv":
            name = f"usage-{first.isoformat()}-{last.isoformat()}.csv"
            return Response(
                report.as_csv().encode(),
                media_type="text/csv; charset=utf-8",
                headers={"content-disposition": f'attachment; filename="{name}"'},
            )
        return json_response(200, orjson.dumps(report.as_json()))

    return work


class BudgetSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    monthly_usd: Decimal = Field(description="the hard limit: requests get 429 insufficient_quota beyond it")
    soft_pct: int = Field(default=80, description="the alert threshold, percent of monthly_usd")
    alert_webhook: str | None = Field(default=None, description="POSTed once a month when a threshold is crossed")


class RateSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rpm: int | None = Field(default=None, description="requests per minute; null: no limit")
    tpm: int | None = Field(default=None, description="tokens (prompt + completion) per minute; null: no limit")


class FinanceController(Controller):
    path = "/admin"
    tags = ["finance"]  # noqa: RUF012

    @get("/usage", guards=[finance_guard])
    async def usage(
        self,
        request: AnyRequest,
        start: str | None = Parameter(query="from", default=None, description="first day, YYYY-MM-DD"),
        end: str | None = Parameter(query="to", default=None, description="last day (inclusive), YYYY-MM-DD"),
        group_by: str | None = Parameter(default=None, description=_GROUPS),
        output: str | None = Parameter(query="format", default=None, description="json (default) or csv"),
        team: str | None = Parameter(default=None),
        alias: str | None = Parameter(default=None),
        model: str | None = Parameter(default=None),
        key: str | None = Parameter(default=None, description="one key's requests: key_<id>"),
        user: str | None = Parameter(default=None, description="one end user's requests (the request's `user`)"),
        endpoint: str | None = Parameter(default=None, description="chat.completions, completions, embeddings..."),
    ) -> Response[bytes]:
        work = _report(
            request,
            start=start,
            end=end,
            group_by=group_by,
            output=output,
            default_group=("team",),
            team=team,
            team_ids=readable_teams(request),
            alias=alias,
            model=model,
            **_filters(request, key, user, endpoint),
        )
        return await read(request, work)

    @get("/budgets", guards=[finance_guard])
    async def budgets(
        self, request: AnyRequest, month: str | None = Parameter(default=None, pattern=_MONTH)
    ) -> dict[str, Any]:
        teams = readable_teams(request)
        rows = await read(request, lambda s: budget_status(session=s, month=month))
        rows = [row for row in rows if teams is None or row.team_id in teams]
        return {"object": "list", "data": [row.as_json() | {"alert_webhook": row.alert_webhook} for row in rows]}

    @put("/budgets/{team:str}", guards=[admin_guard])
    async def set_budget(self, request: AnyRequest, team: str, data: BudgetSet) -> dict[str, Any]:
        def work(session: Session, actor: str) -> dict[str, Any]:
            set_budget(
                session=session,
                team=team,
                monthly_usd=data.monthly_usd,
                soft_pct=data.soft_pct,
                alert_webhook=data.alert_webhook,
                actor=actor,
            )
            (status,) = budget_status(session=session, teams=[team])
            return status.as_json() | {"alert_webhook": status.alert_webhook}

        return await write(request, work)

    @delete("/budgets/{team:str}", guards=[admin_guard], status_code=200)
    async def clear_budget(self, request: AnyRequest, team: str) -> dict[str, Any]:
        await write(request, lambda s, actor: clear_budget(session=s, team=team, actor=actor))
        return {"team": team, "deleted": True}

    @get("/limits", guards=[admin_guard])
    async def limits(self, request: AnyRequest) -> dict[str, Any]:
        return {"object": "list", "data": await read(request, lambda s: list_rate_limits(session=s))}

    @put("/limits/teams/{team:str}", guards=[admin_guard])
    async def set_team_limit(self, request: AnyRequest, team: str, data: RateSet) -> dict[str, Any]:
        await write(
            request, lambda s, actor: set_rate_limit(session=s, team=team, rpm=data.rpm, tpm=data.tpm, actor=actor)
        )
        return {"scope": "team", "team": team, "key_id": None, "rpm": data.rpm, "tpm": data.tpm}

    @put("/limits/keys/{key_id:int}", guards=[admin_guard])
    async def set_key_limit(
        self, request: AnyRequest, data: RateSet, key_id: int = Parameter(ge=1, le=2**31 - 1)
    ) -> dict[str, Any]:
        limit = await write(
            request,
            lambda s, actor: set_rate_limit(session=s, key_id=key_id, rpm=data.rpm, tpm=data.tpm, actor=actor),
        )
        return {"scope": "key", "team_id": limit.team_id, "key_id": key_id, "rpm": data.rpm, "tpm": data.tpm}

    @get("/savings", guards=[finance_guard])
    async def savings(
        self,
        request: AnyRequest,
        alias: str | None = Parameter(default=None, description="the alias to look at"),
        team: str | None = Parameter(default=None, description="one team's traffic (and its own alias)"),
        start: str | None = Parameter(query="from", default=None, description="first day, YYYY-MM-DD"),
        end: str | None = Parameter(query="to", default=None, description="last day (inclusive), YYYY-MM-DD"),
    ) -> dict[str, Any]:
        if not alias:
            raise Invalid("'alias' is required: the alias whose fine-tune to look at", param="alias")
        first, last = parse_day(start, "from"), parse_day(end, "to")
        if first and last and first > last:
            raise Invalid(f"'from' ({first}) is after 'to' ({last})", param="from")
        prices = gateway_of(request).prices
        teams = readable_teams(request)
        return await read(
            request,
            lambda s: savings(session=s, prices=prices, alias=alias, team=team, team_ids=teams, start=first, end=last),
        )


class TeamUsageController(Controller):
    path = "/v1"
    tags = ["openai"]  # noqa: RUF012

    @get("/usage")
    async def usage(
        self,
        request: AnyRequest,
        start: str | None = Parameter(query="from", default=None, description="first day, YYYY-MM-DD"),
        end: str | None = Parameter(query="to", default=None, description="last day (inclusive), YYYY-MM-DD"),
        group_by: str | None = Parameter(default=None, description=_GROUPS),
        output: str | None = Parameter(query="format", default=None, description="json (default) or csv"),
        alias: str | None = Parameter(default=None),
        model: str | None = Parameter(default=None),
        key: str | None = Parameter(default=None, description="one key's requests: key_<id>"),
        user: str | None = Parameter(default=None, description="one end user's requests (the request's `user`)"),
        endpoint: str | None = Parameter(default=None, description="chat.completions, completions, embeddings..."),
    ) -> Response[bytes]:
        caller = await reader(gateway_of(request).keys, request.headers.get("authorization"))
        work = _report(
            request,
            start=start,
            end=end,
            group_by=group_by,
            output=output,
            default_group=("day",),
            team_id=caller.team_id,
            alias=alias,
            model=model,
            **_filters(request, key, user, endpoint),
        )
        return await read(request, work)

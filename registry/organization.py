"""OpenAI's organization usage and costs (``/v1/organization/usage/*``, ``/v1/organization/costs``) read from the
stored usage records, in OpenAI's shapes: a page of time buckets, each with its results per group.

A project is a team (its name is the ``project_id``), an API key is a gateway key (``key_<id>``, as reports name
it), a user is the request's ``user``. Buckets start at ``start_time`` and are ``bucket_width`` long.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, Integer, cast, false, func
from sqlmodel import Session, col, select

from tunegate.registry.costing import E8, from_e8
from tunegate.registry.errors import Invalid
from tunegate.registry.models import Team, UsageRecord
from tunegate.registry.reports import key_label, parse_key_id

Kind = Literal["completions", "embeddings", "responses", "costs"]

WIDTHS = {"1m": 60, "1h": 3600, "1d": 86400}
# Buckets a page holds, per width: (default, most), as OpenAI allows.
LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}
COSTS_LIMIT = (7, 180)
# The endpoints whose records each usage kind reads.
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "completions": ("chat.completions", "completions"),
    "embeddings": ("embeddings",),
    "responses": ("responses",),
}
GROUPS: dict[str, tuple[str, ...]] = {
    "completions": ("project_id", "user_id", "api_key_id", "model", "batch"),
    "responses": ("project_id", "user_id", "api_key_id", "model", "batch"),
    "embeddings": ("project_id", "user_id", "api_key_id", "model"),
    "costs": ("project_id", "user_id", "api_key_id", "line_item"),
}
_LINE_ITEM = col(UsageRecord.model) + ", " + col(UsageRecord.kind)  # "gpt-4o-mini, inference"
_COLUMNS: dict[str, Any] = {
    "project_id": col(Team.name),
    "user_id": col(UsageRecord.end_user),
    "api_key_id": col(UsageRecord.key_id),
    "model": col(UsageRecord.model),
    "line_item": _LINE_ITEM,
}
_PAGE = "page_"
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z: the last second a datetime holds


@dataclass(frozen=True)
class OrganizationQuery:
    kind: Kind
    start_time: int
    end_time: int
    bucket_width: str
    limit: int
    first_bucket: int  # the page's first bucket's start (unix seconds)
    group_by: tuple[str, ...] = ()
    project_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    api_key_ids: tuple[int, ...] = ()
    models: tuple[str, ...] = ()
    line_items: tuple[str, ...] = ()
    batch: bool | None = None

    @property
    def width(self) -> int:
        return WIDTHS[self.bucket_width]


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name) or ()
    if len(values) > 1:
        raise Invalid(f"'{name}' is given {len(values)} times; give it once", param=name)
    return values[0] if values else None


def _int(params: Mapping[str, Sequence[str]], name: str) -> int | None:
    value = _one(params, name)
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 12 or int(value) > _LAST_SECOND:
        raise Invalid(
            f"'{name}' must be a whole number of seconds since 1970 (unix time) before 10000, got '{value}'",
            param=name,
        )
    return int(value)


def parse_query(kind: Kind, params: Mapping[str, Sequence[str]], *, now: int) -> OrganizationQuery:
    """OpenAI's query parameters (each name with its values: ``group_by`` may come many times) for ``kind``."""
    start = _int(params, "start_time")
    if start is None:
        raise Invalid("'start_time' is required: the first second (unix time) of the range", param="start_time")
    end = _int(params, "end_time")
    end = max(now + 1, start + 1) if end is None else end  # no end_time: up to now (the whole current second)
    if end <= start:
        raise Invalid(f"'end_time' ({end}) must be after 'start_time' ({start})", param="end_time")
    width = _one(params, "bucket_width") or "1d"
    allowed = ("1d",) if kind == "costs" else tuple(WIDTHS)
    if width not in allowed:
        raise Invalid(f"'bucket_width' must be one of {', '.join(allowed)}, got '{width}'", param="bucket_width")
    default, most = COSTS_LIMIT if kind == "costs" else LIMITS[width]
    limit = _int(params, "limit")
    limit = default if limit is None else limit
    if not 1 <= limit <= most:
        raise Invalid(f"'limit' must be between 1 and {most} for bucket_width={width}, got {limit}", param="limit")
    groups = tuple(params.get("group_by") or ())
    for name in groups:
        if name not in GROUPS[kind]:
            raise Invalid(
                f"'group_by' has unknown field '{name}'; use some of: {', '.join(GROUPS[kind])}", param="group_by"
            )
    if len(set(groups)) != len(groups):
        raise Invalid("'group_by' names a field twice", param="group_by")
    batch = _one(params, "batch")
    if batch not in (None, "", "true", "false"):
        raise Invalid(f"'batch' must be true or false, got '{batch}'", param="batch")
    return OrganizationQuery(
        kind=kind,
        start_time=start,
        end_time=end,
        bucket_width=width,
        limit=limit,
        first_bucket=_page(params, start, end, WIDTHS[width]),
        group_by=groups,
        project_ids=tuple(params.get("project_ids") or ()),
        user_ids=tuple(params.get("user_ids") or ()),
        api_key_ids=tuple(parse_key_id(k, "api_key_ids") for k in params.get("api_key_ids") or ()),
        models=tuple(params.get("models") or ()),
        line_items=tuple(params.get("line_items") or ()),
        batch=None if not batch else batch == "true",
    )


def page_cursor(bucket_start: int) -> str:
    return _PAGE + base64.urlsafe_b64encode(str(bucket_start).encode()).decode().rstrip("=")


def _page(params: Mapping[str, Sequence[str]], start: int, end: int, width: int) -> int:
    page = _one(params, "page")
    if not page:
        return start
    try:
        encoded = page.removeprefix(_PAGE)
        value = int(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        value = -1
    if not page.startswith(_PAGE) or value < start or value >= end or (value - start) % width:
        raise Invalid("'page' is not a cursor of this query: pass the 'next_page' of its last answer", param="page")
    return value


def _bucket(session: Session, start: int, width: int) -> Any:
    """The bucket a record falls in: (its time - start) // width, in the database's own time arithmetic."""
    at = col(UsageRecord.created_at)
    if session.get_bind().dialect.name == "sqlite":
        return (cast(func.strftime("%s", at), Integer) - start) // width
    return cast(func.floor((func.extract("epoch", at) - start) / width), BigInteger)


def organization_page(
    *, session: Session, query: OrganizationQuery, team_ids: Collection[int] | None = None
) -> dict[str, Any]:
    """One page of ``query``'s buckets (every bucket of the page, empty ones with no results), in OpenAI's shape;
    ``team_ids``: only these teams' (projects') records (what a team's finance key may read); None: every team's."""
    width = query.width
    buckets = min(query.limit, -(-(query.end_time - query.first_bucket) // width))
    page_end = min(query.end_time, query.first_bucket + buckets * width)
    bucket = _bucket(session, query.first_bucket, width)
    keys = [_COLUMNS[name] for name in query.group_by if name != "batch"]
    cost_e8 = func.sum(cast(func.round(col(UsageRecord.cost_usd) * E8), BigInteger))
    measures: list[Any] = (
        [cost_e8]
        if query.kind == "costs"
        else [
            func.count(),
            func.sum(col(UsageRecord.prompt_tokens)),
            func.sum(col(UsageRecord.cached_tokens)),
            func.sum(col(UsageRecord.completion_tokens)),
        ]
    )
    statement = (
        select(bucket, *keys, *measures)
        .join(Team, col(Team.id) == col(UsageRecord.team_id))
        .where(
            col(UsageRecord.created_at) >= datetime.fromtimestamp(query.first_bucket, UTC),
            col(UsageRecord.created_at) < datetime.fromtimestamp(page_end, UTC),
        )
        .group_by(bucket, *keys)
    )
    if query.kind != "costs":
        statement = statement.where(
            col(UsageRecord.kind) == "inference", col(UsageRecord.endpoint).in_(ENDPOINTS[query.kind])
        )
    if query.batch:  # the gateway sends no batch jobs
        statement = statement.where(false())
    if team_ids is not None:
        statement = statement.where(col(UsageRecord.team_id).in_(sorted(team_ids)))
    for name, values in (
        ("project_id", query.project_ids),
        ("user_id", query.user_ids),
        ("api_key_id", query.api_key_ids),
        ("model", query.models),
        ("line_item", query.line_items),
    ):
        if values:
            statement = statement.where(_COLUMNS[name].in_(values))
    results: dict[int, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {n: [] for n in range(buckets)}
    for row in session.exec(statement):
        values = tuple(row)
        labels = dict(zip([n for n in query.group_by if n != "batch"], values[1 : 1 + len(keys)], strict=True))
        figures = [int(v or 0) for v in values[1 + len(keys) :]]
        result = _result(query, labels, figures)
        order = tuple((result[n] is None, str(result[n])) for n in query.group_by)
        results[int(values[0])].append((order, result))
    data = [
        {
            "object": "bucket",
            "start_time": query.first_bucket + n * width,
            "end_time": query.first_bucket + (n + 1) * width,
            "results": [result for _, result in sorted(results[n], key=lambda pair: pair[0])],
        }
        for n in range(buckets)
    ]
    more = page_end < query.end_time
    return {"object": "page", "data": data, "has_more": more, "next_page": page_cursor(page_end) if more else None}


def _result(query: OrganizationQuery, labels: dict[str, Any], figures: list[int]) -> dict[str, Any]:
    grouped = set(query.group_by)
    ids = {
        "project_id": labels.get("project_id"),
        "user_id": labels.get("user_id"),
        "api_key_id": key_label(labels["api_key_id"]) if labels.get("api_key_id") is not None else None,
    }
    if query.kind == "costs":
        (cost,) = figures
        return {
            "object": "organization.costs.result",
            "amount": {"value": float(from_e8(cost)), "currency": "usd"},
            "line_item": labels.get("line_item"),
            **ids,
            "quantity": None,
            "quantity_unit": None,
        }
    requests, input_tokens, cached, output = figures
    if query.kind == "embeddings":
        return {
            "object": "organization.usage.embeddings.result",
            "input_tokens": input_tokens,
            "num_model_requests": requests,
            **ids,
            "model": labels.get("model"),
        }
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": input_tokens,
        "input_cached_tokens": cached,
        "input_uncached_tokens": input_tokens - cached,
        "output_tokens": output,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": requests,
        **ids,
        "model": labels.get("model"),
        "batch": False if "batch" in grouped else None,
    }

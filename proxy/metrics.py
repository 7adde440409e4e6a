"""Prometheus metrics: what the gateway served per team, alias and model, and how the process is doing.

Requests, tokens, cost and latency are counted by the usage writer after each batch commits (its
``after_write``), from the very records the usage reports sum: the two agree by construction and the request
path pays nothing for them. Only the in-flight gauge and the HTTP answer counter live on the request path.

Label values are bounded: teams, aliases and models the registry knows (a set refreshed off the request
path); anything else is ``other``.

Several worker processes: start them with ``PROMETHEUS_MULTIPROC_DIR`` naming an empty directory they share
(set before the process starts: prometheus_client picks its storage on import). Each worker then writes its
values there and ``/metrics`` in any worker answers the sum over all of them.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from tunegate.config import Settings, resolve_secret
from tunegate.proxy.auth import bearer
from tunegate.proxy.errors import AuthenticationFailed, PermissionDenied
from tunegate.registry.aliases import AliasSpec
from tunegate.registry.budgets import BudgetStatus, budget_status
from tunegate.registry.finetune.retirement import days_left_by_alias
from tunegate.registry.models import Alias, AliasVersion, Team
from tunegate.registry.usage import Usage

log = logging.getLogger("tunegate.metrics")

OTHER = "other"
EXPOSITION_TYPE = "text/plain; version=0.0.4"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
_MODEL_CALLS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
_ROUTES = {
    **{path: path for path in _MODEL_CALLS},
    "/v1/models": "/v1/models",
    "/v1/usage": "/v1/usage",
    "/metrics": "/metrics",
    "/healthz": "/healthz",
    "/readyz": "/readyz",
}
_ROUTE_PREFIXES = (("/v1/models/", "/v1/models/{id}"), ("/admin/", "/admin"), ("/dashboard", "/dashboard"))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def route_of(path: str) -> str:
    """A bounded label for an HTTP path: the route it matched, never the raw path."""
    route = _ROUTES.get(path)
    if route is not None:
        return route
    for prefix, name in _ROUTE_PREFIXES:
        if path.startswith(prefix):
            return name
    return OTHER


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else OTHER


@dataclass(frozen=True)
class KnownNames:
    """The label values metrics may carry: what the registry knows at the last refresh."""

    teams: dict[int, str] = field(default_factory=dict)
    aliases: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()

    def team(self, team_id: int) -> str | None:
        return self.teams.get(team_id)


def load_budgets(engine: Engine) -> list[BudgetStatus]:
    with Session(engine) as session:
        return budget_status(session=session)


def load_days_left(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return days_left_by_alias(session=session)


def load_known_names(engine: Engine) -> KnownNames:
    with Session(engine) as session:
        teams = {team.id: team.name for team in session.exec(select(Team)) if team.id is not None}
        aliases = frozenset(session.exec(select(Alias.name)))
        models: set[str] = set()
        # Every version ever, not only current ones: a request on the previous version may still be in flight.
        for spec in session.exec(select(AliasVersion.spec)):
            parsed = AliasSpec.model_validate(spec)
            models.update(t.model for t in (parsed.target, parsed.fallback, *parsed.canary) if t is not None)
    return KnownNames(teams=teams, aliases=aliases, models=frozenset(models))


class GatewayMetrics:
    """One process's metrics. ``observe`` is the usage writer's ``after_write``."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        refresh_seconds: float | None = None,
    ) -> None:
        self._engine = engine
        self._token_ref = settings.metrics.token
        self._open = settings.metrics.open
        # Another replica's new team or alias is labelled by name within this long (at least once a second).
        self._refresh_seconds = max(1.0, refresh_seconds if refresh_seconds is not None else settings.cache.ttl_seconds)
        self._known = KnownNames()
        self._missed: set[tuple[int, str, str]] = set()
        self._budget_teams: set[str] = set()
        self._refreshed_at = 0.0
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: Callable[[], int] = lambda: 0
        self._multiprocess = multiprocess_dir()
        if self._multiprocess:
            os.makedirs(self._multiprocess, exist_ok=True)
            # Values go to files in the directory; /metrics reads all processes' files back.
            self.registry: CollectorRegistry | None = None
        else:
            self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        usage_labels = ("team", "alias", "model")
        self.requests = Counter(
            "tunegate_requests",
            "Requests that reached an alias (one per usage record), by team, alias, target model, served_by and "
            "status class.",
            (*usage_labels, "served_by", "status_class"),
            registry=r,
        )
        self.prompt_tokens = Counter("tunegate_prompt_tokens", "Prompt tokens.", usage_labels, registry=r)
        self.completion_tokens = Counter("tunegate_completion_tokens", "Completion tokens.", usage_labels, registry=r)
        self.cached_tokens = Counter(
            "tunegate_cached_tokens", "Cached prompt tokens (part of the prompt tokens).", usage_labels, registry=r
        )
        self.cost = Counter(
            "tunegate_cost_usd", "Cost in USD at the price of the request's day.", usage_labels, registry=r
        )
        self.unpriced = Counter(
            "tunegate_unpriced_requests", "Requests to a model with no price (costed at 0).", usage_labels, registry=r
        )
        self.injected_tokens = Counter(
            "tunegate_injected_prompt_tokens", "System-prompt tokens the gateway injected.", ("alias",), registry=r
        )
        self.saved_tokens = Counter(
            "tunegate_saved_prompt_tokens",
            "Fallback-prompt tokens a fine-tuned target did not need.",
            ("alias",),
            registry=r,
        )
        self.latency = Histogram(
            "tunegate_request_duration_seconds",
            "From the request's arrival to its last byte (a stream's end), by endpoint and alias.",
            ("endpoint", "alias"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tunegate_upstream_ttft_seconds",
            "Time to the first streamed token from the upstream, by alias and target model.",
            ("alias", "model"),
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "tunegate_requests_in_flight",
            "Model calls being served now.",
            ("endpoint",),
            multiprocess_mode="livesum",
            registry=r,
        )
        self.http_responses = Counter(
            "tunegate_http_responses",
            "Every HTTP answer, including those refused before reaching an alias (401, 404, 413, 429), by route.",
            ("route", "status_class"),
            registry=r,
        )
        self.pending = Gauge(
            "tunegate_usage_pending_records",
            "Usage records handed to the writer and not yet committed.",
            multiprocess_mode="livesum",
            registry=r,
        )
        # Read from the database (the same for every process): the most recent reading wins.
        self.budget_used = Gauge(
            "tunegate_budget_used_ratio",
            "Share of the team's monthly budget spent this month (1 = all of it: requests then get 429).",
            ("team",),
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.budget_spent = Gauge(
            "tunegate_budget_spent_usd",
            "The team's spend this month (UTC), as its budget counts it.",
            ("team",),
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.budget_limit = Gauge(
            "tunegate_budget_usd", "The team's monthly budget.", ("team",), multiprocess_mode="mostrecent", registry=r
        )
        self.budget_threshold = Gauge(
            "tunegate_budget_soft_threshold_ratio",
            "The share of the budget at which the team's spend alert fires.",
            ("team",),
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.days_left = Gauge(
            "tunegate_alias_target_days_left",
            "Days until the first serving target of the alias reaches its upstream's shutdown date (negative: past;"
            " the alias then serves its fallback).",
            ("alias",),
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self._retiring: set[str] = set()
        # Label children, looked up once per label combination.
        self._usage_children: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._request_children: dict[tuple[str, ...], Any] = {}
        self._alias_children: dict[str, tuple[Any, Any]] = {}
        self._latency_children: dict[tuple[str, str], Any] = {}
        self._ttft_children: dict[tuple[str, str], Any] = {}
        self._in_flight_children = {endpoint: self.in_flight.labels(endpoint) for endpoint in _MODEL_CALLS.values()}
        self._http_children: dict[tuple[str, str], Any] = {}

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, pending: Callable[[], int]) -> None:
        """Start the refresher: known names and budgets from the database, the writer's backlog."""
        self._pending = pending
        self._thread = threading.Thread(target=self._run, name="tunegate-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._multiprocess:
            prometheus_multiprocess.mark_process_dead(os.getpid(), self._multiprocess)  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        next_refresh = 0.0
        while True:
            self.pending.set(self._pending())
            if time.monotonic() >= next_refresh:
                self.refresh()
                next_refresh = time.monotonic() + self._refresh_seconds
            if self._stop.wait(1.0):
                return

    def refresh(self) -> None:
        """Re-read the known names and the budgets. Runs off the request path; a failure keeps the old ones."""
        with self._refresh_lock:
            self._refreshed_at = time.monotonic()
            try:
                self._known = load_known_names(self._engine)
            except Exception:
                log.exception("refreshing the metric label names failed; keeping the previous ones")
            try:
                budgets = load_budgets(self._engine)
            except Exception:
                log.exception("reading the budgets for metrics failed")
            else:
                gauges = (self.budget_used, self.budget_spent, self.budget_limit, self.budget_threshold)
                for team in self._budget_teams - {budget.team for budget in budgets}:  # a budget removed
                    for gauge in gauges:
                        gauge.remove(team)
                self._budget_teams = {budget.team for budget in budgets}
                for budget in budgets:
                    self.budget_used.labels(budget.team).set(budget.used_pct / 100)
                    self.budget_spent.labels(budget.team).set(float(budget.spent_usd))
                    self.budget_limit.labels(budget.team).set(float(budget.budget_usd))
                    self.budget_threshold.labels(budget.team).set(budget.soft_threshold_pct / 100)
            try:
                days_left = load_days_left(self._engine)
            except Exception:
                log.exception("reading the aliases' retirement dates for metrics failed")
            else:
                for alias in self._retiring - set(days_left):
                    self.days_left.remove(alias)
                self._retiring = set(days_left)
                for alias, days in days_left.items():
                    self.days_left.labels(alias).set(days)

    def _refresh_for(self, names: tuple[int, str, str]) -> None:
        # Names not seen yet (a team made a moment ago on another replica): look again, at most once a second
        # and once per combination, so a steady stream of names the registry does not know costs nothing.
        if names in self._missed or time.monotonic() - self._refreshed_at < 1.0:
            return
        if len(self._missed) > 10_000:
            self._missed.clear()
        self._missed.add(names)
        self.refresh()

    # -- label values ----------------------------------------------------------------------------------
    def _labels(self, record: Usage) -> tuple[str, str, str]:
        known = self._known
        team = known.team(record.team_id)
        if team is None or record.alias not in known.aliases or record.model not in known.models:
            self._refresh_for((record.team_id, record.alias, record.model))
            known = self._known
            team = known.team(record.team_id)
        return (
            team or OTHER,
            record.alias if record.alias in known.aliases else OTHER,
            record.model if record.model in known.models else OTHER,
        )

    # -- counting --------------------------------------------------------------------------------------
    def observe(self, records: Sequence[Usage]) -> None:
        """Count a committed batch of usage records (the usage writer's ``after_write``)."""
        for record in records:
            try:
                self._observe(record)
            except Exception:
                log.exception("counting usage record %s in metrics failed", record.request_id)

    def _observe(self, record: Usage) -> None:
        team, alias, model = labels = self._labels(record)
        usage = self._usage_children.get(labels)
        if usage is None:
            usage = tuple(
                metric.labels(team, alias, model)
                for metric in (self.prompt_tokens, self.completion_tokens, self.cached_tokens, self.cost, self.unpriced)
            )
            self._usage_children[labels] = usage
        prompt, completion, cached, cost, unpriced = usage
        # As the usage report counts: tokens and cost of every record, but a training job is not a request.
        inference = record.kind != "training"
        if inference:
            served_by = record.served_by if record.served_by in ("model", "fallback", "canary") else OTHER
            request_key = (*labels, served_by, status_class(record.status_code))
            requests = self._request_children.get(request_key)
            if requests is None:
                requests = self._request_children[request_key] = self.requests.labels(*request_key)
            requests.inc()
        if record.prompt_tokens:
            prompt.inc(record.prompt_tokens)
        if record.completion_tokens:
            completion.inc(record.completion_tokens)
        if record.cached_tokens:
            cached.inc(record.cached_tokens)
        if record.cost_usd:
            cost.inc(float(record.cost_usd))
        if not record.priced:
            unpriced.inc()
        if record.injected_tokens or record.saved_tokens:
            by_alias = self._alias_children.get(alias)
            if by_alias is None:
                by_alias = (self.injected_tokens.labels(alias), self.saved_tokens.labels(alias))
                self._alias_children[alias] = by_alias
            if record.injected_tokens:
                by_alias[0].inc(record.injected_tokens)
            if record.saved_tokens:
                by_alias[1].inc(record.saved_tokens)
        if not inference:
            return
        endpoint = record.endpoint if record.endpoint in self._in_flight_children else OTHER
        latency = self._latency_children.get((endpoint, alias))
        if latency is None:
            latency = self._latency_children[(endpoint, alias)] = self.latency.labels(endpoint, alias)
        latency.observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            ttft = self._ttft_children.get((alias, model))
            if ttft is None:
                ttft = self._ttft_children[(alias, model)] = self.ttft.labels(alias, model)
            ttft.observe(record.ttft_ms / 1000)

    # -- the request path ------------------------------------------------------------------------------
    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware: in-flight model calls (a stream until its end) and every HTTP answer by route."""

        async def metered(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            path = scope["path"]
            route = route_of(path)
            status = 500  # what the client sees when the app fails before answering
            endpoint = _MODEL_CALLS.get(path) if scope["method"] == "POST" else None
            in_flight = self._in_flight_children[endpoint] if endpoint is not None else None

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            if in_flight is not None:
                in_flight.inc()
            try:
                await app(scope, receive, send_status)
            finally:
                if in_flight is not None:
                    in_flight.dec()
                key = (route, status_class(status))
                counter = self._http_children.get(key)
                if counter is None:
                    counter = self._http_children[key] = self.http_responses.labels(*key)
                counter.inc()

        return metered

    # -- exposition ------------------------------------------------------------------------------------
    def check_token(self, authorization: str | None) -> None:
        """/metrics shows every team's figures: a token is wanted unless ``metrics.open`` says otherwise."""
        if self._token_ref is None:
            if self._open:
                return
            raise PermissionDenied(
                "/metrics needs a token: set TUNEGATE_METRICS_TOKEN in the gateway's environment (or metrics.token:"
                " $ENV_NAME in its configuration) and scrape with 'Authorization: Bearer <its value>';"
                " or set metrics.open: true for a scraper on a private network.",
                code="metrics_token_unset",
            )
        expected = resolve_secret(self._token_ref)
        if not expected:
            raise PermissionDenied(
                f"/metrics is protected by {self._token_ref}, which is not set in the gateway's environment.",
                code="metrics_token_unset",
            )
        given = bearer(authorization)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise AuthenticationFailed("Incorrect metrics token provided.")

    def exposition(self) -> bytes:
        self.pending.set(self._pending())
        if self.registry is not None:
            return bytes(generate_latest(self.registry))
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=self._multiprocess)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))


@get("/metrics", tags=["health"], include_in_schema=False)
async def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    metrics: GatewayMetrics = request.app.state.gateway.metrics
    metrics.check_token(request.headers.get("authorization"))
    # The classic text format every Prometheus reads (litestar adds "; charset=utf-8").
    return Response(metrics.exposition(), media_type=EXPOSITION_TYPE, headers={"cache-control": "no-store"})

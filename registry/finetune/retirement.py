"""Model retirement: the shutdown dates upstreams announce in ``GET /v1/models``, and the aliases they touch.

The retirement watch (``proxy/finetune/background.py``) stores what each upstream says; the request path asks
:class:`ShutdownDates` whether a target is past its date, so an alias serves its fallback at once instead of
failing first; :func:`days_left_by_alias` is what a gauge of days left reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_, delete
from sqlmodel import Session, col, select

from tunegate.registry.aliases import AliasSpec, Target
from tunegate.registry.models import Alias, AliasVersion, Team, UpstreamModel, utcnow


def today() -> date:
    return utcnow().date()


class ShutdownDates:
    """(upstream, model) → shutdown date, in memory: the request path's view, refreshed by the watch."""

    def __init__(self, dates: Mapping[tuple[str, str], date] | None = None) -> None:
        self._dates: dict[tuple[str, str], date] = dict(dates or {})

    def replace(self, dates: Mapping[tuple[str, str], date]) -> None:
        self._dates = dict(dates)  # one assignment: a reader on another thread sees the old or the new table

    def get(self, upstream: str, model: str) -> date | None:
        return self._dates.get((upstream, model))

    def passed(self, upstream: str, model: str, on: date | None = None) -> bool:
        """True from the shutdown day on: the model no longer answers that day."""
        shutdown = self._dates.get((upstream, model))
        return shutdown is not None and shutdown <= (on or today())


def parse_shutdown(value: Any) -> date | None:
    """``shutdown_date`` as an upstream may give it: an ISO date (or date-time) string, or a Unix timestamp."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).date()
    if isinstance(value, str) and len(value) >= 10:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def record_shutdown_dates(*, session: Session, upstream: str, dates: Mapping[str, date]) -> None:
    """Make the stored dates of ``upstream`` exactly ``dates`` (a model whose date went away is forgotten)."""
    rows = {row.model: row for row in session.exec(select(UpstreamModel).where(UpstreamModel.upstream == upstream))}
    gone = [model for model in rows if model not in dates]
    if gone:
        session.exec(
            delete(UpstreamModel).where(
                and_(col(UpstreamModel.upstream) == upstream, col(UpstreamModel.model).in_(gone))
            )
        )
    now = utcnow()
    for model, shutdown in dates.items():
        row = rows.get(model) or UpstreamModel(upstream=upstream, model=model, shutdown_date=shutdown)
        row.shutdown_date, row.checked_at = shutdown, now
        session.add(row)
    session.flush()


def load_shutdown_dates(*, session: Session) -> dict[tuple[str, str], date]:
    return {(row.upstream, row.model): row.shutdown_date for row in session.exec(select(UpstreamModel))}


@dataclass(frozen=True)
class Retirement:
    """One alias target with a shutdown date inside the window (or past it)."""

    alias: str
    team: str | None  # the owning team; None: a global alias
    version: int
    role: str  # target | canary | fallback
    upstream: str
    model: str
    shutdown_date: date
    days_left: int  # negative once past
    fallback: str | None  # the model that serves once the target is retired

    @property
    def retired(self) -> bool:
        return self.days_left <= 0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(shutdown_date=self.shutdown_date.isoformat(), retired=self.retired)
        return data


def _live_aliases(session: Session) -> list[tuple[Alias, int, AliasSpec, str | None]]:
    rows = session.exec(
        select(Alias, AliasVersion, Team)
        .join(
            AliasVersion,
            and_(col(AliasVersion.alias_id) == col(Alias.id), col(AliasVersion.version) == col(Alias.current_version)),
        )
        .join(Team, col(Team.id) == col(Alias.team_id), isouter=True)
    ).all()
    return [
        (alias, version.version, AliasSpec.model_validate(version.spec), team.name if team else None)
        for alias, version, team in rows
        if getattr(alias, "deleted_at", None) is None
    ]


def _roles(spec: AliasSpec) -> list[tuple[str, Target]]:
    roles: list[tuple[str, Target]] = [("target", spec.target), *(("canary", c) for c in spec.canary)]
    return roles + ([("fallback", spec.fallback)] if spec.fallback else [])


def retirements(*, session: Session, window_days: int, on: date | None = None) -> list[Retirement]:
    """Every alias target (target, canary or fallback) that retires within ``window_days`` or has retired."""
    day = on or today()
    dates = load_shutdown_dates(session=session)
    found = []
    for alias, version, spec, team in _live_aliases(session):
        for role, target in _roles(spec):
            shutdown = dates.get((target.upstream, target.model))
            if shutdown is None or (shutdown - day).days > window_days:
                continue
            found.append(
                Retirement(
                    alias=alias.name,
                    team=team,
                    version=version,
                    role=role,
                    upstream=target.upstream,
                    model=target.model,
                    shutdown_date=shutdown,
                    days_left=(shutdown - day).days,
                    fallback=spec.fallback.model if spec.fallback and role != "fallback" else None,
                )
            )
    return sorted(found, key=lambda r: (r.days_left, r.alias, r.team or "", r.role))


def days_left_by_alias(*, session: Session, on: date | None = None) -> dict[str, int]:
    """Alias name → days until the first of its serving targets (target or canary) shuts down; aliases whose
    targets announce no date are left out. Team aliases sharing a name count under that name, soonest first."""
    day = on or today()
    dates = load_shutdown_dates(session=session)
    left: dict[str, int] = {}
    for alias, _version, spec, _team in _live_aliases(session):
        for role, target in _roles(spec):
            shutdown = dates.get((target.upstream, target.model))
            if role != "fallback" and shutdown is not None:
                days = (shutdown - day).days
                left[alias.name] = min(days, left.get(alias.name, days))
    return left

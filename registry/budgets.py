"""Budgets and rate limits as an admin sets them: a team's monthly budget and its alert, requests and tokens per
minute for a team or a key; what the request path reads of them for one caller (:func:`caller_limits`), the
alerts it notes, and :func:`budget_status`, the read side for reports and metrics. The counters they are checked
against are :mod:`tunegate.registry.counters`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from sqlmodel import Session, col, select

from tunegate.registry.audit import record as audit
from tunegate.registry.costing import from_e8, money, to_e8
from tunegate.registry.counters import dialect_insert, dialect_name, key_scope, month_of, team_scope
from tunegate.registry.errors import Invalid, NotFound
from tunegate.registry.models import ApiKey, BudgetAlert, RateLimit, Team, TeamBudget, TeamSpend, utcnow
from tunegate.registry.teams import get_team

State = Literal["ok", "soft", "hard"]


# -- what the request path needs to know about one caller -------------------------------------------------


@dataclass(frozen=True)
class Budget:
    team_id: int
    monthly_usd: Decimal
    soft_pct: int
    alert_webhook: str | None

    @property
    def hard_e8(self) -> int:
        return to_e8(self.monthly_usd)

    @property
    def soft_e8(self) -> int:
        return self.hard_e8 * self.soft_pct // 100

    def state(self, spent_e8: int) -> State:
        return "hard" if spent_e8 >= self.hard_e8 else "soft" if spent_e8 >= self.soft_e8 else "ok"


@dataclass(frozen=True)
class Rate:
    scope: str  # team:<id> | key:<id>
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True)
class CallerLimits:
    budget: Budget | None
    rates: tuple[Rate, ...]  # the team's and the key's, where set

    @property
    def tpm_scopes(self) -> tuple[str, ...]:
        return tuple(rate.scope for rate in self.rates if rate.tpm is not None)


def caller_limits(*, session: Session, team_id: int, key_id: int) -> CallerLimits:
    row = session.get(TeamBudget, team_id)
    budget = Budget(team_id, Decimal(row.monthly_usd), row.soft_pct, row.alert_webhook) if row is not None else None
    scopes = [team_scope(team_id), key_scope(key_id)]
    found = {r.scope: r for r in session.exec(select(RateLimit).where(col(RateLimit.scope).in_(scopes))).all()}
    rates = tuple(Rate(s, found[s].rpm, found[s].tpm) for s in scopes if s in found)
    return CallerLimits(budget, rates)


# -- settings (the admin API) -----------------------------------------------------------------------------


MAX_MONTHLY_USD = Decimal(10**12)  # the column is NUMERIC(20, 8): 12 digits before the point
MAX_RATE = 2**31 - 1  # rpm and tpm are INTEGER columns


def set_budget(
    *,
    session: Session,
    team: str,
    monthly_usd: Decimal,
    soft_pct: int = 80,
    alert_webhook: str | None = None,
    actor: str,
) -> TeamBudget:
    if not monthly_usd.is_finite() or monthly_usd <= 0:
        raise Invalid("'monthly_usd' must be a positive amount (to stop a team, disable it)", param="monthly_usd")
    if monthly_usd.as_tuple().exponent < -8:  # type: ignore[operator]
        raise Invalid("'monthly_usd' has at most 8 decimal places", param="monthly_usd")
    if monthly_usd >= MAX_MONTHLY_USD:
        raise Invalid(f"'monthly_usd' must be less than {MAX_MONTHLY_USD:,} USD", param="monthly_usd")
    if not 1 <= soft_pct <= 100:
        raise Invalid("'soft_pct' must be between 1 and 100", param="soft_pct")
    if alert_webhook is not None and not alert_webhook.startswith(("http://", "https://")):
        raise Invalid("'alert_webhook' must be an http:// or https:// URL", param="alert_webhook")
    found = get_team(session=session, name=team)
    assert found.id is not None
    budget = session.get(TeamBudget, found.id) or TeamBudget(team_id=found.id, monthly_usd=monthly_usd)
    budget.monthly_usd, budget.soft_pct, budget.alert_webhook = monthly_usd, soft_pct, alert_webhook
    budget.updated_at = utcnow()
    session.add(budget)
    audit(
        session=session,
        actor=actor,
        action="budget.set",
        target=team,
        monthly_usd=str(monthly_usd),
        soft_pct=soft_pct,
        alert_webhook=alert_webhook,
    )
    session.flush()
    return budget


def clear_budget(*, session: Session, team: str, actor: str) -> None:
    found = get_team(session=session, name=team)
    budget = session.get(TeamBudget, found.id)
    if budget is None:
        raise NotFound(f"team '{team}' has no budget", param="team")
    session.delete(budget)
    audit(session=session, actor=actor, action="budget.clear", target=team)
    session.flush()


def _check_rate(value: int | None, param: str) -> int | None:
    if value is not None and not 1 <= value <= MAX_RATE:
        raise Invalid(f"'{param}' must be a number from 1 to {MAX_RATE} (or null for no limit)", param=param)
    return value


def set_rate_limit(
    *,
    session: Session,
    team: str | None = None,
    key_id: int | None = None,
    rpm: int | None,
    tpm: int | None,
    actor: str,
) -> RateLimit:
    """Requests and tokens per minute for a team (all its keys together) or one key; both None removes it."""
    _check_rate(rpm, "rpm")
    _check_rate(tpm, "tpm")
    if key_id is not None:
        key = session.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"no key with id {key_id}", param="key_id")
        scope, team_id, target = key_scope(key_id), key.team_id, f"key:{key_id}"
    elif team is not None:
        found = get_team(session=session, name=team)
        assert found.id is not None
        scope, team_id, target = team_scope(found.id), found.id, team
    else:
        raise Invalid("name a 'team' or a 'key_id'", param="team")
    limit = session.get(RateLimit, scope) or RateLimit(scope=scope, team_id=team_id, key_id=key_id)
    limit.rpm, limit.tpm, limit.updated_at = rpm, tpm, utcnow()
    if rpm is None and tpm is None:
        if limit in session:
            session.delete(limit)
    else:
        session.add(limit)
    audit(session=session, actor=actor, action="limit.set", target=target, rpm=rpm, tpm=tpm)
    session.flush()
    return limit


def list_rate_limits(*, session: Session) -> list[dict[str, Any]]:
    rows = session.exec(
        select(RateLimit, Team).join(Team, col(Team.id) == col(RateLimit.team_id)).order_by(col(RateLimit.scope))
    ).all()
    return [
        {
            "scope": "key" if r.key_id is not None else "team",
            "team": t.name,
            "key_id": r.key_id,
            "rpm": r.rpm,
            "tpm": r.tpm,
        }
        for r, t in rows
    ]


def record_alert(*, session: Session, team_id: int, month: str, level: str, spent_usd: Decimal) -> bool:
    """Note that ``level`` was crossed; True only for the first process to note it this month."""
    statement = (
        dialect_insert(dialect_name(session))(BudgetAlert)
        .values(team_id=team_id, month=month, level=level, spent_usd=spent_usd, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["team_id", "month", "level"])
        .returning(col(BudgetAlert.level))
    )
    return session.execute(statement).first() is not None


# -- the read side ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetStatus:
    team: str
    team_id: int
    month: str
    budget_usd: Decimal
    soft_threshold_pct: int
    spent_usd: Decimal
    used_pct: float
    state: State
    alert_webhook: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "month": self.month,
            "budget_usd": money(self.budget_usd),
            "soft_threshold_pct": self.soft_threshold_pct,
            "spent_usd": money(self.spent_usd),
            "used_pct": self.used_pct,
            "state": self.state,
        }


def budget_status(
    *, session: Session, month: str | None = None, teams: Iterable[str] | None = None
) -> list[BudgetStatus]:
    """Every team with a budget (or those named): month-to-date spend against it, for ``month`` (default: now)."""
    month = month or month_of(utcnow().date())
    query = (
        select(TeamBudget, Team, TeamSpend.spent_e8)
        .join(Team, col(Team.id) == col(TeamBudget.team_id))
        .outerjoin(TeamSpend, (col(TeamSpend.team_id) == col(TeamBudget.team_id)) & (col(TeamSpend.month) == month))
        .order_by(col(Team.name))
    )
    if teams is not None:
        query = query.where(col(Team.name).in_(list(teams)))
    result = []
    for row, team, units in session.exec(query).all():
        assert team.id is not None
        budget = Budget(team.id, Decimal(row.monthly_usd), row.soft_pct, row.alert_webhook)
        spent = int(units or 0)
        result.append(
            BudgetStatus(
                team=team.name,
                team_id=team.id,
                month=month,
                budget_usd=from_e8(budget.hard_e8),
                soft_threshold_pct=row.soft_pct,
                spent_usd=from_e8(spent),
                used_pct=round(spent * 100 / budget.hard_e8, 2),
                state=budget.state(spent),
                alert_webhook=row.alert_webhook,
            )
        )
    return result

"""Usage reports and fine-tune savings: SQL sums over the stored usage records, the same on SQLite and PostgreSQL.

Every figure is a sum of what was stored (each record costed when it was written, at its day's price), so a
report re-run later gives the same numbers. Money is summed as integers of 1e-8 USD, exactly.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, case, cast, func, nulls_last
from sqlmodel import Session, col, select

from tunegate.registry.aliases import AliasSpec, Target
from tunegate.registry.costing import E8, from_e8, money
from tunegate.registry.errors import Invalid, NotFound
from tunegate.registry.models import Alias, AliasVersion, FineTuneJob, Team, UsageRecord, utcnow
from tunegate.registry.pricing import QUANTUM, PriceTable
from tunegate.registry.prompt_counts import prompt_tokens

GROUPS = ("team", "alias", "model", "served_by", "day", "kind", "key", "user", "endpoint", "metadata.<key>")
METADATA = "metadata."  # group_by=metadata.<key>: a key of the requests' metadata (kept: usage.metadata_keys)
KEY_PREFIX = "key_"  # a gateway key's id as reports and the organization API name it: key_<id>
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_METADATA_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_PER = Decimal(1_000_000)

_COLUMNS: dict[str, Any] = {
    "team": col(Team.name),
    "alias": col(UsageRecord.alias),
    "model": col(UsageRecord.model),
    "served_by": col(UsageRecord.served_by),
    "day": col(UsageRecord.day),
    "kind": col(UsageRecord.kind),
    "key": col(UsageRecord.key_id),
    "user": col(UsageRecord.end_user),
    "endpoint": col(UsageRecord.endpoint),
}


def key_label(key_id: int | None) -> str | None:
    return None if key_id is None else f"{KEY_PREFIX}{key_id}"


def parse_key_id(value: str, param: str) -> int:
    """A key id as reports write it (``key_7``) or as the admin API does (``7``)."""
    digits = value.removeprefix(KEY_PREFIX)
    if not digits.isdigit() or len(digits) > 18:
        raise Invalid(f"'{param}' must name a key as key_<id> (e.g. key_7), got '{value}'", param=param)
    return int(digits)


def metadata_column(key: str, param: str = "group_by") -> Any:
    """The value of one key of the records' kept metadata (NULL where a record has none)."""
    if not _METADATA_KEY.fullmatch(key):
        raise Invalid(f"'{param}' names a metadata key that cannot be one: '{key}'", param=param)
    return col(UsageRecord.request_metadata)[key].as_string()


def _column(name: str) -> Any:
    if name.startswith(METADATA):
        return metadata_column(name[len(METADATA) :])
    return _COLUMNS[name]


def parse_day(value: str | None, param: str) -> date | None:
    if value is None or value == "":
        return None
    if not _DAY.fullmatch(value):
        raise Invalid(f"'{param}' must be a date as YYYY-MM-DD, got '{value}'", param=param)
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise Invalid(f"'{param}' is not a valid date ({exc}): '{value}'", param=param) from None


def month_range(day: date) -> tuple[date, date]:
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following - timedelta(days=1)


def parse_range(start: str | None, end: str | None) -> tuple[date, date]:
    """``from``/``to`` (inclusive days); a missing ``to`` is the end of the current month, a missing ``from``
    the first day of ``to``'s month."""
    first = parse_day(start, "from")
    last = parse_day(end, "to") or month_range(utcnow().date())[1]
    first = first or last.replace(day=1)
    if first > last:
        raise Invalid(f"'from' ({first}) is after 'to' ({last})", param="from")
    return first, last


def parse_group_by(value: str | None, default: Sequence[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(default)
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    if not names:
        raise Invalid(f"'group_by' names no field; use some of: {', '.join(GROUPS)}", param="group_by")
    for name in names:
        if name.startswith(METADATA):
            metadata_column(name[len(METADATA) :])
        elif name not in _COLUMNS:
            raise Invalid(f"'group_by' has unknown field '{name}'; use some of: {', '.join(GROUPS)}", param="group_by")
    if len(set(names)) != len(names):
        raise Invalid("'group_by' names a field twice", param="group_by")
    return names


@dataclass(frozen=True)
class Totals:
    requests: int = 0  # inference records (a training job is not a request; its cost is in cost_usd)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    injected_tokens: int = 0
    saved_tokens: int = 0
    cost_e8: int = 0
    unpriced_requests: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def cost_usd(self) -> Decimal:
        return from_e8(self.cost_e8)

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "injected_tokens": self.injected_tokens,
            "saved_tokens": self.saved_tokens,
            "cost_usd": money(self.cost_usd),
            "unpriced_requests": self.unpriced_requests,
        }


MEASURES = tuple(Totals().as_json())  # the figures of each report row, in their order


@dataclass(frozen=True)
class UsageReport:
    start: date
    end: date
    group_by: tuple[str, ...]
    rows: list[tuple[dict[str, str | None], Totals]]  # a record without the key, user or metadata: None
    totals: Totals

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "usage.report",
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "group_by": list(self.group_by),
            "data": [{**keys, **totals.as_json()} for keys, totals in self.rows],
            "totals": self.totals.as_json(),
        }

    def as_csv(self) -> str:
        """The rows under a header line, then a totals row (``total`` in the first column)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*self.group_by, *MEASURES])
        for keys, totals in self.rows:
            writer.writerow([*(keys[g] or "" for g in self.group_by), *totals.as_json().values()])
        blanks = [""] * max(0, len(self.group_by) - 1)
        writer.writerow(["total", *blanks, *self.totals.as_json().values()])
        return out.getvalue()


def _measures() -> list[Any]:
    inference = case((col(UsageRecord.kind) == "inference", 1), else_=0)
    unpriced = case((col(UsageRecord.priced).is_(False), 1), else_=0)
    cost_e8 = cast(func.round(col(UsageRecord.cost_usd) * E8), BigInteger)
    return [
        func.sum(inference),
        func.sum(col(UsageRecord.prompt_tokens)),
        func.sum(col(UsageRecord.completion_tokens)),
        func.sum(col(UsageRecord.cached_tokens)),
        func.sum(col(UsageRecord.injected_tokens)),
        func.sum(col(UsageRecord.saved_tokens)),
        func.sum(cost_e8),
        func.sum(unpriced),
    ]


def _totals(values: Sequence[Any]) -> Totals:
    return Totals(*(int(v or 0) for v in values))


def usage_report(
    *,
    session: Session,
    start: date,
    end: date,
    group_by: Sequence[str],
    team_id: int | None = None,
    team: str | None = None,
    team_ids: Collection[int] | None = None,
    alias: str | None = None,
    model: str | None = None,
    key_id: int | None = None,
    user: str | None = None,
    endpoint: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> UsageReport:
    """Usage between ``start`` and ``end`` (inclusive days), summed per distinct ``group_by`` values (a record
    whose key, user or metadata key is missing makes a group of its own, labelled None). ``team_ids``: only
    these teams' records (what a team's finance key may read); None: every team's."""
    keys = [_column(name) for name in group_by]
    query = (
        select(*keys, *_measures())
        .join(Team, col(Team.id) == col(UsageRecord.team_id))
        .where(col(UsageRecord.day) >= start, col(UsageRecord.day) <= end)
    )
    if team_id is not None:
        query = query.where(col(UsageRecord.team_id) == team_id)
    if team is not None:
        query = query.where(col(Team.name) == team)
    if team_ids is not None:
        query = query.where(col(UsageRecord.team_id).in_(sorted(team_ids)))
    if alias is not None:
        query = query.where(col(UsageRecord.alias) == alias)
    if model is not None:
        query = query.where(col(UsageRecord.model) == model)
    if key_id is not None:
        query = query.where(col(UsageRecord.key_id) == key_id)
    if user is not None:
        query = query.where(col(UsageRecord.end_user) == user)
    if endpoint is not None:
        query = query.where(col(UsageRecord.endpoint) == endpoint)
    for name, value in (metadata or {}).items():
        query = query.where(metadata_column(name, f"{METADATA}{name}") == value)
    if keys:
        query = query.group_by(*keys).order_by(*(nulls_last(key) for key in keys))  # None last on both databases
    rows = []
    total = Totals()
    for row in session.exec(query).all():
        values = tuple(row)
        if not keys and values[0] is None:
            break  # no records at all: SUM over nothing
        totals = _totals(values[len(keys) :])
        labels = {name: _label(name, value) for name, value in zip(group_by, values[: len(keys)], strict=True)}
        rows.append((labels, totals))
        total += totals
    return UsageReport(start, end, tuple(group_by), rows, total)


def _label(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if name == "key":
        return key_label(int(value))
    return value.isoformat() if isinstance(value, date) else str(value)


# -- does the fine-tune pay off? ----------------------------------------------------------------------------


@dataclass
class _Side:
    """Requests of one kind (served by the fine-tune, or by the base model with the injected prompt): their
    totals, and how many of them each model served."""

    totals: Totals = field(default_factory=Totals)
    models: dict[str, int] = field(default_factory=dict)

    def add(self, model: str, values: Sequence[int]) -> None:
        self.totals += Totals(*values)
        self.models[model] = self.models.get(model, 0) + values[0]

    def json(self) -> dict[str, Any]:
        t = self.totals
        return {
            "requests": t.requests,
            "models": dict(sorted(self.models.items())),
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "cached_tokens": t.cached_tokens,
            "cost_usd": money(t.cost_usd),
            "unpriced_requests": t.unpriced_requests,
        }


def _money(value: Decimal) -> str:
    return money(value.quantize(QUANTUM))


def _alias_spec(session: Session, name: str, team: str | None, team_ids: Collection[int] | None) -> AliasSpec | None:
    query = select(Alias, AliasVersion).join(
        AliasVersion,
        (col(AliasVersion.alias_id) == col(Alias.id)) & (col(AliasVersion.version) == col(Alias.current_version)),
    )
    if team_ids is not None:  # the global alias, or these teams' own
        query = query.where(col(Alias.team_id).is_(None) | col(Alias.team_id).in_(sorted(team_ids)))
    rows = session.exec(query.where(col(Alias.name) == name)).all()
    team_id = None
    if team is not None:
        found = session.exec(select(Team).where(Team.name == team)).first()
        team_id = found.id if found is not None else -1
    # The team's own alias first, else the global one, else (no team named) any team's.
    ranked = sorted(rows, key=lambda r: (r[0].team_id != team_id, r[0].team_id is not None))
    return AliasSpec.model_validate(ranked[0][1].spec) if ranked else None


def savings(
    *,
    session: Session,
    prices: PriceTable,
    alias: str,
    team: str | None = None,
    team_ids: Collection[int] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, Any]:
    """Requests of ``alias`` served by its fine-tuned model versus by a base model with the injected prompt;
    the prompt tokens the injection cost and the fine-tune saved; the same traffic priced at each target's
    prices; the training cost of the fine-tune; and the requests it takes to earn that back. ``team_ids``: only
    these teams' traffic and aliases (another team's alias is not found); None: every team's."""
    spec = _alias_spec(session, alias, team, team_ids)
    prompted = (col(UsageRecord.served_by) == "fallback") | (col(UsageRecord.injected_tokens) > 0)
    query = (
        select(col(UsageRecord.day), col(UsageRecord.model), prompted, *_measures())
        .join(Team, col(Team.id) == col(UsageRecord.team_id))
        .where(
            col(UsageRecord.alias) == alias,
            col(UsageRecord.kind) == "inference",
            col(UsageRecord.status_code) < 400,
        )
        .group_by(col(UsageRecord.day), col(UsageRecord.model), prompted)
    )
    if team is not None:
        query = query.where(col(Team.name) == team)
    if team_ids is not None:
        query = query.where(col(UsageRecord.team_id).in_(sorted(team_ids)))
    if start is not None:
        query = query.where(col(UsageRecord.day) >= start)
    if end is not None:
        query = query.where(col(UsageRecord.day) <= end)
    rows: list[tuple[date, str, bool, list[int]]] = []
    for row in session.exec(query):
        raw: tuple[Any, ...] = tuple(row)
        rows.append((raw[0], str(raw[1]), bool(raw[2]), [int(v or 0) for v in raw[3:]]))
    if spec is None and not rows:
        raise NotFound(f"no alias named '{alias}' and no usage recorded for it", param="alias")

    tuned, based = _Side(), _Side()
    for _day, model, is_prompted, values in rows:
        (based if is_prompted else tuned).add(model, values)

    fine_tuned_model, base = _targets(spec, tuned, based)
    base_prompt_tokens = _prompt_tokens(session, base, tuned, based)

    # The prompt tokens each side cost or saved, valued at the input price of the model that needs them.
    injected_usd = saved_usd = Decimal(0)
    unvalued: set[str] = set()
    at_tuned = at_base = Decimal(0)
    content_requests = 0
    for day, model, is_prompted, values in rows:
        n, prompt, completion, _cached, injected, saved = values[:6]
        served_entry = prices.price_for(model, day)
        base_entry = prices.price_for(base.model, day) if base is not None else None
        tuned_entry = prices.price_for(fine_tuned_model, day) if fine_tuned_model is not None else None
        if is_prompted and injected:
            if served_entry is None:
                unvalued.add(model)
            else:
                injected_usd += injected * served_entry.input / _PER
        if not is_prompted and saved and base is not None:
            if base_entry is None:
                unvalued.add(base.model)
            else:
                saved_usd += saved * base_entry.input / _PER
        # The same traffic at each target's prices: the client's own prompt (without what was injected),
        # plus the base target's prompt where the base model serves.
        content = prompt - injected
        content_requests += n
        if fine_tuned_model is not None:
            if tuned_entry is None:
                unvalued.add(fine_tuned_model)
            else:
                at_tuned += (content * tuned_entry.input + completion * tuned_entry.output) / _PER
        if base is not None:
            if base_entry is None:
                unvalued.add(base.model)
            else:
                tokens = content + n * base_prompt_tokens
                at_base += (tokens * base_entry.input + completion * base_entry.output) / _PER

    training = _training(session, alias, fine_tuned_model, team, team_ids)
    training_usd = from_e8(training["cost_e8"])
    per_request_saving = (
        (at_base - at_tuned) / content_requests
        if content_requests and fine_tuned_model is not None and base is not None
        else None
    )
    break_even = None
    if per_request_saving is not None and per_request_saving > 0:
        break_even = math.ceil(training_usd / per_request_saving) if training_usd else 0
    return {
        "object": "alias.savings",
        "alias": alias,
        "team": team,
        "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None,
        "fine_tuned_model": fine_tuned_model,
        "base_model": base.model if base else None,
        "base_prompt_tokens": base_prompt_tokens,
        "fine_tuned": {
            **tuned.json(),
            "saved_tokens": tuned.totals.saved_tokens,
            "saved_usd": _money(saved_usd),
        },
        "base_with_prompt": {
            **based.json(),
            "injected_tokens": based.totals.injected_tokens,
            "injected_usd": _money(injected_usd),
        },
        "at_prices": {
            "requests": content_requests,
            "fine_tuned_usd": _money(at_tuned) if fine_tuned_model else None,
            "base_with_prompt_usd": _money(at_base) if base else None,
            "difference_usd": _money(at_base - at_tuned) if fine_tuned_model and base else None,
            "difference_per_request_usd": _money(per_request_saving) if per_request_saving is not None else None,
        },
        "training": {
            "records": training["records"],
            "trained_tokens": training["tokens"],
            "cost_usd": money(training_usd),
        },
        "break_even_requests": break_even,
        "paid_off": break_even is not None and tuned.totals.requests >= break_even,
        "unpriced_models": sorted(unvalued),
    }


def _targets(spec: AliasSpec | None, tuned: _Side, based: _Side) -> tuple[str | None, Target | None]:
    """The fine-tuned model and the base target (model + prompt) to compare: the alias's current version
    where it says, else the models that served most."""
    fine_tuned: str | None = None
    base: Target | None = None
    if spec is not None:
        if spec.target.system_prompt is None:
            fine_tuned = spec.target.model
        else:
            base = spec.target
        if spec.fallback is not None and spec.fallback.system_prompt:
            base = spec.fallback
    if fine_tuned is None and tuned.models:
        fine_tuned = max(tuned.models, key=lambda m: tuned.models[m])
    if base is None and based.models:
        base = Target(upstream="", model=max(based.models, key=lambda m: based.models[m]))
    return fine_tuned, base


def _prompt_tokens(session: Session, base: Target | None, tuned: _Side, based: _Side) -> int:
    if base is not None and base.system_prompt:
        return prompt_tokens(session=session, prompt=base.system_prompt, model=base.model)
    if based.totals.requests and based.totals.injected_tokens:
        return based.totals.injected_tokens // based.totals.requests
    if tuned.totals.requests and tuned.totals.saved_tokens:
        return tuned.totals.saved_tokens // tuned.totals.requests
    return 0


def _training(
    session: Session, alias: str, fine_tuned_model: str | None, team: str | None, team_ids: Collection[int] | None
) -> dict[str, int]:
    """Training records of the job that produced the fine-tune (the job whose ``fine_tuned_model`` it is);
    failing that, training records naming the fine-tuned model, or the alias."""
    measures = (
        func.count(),
        func.sum(col(UsageRecord.prompt_tokens)),
        func.sum(cast(func.round(col(UsageRecord.cost_usd) * E8), BigInteger)),
    )
    base = (
        select(*measures)
        .join(Team, col(Team.id) == col(UsageRecord.team_id))
        .where(col(UsageRecord.kind) == "training")
    )
    if team is not None:
        base = base.where(col(Team.name) == team)
    if team_ids is not None:
        base = base.where(col(UsageRecord.team_id).in_(sorted(team_ids)))
    conditions = [col(UsageRecord.alias) == alias]
    if fine_tuned_model is not None:
        jobs = select(func.substr(col(FineTuneJob.id), 1, 64)).where(
            col(FineTuneJob.fine_tuned_model) == fine_tuned_model
        )
        conditions[:0] = [col(UsageRecord.request_id).in_(jobs), col(UsageRecord.model) == fine_tuned_model]
    for condition in conditions:
        count, tokens, cost = session.exec(base.where(condition)).one()
        if count:
            return {"records": int(count), "tokens": int(tokens or 0), "cost_e8": int(cost or 0)}
    return {"records": 0, "tokens": 0, "cost_e8": 0}

"""The price table (``config/prices.yaml``): strict loading into :class:`PriceEntry` rows.

Money is :class:`~decimal.Decimal`, parsed from the YAML scalar's text so ``0.075`` stays exactly 0.075.
Every validation error is a :class:`PriceTableError` naming the file, the entry (index, model) and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn

import yaml

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")

_REQUIRED = ("model", "effective", "input", "output")
_OPTIONAL = ("cached_input", "training")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class PriceTableError(ValueError):
    """The price table is unreadable or an entry is invalid."""


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One row: USD per 1M tokens for ``model`` (an exact id or an fnmatch glob) from ``effective`` on."""

    model: str
    effective: date
    input: Decimal
    cached_input: Decimal | None
    output: Decimal
    training: Decimal | None

    @property
    def is_pattern(self) -> bool:
        return any(ch in self.model for ch in "*?[")


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as text, so a bad date is reported per entry rather than by PyYAML."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _fail(label: str, field: str, message: str) -> NoReturn:
    raise PriceTableError(f"{label}: field {field!r} {message}")


def _money(raw: dict[str, Any], field: str, label: str) -> Decimal:
    value = raw[field]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        _fail(label, field, f"must be a number, got {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        _fail(label, field, f"must be a number, got {value!r}")
    if not amount.is_finite():
        _fail(label, field, f"must be a finite number, got {value!r}")
    if amount < 0:
        _fail(label, field, f"must not be negative, got {value!r}")
    return amount


def _day(value: Any, label: str) -> date:
    if not (isinstance(value, str) and _DATE.fullmatch(value.strip())):
        _fail(label, "effective", f"must be an ISO date YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        _fail(label, "effective", f"is not a valid date ({exc}), got {value!r}")


def _entry(raw: Any, index: int, where: str) -> PriceEntry:
    label = f"{where}: prices[{index}]"
    if not isinstance(raw, dict):
        raise PriceTableError(f"{label}: must be a mapping, got {type(raw).__name__}")
    model = raw.get("model")
    if isinstance(model, str) and model.strip():
        label += f" ({model!r})"
    for key in raw:
        if key not in _REQUIRED + _OPTIONAL:
            _fail(label, str(key), f"is unknown (allowed: {', '.join(_REQUIRED + _OPTIONAL)})")
    for key in _REQUIRED:
        if raw.get(key) is None:
            _fail(label, key, "is required")
    if not isinstance(model, str) or not model.strip() or model != model.strip():
        _fail(label, "model", f"must be a model id or pattern without surrounding spaces, got {model!r}")
    return PriceEntry(
        model=model,
        effective=_day(raw["effective"], label),
        input=_money(raw, "input", label),
        cached_input=_money(raw, "cached_input", label) if raw.get("cached_input") is not None else None,
        output=_money(raw, "output", label),
        training=_money(raw, "training", label) if raw.get("training") is not None else None,
    )


def load_prices(path: Path | None = None) -> list[PriceEntry]:
    """Read and validate a price table; ``None`` reads the shipped ``config/prices.yaml``."""
    path = DEFAULT_PRICES if path is None else path
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader subclass
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PriceTableError(f"{path}: cannot read price table: {exc}") from exc
    rows = document.get("prices") if isinstance(document, dict) and set(document) == {"prices"} else None
    if not isinstance(rows, list):
        raise PriceTableError(f"{path}: must be a mapping with exactly one key 'prices' holding a list")
    entries: list[PriceEntry] = []
    seen: dict[tuple[str, date], int] = {}
    for index, raw in enumerate(rows):
        entry = _entry(raw, index, str(path))
        first = seen.setdefault((entry.model, entry.effective), index)
        if first != index:
            raise PriceTableError(
                f"{path}: prices[{index}] ({entry.model!r}): field 'effective' {entry.effective.isoformat()} "
                f"duplicates prices[{first}] (same model and effective date)"
            )
        entries.append(entry)
    return entries

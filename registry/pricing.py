"""Cost of requests and fine-tuning jobs from the price table (``config/prices.yaml``).

Resolution of a model id on a day: an exact entry beats a glob; among globs the longest wins (ties: the one
listed first); ``ft:`` ids only match ``ft:`` globs. Within the winning model/glob the entry with the latest
``effective`` on or before the day applies; if it has none yet, the next-best match is tried. Lookups are
memoised per (model, day) in a bounded LRU, so repeated lookups on the request path are O(1).
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from fnmatch import fnmatchcase
from pathlib import Path

from cachetools import LRUCache

from tunegate.config.prices import PriceEntry, load_prices

_PER = Decimal(1_000_000)
QUANTUM = Decimal("0.00000001")  # money: USD to 8 decimal places (usage_record.cost_usd), half-even
_CONTEXT = Context(prec=50, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Cost:
    usd: Decimal  # rounded to 8 decimal places, half-even
    priced: bool  # False when no price matched: usd is 0 and the caller counts it as "unpriced"


UNPRICED = Cost(Decimal(0).quantize(QUANTUM), priced=False)


class _History:
    """All entries of one model id or glob, oldest first."""

    def __init__(self, entries: list[PriceEntry]) -> None:
        self.entries = sorted(entries, key=lambda e: e.effective)
        self.days = [e.effective for e in self.entries]

    def on(self, day: date) -> PriceEntry | None:
        i = bisect_right(self.days, day)
        return self.entries[i - 1] if i else None


class PriceTable:
    def __init__(self, entries: Sequence[PriceEntry], *, cache_size: int = 4096) -> None:
        grouped: dict[str, list[PriceEntry]] = {}
        for entry in entries:
            grouped.setdefault(entry.model, []).append(entry)
        self._exact = {m: _History(es) for m, es in grouped.items() if not es[0].is_pattern}
        # Longest glob first; sorted() is stable, so equal lengths keep file order.
        self._globs = sorted(
            ((m, _History(es)) for m, es in grouped.items() if es[0].is_pattern), key=lambda g: -len(g[0])
        )
        self._cache: LRUCache[tuple[str, date], PriceEntry | None] = LRUCache(maxsize=cache_size)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        return cls(load_prices(path))

    def price_for(self, model: str, day: date) -> PriceEntry | None:
        """The entry in effect for ``model`` on ``day``, or None when the model is unpriced that day."""
        key = (model, day)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        found = self._resolve(model, day)
        with self._lock:
            self._cache[key] = found
        return found

    def _resolve(self, model: str, day: date) -> PriceEntry | None:
        exact = self._exact.get(model)
        if exact is not None and (entry := exact.on(day)) is not None:
            return entry
        is_ft = model.startswith("ft:")
        for glob, history in self._globs:
            matches = glob.startswith("ft:") == is_ft and fnmatchcase(model, glob)
            if matches and (entry := history.on(day)) is not None:
                return entry
        return None

    def request_cost(
        self, *, model: str, day: date, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
    ) -> Cost:
        """``prompt_tokens`` includes ``cached_tokens`` (as in OpenAI's ``usage``)."""
        if min(prompt_tokens, completion_tokens, cached_tokens) < 0 or cached_tokens > prompt_tokens:
            counts = f"prompt={prompt_tokens} completion={completion_tokens} cached={cached_tokens}"
            raise ValueError(f"bad token counts: {counts}")
        entry = self.price_for(model, day)
        if entry is None:
            return UNPRICED
        cached_price = entry.input if entry.cached_input is None else entry.cached_input
        with localcontext(_CONTEXT):
            usd = (
                (prompt_tokens - cached_tokens) * entry.input
                + cached_tokens * cached_price
                + completion_tokens * entry.output
            ) / _PER
            return Cost(usd.quantize(QUANTUM), priced=True)

    def training_cost(self, *, model: str, day: date, trained_tokens: int) -> Cost:
        """Training cost of fine-tuning ``model`` (the base, e.g. ``gpt-4o-mini-2024-07-18``, or an ``ft:``
        id being fine-tuned further): its ``ft:`` entry's ``training`` price, else the base entry's."""
        if trained_tokens < 0:
            raise ValueError(f"bad token count: trained={trained_tokens}")
        candidates = (model,) if model.startswith("ft:") else (f"ft:{model}", model)
        for candidate in candidates:
            entry = self.price_for(candidate, day)
            if entry is not None and entry.training is not None:
                with localcontext(_CONTEXT):
                    return Cost((trained_tokens * entry.training / _PER).quantize(QUANTUM), priced=True)
        return UNPRICED

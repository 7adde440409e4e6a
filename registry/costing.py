"""The cost of a usage record at the price of its day, stored with the record when it is written.

The budget charge on the request path costs each record once (:func:`record_cost`) and keeps the figure on it;
the usage writer's :func:`cost_records` costs, before storing a batch, only the records handed to it uncosted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal

from tunegate.registry.pricing import QUANTUM, UNPRICED, Cost, PriceTable
from tunegate.registry.usage import Usage

log = logging.getLogger("tunegate.costing")

E8 = int(1 / QUANTUM)  # spend is counted in units of the money quantum: 1 USD = 10**8 units
ZERO = Cost(Decimal("0E-8"), priced=True)


def record_cost(prices: PriceTable, record: Usage) -> Cost:
    """A record costed already (by the budget charge on the request path, or a training record's writer) keeps
    its cost. Inference: its tokens at its model's price on its day. Training: ``prompt_tokens`` is the job's
    trained tokens, at the training price of ``model`` (the fine-tuned id or its base)."""
    if record.cost_usd is not None:
        return Cost(Decimal(record.cost_usd), record.priced)
    prompt = max(0, record.prompt_tokens)
    completion = max(0, record.completion_tokens)
    cached = min(max(0, record.cached_tokens), prompt)
    if record.kind == "training":
        if prompt == 0:
            return ZERO
        return prices.training_cost(model=record.model, day=record.day, trained_tokens=prompt)
    if prompt == 0 and completion == 0:
        return ZERO  # nothing was spent (a refused or failed request): not "unpriced"
    return prices.request_cost(
        model=record.model, day=record.day, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached
    )


def cost_records(prices: PriceTable, records: Sequence[Usage]) -> None:
    """Set ``cost_usd`` and ``priced`` on each record not costed yet; never raises, so a batch is never held back."""
    for record in records:
        try:
            cost = record_cost(prices, record)
        except Exception:
            log.exception("costing usage record %s failed; stored as unpriced", record.request_id)
            cost = UNPRICED
        record.cost_usd, record.priced = cost.usd, cost.priced


def to_e8(usd: Decimal) -> int:
    return int((usd * E8).to_integral_value())


def from_e8(units: int) -> Decimal:
    return (Decimal(units) / E8).quantize(QUANTUM)


def money(usd: Decimal) -> str:
    """USD as reports show it: a decimal string with 8 places, ``0.00012300``."""
    return f"{usd:.8f}"

"""Costing a usage record at its day's price (tunegate.registry.costing), and the price table as a start-up setting."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tunegate.config import ConfigError, load_settings
from tunegate.config.prices import PriceTableError
from tunegate.registry.costing import E8, cost_records, from_e8, money, record_cost, to_e8
from tunegate.registry.models import UsageRecord
from tunegate.registry.pricing import QUANTUM, PriceTable
from tunegate.registry.usage import COLUMNS, Usage

PRICES = """\
prices:
  - {model: "gpt-3.5-turbo", effective: 2024-01-01, input: 0.50, output: 1.50}
  - {model: "gpt-3.5-turbo", effective: 2024-06-15, input: 0.25, output: 1.00}
  - {model: "ft:gpt-3.5-turbo*", effective: 2024-01-01, input: 3.00, output: 6.00, training: 8.00}
  - {model: "gpt-4o-mini", effective: 2024-01-01, input: 0.15, cached_input: 0.075, output: 0.60}
"""


@pytest.fixture
def prices(tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES, encoding="utf-8")
    return PriceTable.load(path)


def record(day: date = date(2024, 6, 1), **fields: Any) -> Usage:
    base: dict[str, Any] = {
        "created_at": datetime(day.year, day.month, day.day, tzinfo=UTC),
        "day": day,
        "request_id": "req_1",
        "endpoint": "chat.completions",
        "team_id": 1,
        "alias": "pudong-support",
        "upstream": "fake",
        "model": "gpt-3.5-turbo",
        "served_by": "model",
        "status_code": 200,
        "latency_ms": 1.0,
    }
    return Usage(**(base | fields))


def usd(cost_record: Usage, prices: PriceTable) -> tuple[str, bool]:
    cost = record_cost(prices, cost_record)
    return money(cost.usd), cost.priced


def test_a_base_request_on_each_side_of_a_price_change(prices: PriceTable) -> None:
    # 1M prompt + 1M completion tokens: the per-1M prices themselves.
    before = record(date(2024, 6, 14), prompt_tokens=1_000_000, completion_tokens=1_000_000)
    after = record(date(2024, 6, 15), prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert usd(before, prices) == ("2.00000000", True)  # 0.50 + 1.50
    assert usd(after, prices) == ("1.25000000", True)  # 0.25 + 1.00


def test_a_fine_tuned_request_at_the_ft_glob_price(prices: PriceTable) -> None:
    tuned = record(model="ft:gpt-3.5-turbo-0613:pudong::8abc123", prompt_tokens=2_000, completion_tokens=500)
    assert usd(tuned, prices) == ("0.00900000", True)  # 2000 * 3.00/M + 500 * 6.00/M = 0.006 + 0.003


def test_cached_tokens_at_the_cached_price(prices: PriceTable) -> None:
    cached = record(model="gpt-4o-mini", prompt_tokens=100_000, cached_tokens=40_000, completion_tokens=10_000)
    # 60,000 * 0.15/M + 40,000 * 0.075/M + 10,000 * 0.60/M = 0.009 + 0.003 + 0.006
    assert usd(cached, prices) == ("0.01800000", True)


def test_a_training_record_at_the_training_price(prices: PriceTable) -> None:
    # prompt_tokens carries the job's trained tokens; base model or fine-tuned id both find ft:gpt-3.5-turbo*.
    for model in ("gpt-3.5-turbo-0613", "ft:gpt-3.5-turbo-0613:pudong::8abc123"):
        job = record(kind="training", model=model, prompt_tokens=1_234_567, served_by="training")
        assert usd(job, prices) == ("9.87653600", True)  # 1,234,567 * 8.00/M
    priced_by_its_writer = record(kind="training", model="x", prompt_tokens=5, cost_usd=Decimal("12.5"))
    assert usd(priced_by_its_writer, prices) == ("12.50000000", True)


def test_unpriced_and_empty_records(prices: PriceTable) -> None:
    assert usd(record(model="mystery", prompt_tokens=10, completion_tokens=5), prices) == ("0.00000000", False)
    # A refused request spent nothing: zero, but not "unpriced".
    assert usd(record(model="mystery", status_code=502), prices) == ("0.00000000", True)


def test_cost_records_sets_each_record_and_never_raises(prices: PriceTable) -> None:
    odd = record(prompt_tokens=10, cached_tokens=50, completion_tokens=-3)  # an upstream's nonsense counts
    good = record(prompt_tokens=1_000_000, completion_tokens=0)
    cost_records(prices, [odd, good])
    assert odd.cost_usd is not None and good.cost_usd is not None
    # Counted as 10 prompt tokens, all cached (no cached price: at input, 0.50/M), and no completion.
    assert (money(odd.cost_usd), odd.priced) == ("0.00000500", True)
    assert (money(good.cost_usd), good.priced) == ("0.50000000", True)


def test_units_of_1e8_round_trip() -> None:
    assert to_e8(Decimal("0.00012300")) == 12_300
    assert from_e8(12_300) == Decimal("0.00012300")
    assert money(from_e8(0)) == "0.00000000"


def test_one_money_quantum_for_costs_and_spend_units() -> None:
    """A cost's last place (tunegate.registry.pricing.QUANTUM) is one unit of the spend counters
    (tunegate.registry.costing.E8)."""
    assert (money(QUANTUM), QUANTUM.as_tuple().exponent) == ("0.00000001", -8)
    assert E8 == 100_000_000
    assert (to_e8(QUANTUM), from_e8(1), from_e8(E8)) == (1, Decimal("0.00000001"), Decimal("1.00000000"))
    assert (to_e8(Decimal("0.000000005")), to_e8(Decimal("0.000000015"))) == (0, 2)  # half a unit: to the even one


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ("prices:\n  - {model: gpt-4o, effective: 2024-01-01, input: -1, output: 2}\n", "'input' must not be negative"),
        (
            "prices:\n  - {model: gpt-4o, effective: 2024-01-01, input: 1, output: 2}\n"
            "  - {model: gpt-4o, effective: 2024-01-01, input: 2, output: 3}\n",
            "field 'effective' 2024-01-01 duplicates prices[0]",
        ),
    ],
)
def test_a_bad_price_table_is_a_start_up_error_naming_the_field(tmp_path: Path, table: str, field: str) -> None:
    (tmp_path / "prices.yaml").write_text(table, encoding="utf-8")
    config = tmp_path / "tunegate.yaml"
    config.write_text("prices: {file: prices.yaml}\n", encoding="utf-8")  # relative to the configuration file
    with pytest.raises(ConfigError) as bad:
        load_settings(config)
    assert f"{config}: prices.file: " in str(bad.value) and field in str(bad.value)
    with pytest.raises(PriceTableError):
        PriceTable.load(tmp_path / "prices.yaml")


def test_the_shipped_table_is_the_default(tmp_path: Path) -> None:
    config = tmp_path / "tunegate.yaml"
    config.write_text("{}\n", encoding="utf-8")
    assert load_settings(config).prices_path is None  # PriceTable.load(None) reads config/prices.yaml


def test_a_usage_record_on_its_way_has_exactly_the_columns_of_its_row() -> None:
    table = UsageRecord.__table__  # type: ignore[attr-defined]
    assert set(COLUMNS) == {column.name for column in table.columns} - {"id"}

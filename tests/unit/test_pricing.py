"""Price table loading and cost computation, checked against hand-computed figures (exact Decimals)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tunegate.config.prices import PriceTableError, load_prices
from tunegate.registry.pricing import Cost, PriceTable

DAY = date(2025, 9, 1)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text("prices:\n" + body)
    return path


def usd(text: str) -> Cost:
    return Cost(Decimal(text), priced=True)


# --- shipped table ---------------------------------------------------------------------------------------


def test_shipped_table_loads_with_exact_decimals() -> None:
    entries = load_prices()
    mini = next(e for e in entries if e.model == "gpt-4o-mini")
    assert (mini.input, mini.cached_input, mini.output) == (Decimal("0.15"), Decimal("0.075"), Decimal("0.6"))
    assert mini.training is None


def test_base_request(table: PriceTable) -> None:
    # 1.2M * $0.15 + 0.35M * $0.60 = 0.18 + 0.21
    cost = table.request_cost(model="gpt-4o-mini", day=DAY, prompt_tokens=1_200_000, completion_tokens=350_000)
    assert cost == usd("0.39")
    assert cost.usd == Decimal("0.39000000") and str(cost.usd) == "0.39000000"


def test_fine_tuned_request_priced_apart_from_its_base(table: PriceTable) -> None:
    # 1.2M * $0.30 + 0.35M * $1.20 = 0.36 + 0.42
    cost = table.request_cost(
        model="ft:gpt-4o-mini-2024-07-18:acme:support:9xYz1",
        day=DAY,
        prompt_tokens=1_200_000,
        completion_tokens=350_000,
    )
    assert cost == usd("0.78")


def test_cached_tokens(table: PriceTable) -> None:
    # gpt-4.1: 0.5M uncached * $2.00 + 1.5M cached * $0.50 + 0.1M * $8.00 = 1.00 + 0.75 + 0.80
    cost = table.request_cost(
        model="gpt-4.1", day=DAY, prompt_tokens=2_000_000, completion_tokens=100_000, cached_tokens=1_500_000
    )
    assert cost == usd("2.55")


def test_cached_tokens_without_cached_price_use_input_price(table: PriceTable) -> None:
    # gpt-3.5-turbo-0125 has no cached_input: 1M * $0.50 whatever the cache says
    cost = table.request_cost(
        model="gpt-3.5-turbo-0125",
        day=DAY,
        prompt_tokens=1_000_000,
        completion_tokens=0,
        cached_tokens=400_000,
    )
    assert cost == usd("0.50")


def test_rounding_to_eight_places_half_even(table: PriceTable) -> None:
    # one cached gpt-4.1-nano token = $0.025 / 1M = 0.000000025 -> 0.00000002 (half-even)
    cost = table.request_cost(model="gpt-4.1-nano", day=DAY, prompt_tokens=1, completion_tokens=0, cached_tokens=1)
    assert cost.usd == Decimal("0.00000002")
    # 3 gpt-4o-mini prompt tokens = 0.00000045 exactly
    assert table.request_cost(model="gpt-4o-mini", day=DAY, prompt_tokens=3, completion_tokens=0).usd == (
        Decimal("0.00000045")
    )


def test_training_job(table: PriceTable) -> None:
    # 2.5M trained tokens * $3.00 (ft:gpt-4o-mini*)
    assert table.training_cost(model="gpt-4o-mini-2024-07-18", day=DAY, trained_tokens=2_500_000) == usd("7.50")
    # gpt-4.1-mini matches ft:gpt-4.1* and ft:gpt-4.1-mini*: the longer one wins ($5.00, not $25.00)
    assert table.training_cost(model="gpt-4.1-mini-2025-04-14", day=DAY, trained_tokens=1_000_000) == usd("5")
    assert table.training_cost(model="gpt-4o-2024-08-06", day=DAY, trained_tokens=400_000) == usd("10")
    # continuing from a fine-tuned model bills at its base's training price
    assert table.training_cost(model="ft:gpt-3.5-turbo-0125:acme::abc", day=DAY, trained_tokens=1_000_000) == usd("8")


def test_unpriced(table: PriceTable) -> None:
    zero = Cost(Decimal(0), priced=False)
    assert table.request_cost(model="llama-3-70b", day=DAY, prompt_tokens=10, completion_tokens=10) == zero
    assert table.request_cost(model="ft:llama-3:acme::x", day=DAY, prompt_tokens=10, completion_tokens=10) == zero
    # gpt-4.1 did not exist yet
    assert table.request_cost(model="gpt-4.1", day=date(2024, 1, 1), prompt_tokens=1, completion_tokens=1) == zero
    # gpt-4o (base) has no training price and there is no ft:gpt-4o* pattern for gpt-4o-2024-11-20
    assert table.training_cost(model="gpt-4o-2024-11-20", day=DAY, trained_tokens=1000) == zero
    assert table.price_for("llama-3-70b", DAY) is None


def test_shipped_history_ft_gpt35_price_cut(table: PriceTable) -> None:
    kw: dict[str, Any] = {
        "model": "ft:gpt-3.5-turbo-0613:acme::x",
        "prompt_tokens": 1_000_000,
        "completion_tokens": 1_000_000,
    }
    assert table.request_cost(day=date(2023, 11, 5), **kw) == usd("28")  # 12 + 16
    assert table.request_cost(day=date(2023, 11, 6), **kw) == usd("9")  # 3 + 6


def test_price_change_in_the_middle_of_a_range(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - {model: acme-1, effective: 2025-03-01, input: 0.50, output: 1.00}\n"
        "  - {model: acme-1, effective: 2025-01-01, input: 1.00, output: 2.00}\n",
    )
    t = PriceTable.load(path)

    def cost(day: date) -> Cost:
        return t.request_cost(model="acme-1", day=day, prompt_tokens=1_000_000, completion_tokens=1_000_000)

    assert cost(date(2024, 12, 31)) == Cost(Decimal(0), priced=False)
    assert cost(date(2025, 1, 1)) == usd("3.00")
    assert cost(date(2025, 2, 28)) == usd("3.00")
    assert cost(date(2025, 3, 1)) == usd("1.50")
    assert cost(date(2026, 1, 1)) == usd("1.50")


def test_pattern_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '  - {model: "*", effective: 2025-01-01, input: 9, output: 0}\n'
        '  - {model: "acme-*", effective: 2025-01-01, input: 1, output: 0}\n'
        '  - {model: "acme-large-*", effective: 2025-01-01, input: 2, output: 0}\n'
        '  - {model: "acme-large-v2", effective: 2025-01-01, input: 3, output: 0}\n'
        '  - {model: "ft:acme-*", effective: 2025-01-01, input: 5, output: 0}\n'
        # the specific glob only starts later: before then the next-best match applies
        '  - {model: "acme-small-*", effective: 2025-06-01, input: 4, output: 0}\n',
    )
    t = PriceTable.load(path)

    def price(model: str, day: date = DAY) -> Decimal | None:
        entry = t.price_for(model, day)
        return None if entry is None else entry.input

    assert price("acme-large-v2") == 3  # exact beats every glob
    assert price("acme-large-v1") == 2  # longest glob
    assert price("acme-tiny") == 1
    assert price("other") == 9
    assert price("ft:acme-large-v2:org::x") == 5  # ft: ids only match ft: globs, never "*"
    assert price("ft:other:org::x") is None
    assert price("acme-small-1", date(2025, 5, 31)) == 1
    assert price("acme-small-1", date(2025, 6, 1)) == 4
    # memoised: the same object comes back
    assert t.price_for("acme-large-v1", DAY) is t.price_for("acme-large-v1", DAY)


def test_bad_token_counts(table: PriceTable) -> None:
    with pytest.raises(ValueError, match="bad token counts"):
        table.request_cost(model="gpt-4o", day=DAY, prompt_tokens=5, completion_tokens=0, cached_tokens=6)
    with pytest.raises(ValueError, match="bad token count"):
        table.training_cost(model="gpt-4o-mini-2024-07-18", day=DAY, trained_tokens=-1)


# --- loader errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  - {model: m, effective: 2025-01-01, input: -0.10, output: 1}\n",
            r"prices\[0\] \('m'\): field 'input' must not be negative",
        ),
        (
            "  - {model: m, effective: 2025-01-01, input: 1, output: 1}\n"
            "  - {model: m, effective: 2025-01-01, input: 2, output: 2}\n",
            r"prices\[1\] \('m'\): field 'effective' 2025-01-01 duplicates prices\[0\]",
        ),
        (
            "  - {model: m, effective: 2025-01-01, input: 1, output: 1, inptu: 2}\n",
            r"prices\[0\] \('m'\): field 'inptu' is unknown",
        ),
        (
            "  - {model: m, effective: 2025-13-01, input: 1, output: 1}\n",
            r"prices\[0\] \('m'\): field 'effective' is not a valid date",
        ),
        (
            "  - {model: m, effective: 01/02/2025, input: 1, output: 1}\n",
            r"prices\[0\] \('m'\): field 'effective' must be an ISO date",
        ),
        (
            "  - {model: m, effective: 2025-01-01, input: 1}\n",
            r"prices\[0\] \('m'\): field 'output' is required",
        ),
        (
            "  - {model: m, effective: 2025-01-01, input: 1, output: 1, training: cheap}\n",
            r"prices\[0\] \('m'\): field 'training' must be a number",
        ),
    ],
    ids=["negative", "duplicate", "unknown-key", "bad-date", "not-iso-date", "missing", "not-a-number"],
)
def test_loader_errors_name_file_entry_and_field(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(PriceTableError, match=expected) as info:
        load_prices(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_loader_rejects_a_bad_document(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("models: []\n")
    with pytest.raises(PriceTableError, match="exactly one key 'prices'"):
        load_prices(path)
    with pytest.raises(PriceTableError, match="cannot read"):
        load_prices(tmp_path / "missing.yaml")

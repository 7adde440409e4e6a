"""What a promotion makes of an alias version, and the small rules around it: pure functions, no database."""

from __future__ import annotations

from datetime import date

import pytest

from tunegate.registry.aliases import AliasSpec, Target, WeightedTarget
from tunegate.registry.errors import Invalid
from tunegate.registry.finetune.promotion import canary_weight, fallback_for, promotion_spec
from tunegate.registry.finetune.retirement import ShutdownDates, parse_shutdown

BASE = Target(upstream="openai", model="gpt-3.5-turbo", system_prompt="Be the airport's help desk.")
OLD_FT = Target(upstream="openai", model="ft:gpt-3.5-turbo-0613:pudong::old")
NEW_FT = Target(upstream="openai", model="ft:gpt-3.5-turbo-0613:pudong::new")
DATA_PROMPT = "The prompt most training examples share."


def test_base_with_prompt_becomes_the_fallback() -> None:
    spec = promotion_spec(AliasSpec(target=BASE, policy="if_absent"), NEW_FT, data_prompt=DATA_PROMPT, canary=None)
    assert spec == AliasSpec(target=NEW_FT, fallback=BASE, policy="if_absent")


def test_a_previous_fine_tune_gives_way_and_the_base_with_its_prompt_stays_the_fallback() -> None:
    old = AliasSpec(target=OLD_FT, fallback=BASE)
    assert promotion_spec(old, NEW_FT, data_prompt=DATA_PROMPT, canary=None) == AliasSpec(target=NEW_FT, fallback=BASE)


def test_no_prompt_anywhere_takes_the_training_datas() -> None:
    bare = Target(upstream="openai", model="gpt-4o-mini")
    assert fallback_for(AliasSpec(target=bare), NEW_FT, DATA_PROMPT) == bare.model_copy(
        update={"system_prompt": DATA_PROMPT}
    )
    assert fallback_for(AliasSpec(target=OLD_FT, fallback=bare), NEW_FT, DATA_PROMPT) == bare.model_copy(
        update={"system_prompt": DATA_PROMPT}
    )
    assert fallback_for(AliasSpec(target=bare), NEW_FT, None) == bare  # no data prompt: the bare base
    assert fallback_for(AliasSpec(target=NEW_FT), NEW_FT, DATA_PROMPT) is None  # never itself


def test_canary_keeps_the_target_and_replaces_its_own_earlier_canary() -> None:
    other = WeightedTarget(upstream="openai", model="gpt-4o", weight=5)
    old = AliasSpec(target=BASE, canary=(other, WeightedTarget(**NEW_FT.model_dump(), weight=30)))
    spec = promotion_spec(old, NEW_FT, data_prompt=None, canary=10)
    assert (spec.target, spec.fallback) == (BASE, None)
    assert spec.canary == (other, WeightedTarget(**NEW_FT.model_dump(), weight=10))
    full = promotion_spec(spec, NEW_FT, data_prompt=None, canary=None)
    assert (full.target, full.fallback, full.canary) == (NEW_FT, BASE, (other,))


def test_canary_refusals() -> None:
    crowded = AliasSpec(target=BASE, canary=(WeightedTarget(upstream="openai", model="gpt-4o", weight=95),))
    with pytest.raises(Invalid, match="less than 100"):
        promotion_spec(crowded, NEW_FT, data_prompt=None, canary=10)
    with pytest.raises(Invalid, match="target already"):
        promotion_spec(AliasSpec(target=NEW_FT), NEW_FT, data_prompt=None, canary=10)


def test_canary_weight_from_metadata() -> None:
    assert canary_weight(None) is None
    assert canary_weight({"tunegate_alias": "a", "tunegate_canary": "10"}) == 10
    assert canary_weight({"tunegate_alias": "a", "tunegate_canary": "25%"}) == 25
    for bad in ("0", "100", "ten", "-5"):
        with pytest.raises(Invalid, match="tunegate_canary"):
            canary_weight({"tunegate_alias": "a", "tunegate_canary": bad})
    with pytest.raises(Invalid, match=r"needs metadata\.tunegate_alias"):
        canary_weight({"tunegate_canary": "10"})


def test_shutdown_dates() -> None:
    dates = ShutdownDates({("openai", "gpt-old"): date(2027, 1, 14)})
    assert not dates.passed("openai", "gpt-old", on=date(2027, 1, 13))
    assert dates.passed("openai", "gpt-old", on=date(2027, 1, 14))  # gone on its shutdown day
    assert not dates.passed("azure", "gpt-old", on=date(2030, 1, 1))  # another upstream's model of that name
    assert parse_shutdown("2027-01-14") == date(2027, 1, 14)
    assert parse_shutdown("2027-01-14T00:00:00Z") == date(2027, 1, 14)
    assert parse_shutdown(1799884800) == date(2027, 1, 14)
    assert [parse_shutdown(v) for v in (None, "soon", True, "")] == [None, None, None, None]

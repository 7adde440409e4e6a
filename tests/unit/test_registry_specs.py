"""The registry's pure parts: partial alias changes, splits, lineage, the apply diff and the CLI's parsing."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from tunegate.config import ConfigError, parse_settings
from tunegate.proxy.cli import main
from tunegate.proxy.cli.admin import _split_entry, alias_change, describe_change, parse_expiry
from tunegate.proxy.cli.client import UsageError
from tunegate.registry.aliases import AliasChange, AliasSpec, Target, WeightedTarget, build_spec, lineage, split_targets
from tunegate.registry.bootstrap import diff, flatten, spec_from_settings
from tunegate.registry.errors import Invalid
from tunegate.registry.models import AliasVersion

BASE = AliasSpec(
    target=Target(upstream="openai", model="gpt-3.5-turbo", system_prompt="You are Pudong's assistant."),
    fallback=None,
)


def change(**fields: object) -> AliasChange:
    return AliasChange.model_validate(fields)


def test_creating_needs_an_upstream_and_a_model() -> None:
    with pytest.raises(Invalid) as no_upstream:
        build_spec("pudong-support", None, change(model="gpt-3.5-turbo"))
    assert no_upstream.value.param == "upstream"
    with pytest.raises(Invalid) as no_model:
        build_spec("pudong-support", None, change(upstream="openai"))
    assert no_model.value.param == "model"
    spec = build_spec("pudong-support", None, change(upstream="openai", model="gpt-3.5-turbo", system_prompt="p"))
    assert spec == AliasSpec(target=Target(upstream="openai", model="gpt-3.5-turbo", system_prompt="p"))


def test_a_partial_change_keeps_every_field_it_does_not_name() -> None:
    spec = build_spec(
        "pudong-support",
        BASE,
        change(model="ft:gpt-3.5-turbo-0613:pudong::8abc123", fallback={"model": "gpt-3.5-turbo"}),
    )
    assert spec.target == Target(
        upstream="openai", model="ft:gpt-3.5-turbo-0613:pudong::8abc123", system_prompt="You are Pudong's assistant."
    )
    assert spec.fallback == Target(upstream="openai", model="gpt-3.5-turbo")
    cleared = build_spec("pudong-support", spec, change(system_prompt=None, fallback={"system_prompt": "fb"}))
    assert cleared.target.system_prompt is None
    assert cleared.fallback == Target(upstream="openai", model="gpt-3.5-turbo", system_prompt="fb")
    assert build_spec("pudong-support", cleared, change(fallback=None)).fallback is None
    assert build_spec("pudong-support", cleared, change()) == cleared  # nothing named: the same spec


def test_split_must_add_up_to_100_and_maps_to_target_and_canaries() -> None:
    entries = change(split=[{"model": "ft:v1", "weight": 90}, {"model": "ft:v2", "weight": 10}]).split
    assert entries is not None
    target, canary = split_targets(entries, "openai")
    assert target == Target(upstream="openai", model="ft:v1")
    assert canary == (WeightedTarget(upstream="openai", model="ft:v2", weight=10),)
    with pytest.raises(Invalid, match="add up to 95") as wrong:
        build_spec("a", BASE, change(split=[{"model": "x", "weight": 90}, {"model": "y", "weight": 5}]))
    assert wrong.value.param == "split"
    with pytest.raises(Invalid, match="repeats model"):
        build_spec("a", BASE, change(split=[{"model": "x", "weight": 50}, {"model": "x", "weight": 50}]))
    promoted = build_spec(
        "a", BASE.model_copy(update={"canary": canary}), change(split=[{"model": "y", "weight": 100}])
    )
    assert (promoted.target.model, promoted.canary) == ("y", ())
    assert build_spec("a", BASE.model_copy(update={"canary": canary}), change(split=None)).canary == ()


def test_patterns_forward_the_requested_name_and_cannot_name_a_model_or_split() -> None:
    spec = build_spec("gpt-4o*", None, change(upstream="openai"))
    assert spec.target.model == "gpt-4o*"
    with pytest.raises(Invalid) as model:
        build_spec("gpt-4o*", None, change(upstream="openai", model="gpt-4o"))
    assert model.value.param == "model"
    with pytest.raises(Invalid) as split:
        build_spec("gpt-4o*", spec, change(split=[{"model": "a", "weight": 100}]))
    assert split.value.param == "split"


def test_a_canary_split_is_stable_per_user_and_close_to_its_weights() -> None:
    spec = BASE.model_copy(update={"canary": (WeightedTarget(upstream="openai", model="ft:v2", weight=10),)})
    picks = [spec.choose(f"user-{i}") for i in range(10_000)]
    share = sum(served_by == "canary" for _, served_by, _ in picks) / len(picks)
    assert abs(share - 0.10) < 0.01
    assert all(spec.choose(f"user-{i}") == picks[i] for i in range(0, 10_000, 97))


def test_lineage_follows_a_rollback_to_its_source() -> None:
    versions = [
        AliasVersion(alias_id=1, version=n, spec={}, created_by="t", based_on=based)
        for n, based in ((1, None), (2, 1), (3, 2), (4, 1))
    ]
    assert [v.version for v in lineage(versions, 4)] == [4, 1]
    assert [v.version for v in lineage(versions, 3)] == [3, 2, 1]


def test_the_apply_diff_names_changed_fields_only() -> None:
    assert flatten({"target": {"model": "m", "upstream": "u"}, "teams": ["a"]}) == {
        "target.model": "m",
        "target.upstream": "u",
        "teams": ["a"],
    }
    before = {"target": {"model": "a", "system_prompt": None}, "canary": []}
    after = {"target": {"model": "b", "system_prompt": None}, "canary": []}
    assert diff(before, after) == {"target.model": ("a", "b")}
    lines = describe_change(
        {"kind": "alias", "name": "p", "action": "update", "team": None, "version": 2,
         "fields": {"target.model": {"before": "a", "after": "b"}}}
    )  # fmt: skip
    assert lines == ["~ alias p → v2", '    target.model: "a" → "b"']


def test_cli_parsing_of_splits_expiry_and_partial_changes() -> None:
    assert _split_entry("ft:gpt-3.5-turbo-0613:pudong::v2=10") == {
        "model": "ft:gpt-3.5-turbo-0613:pudong::v2",
        "weight": 10,
    }
    assert _split_entry("gpt-4o@azure=25") == {"model": "gpt-4o", "upstream": "azure", "weight": 25}
    with pytest.raises(UsageError):
        _split_entry("gpt-4o")
    assert parse_expiry("2030-01-31") == datetime(2030, 1, 31, tzinfo=UTC).isoformat()
    assert parse_expiry("never") is None
    with pytest.raises(UsageError):
        parse_expiry("next week")
    args = argparse.Namespace(
        upstream=None, model="ft:x", policy=None, system_prompt="", no_fallback=False, fallback_model=None,
        fallback_upstream=None, fallback_system_prompt="fb", teams="", no_canary=True, split=None, reason="r",
        allow_catch_all=False,
    )  # fmt: skip
    assert alias_change(args) == {
        "model": "ft:x",
        "system_prompt": None,
        "fallback": {"system_prompt": "fb"},
        "teams": [],
        "split": None,
        "reason": "r",
    }


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        main(["alias", "rollback", "pudong-support"])
    assert missing.value.code == 2
    assert "version" in capsys.readouterr().err


def test_the_file_may_hold_patterns_and_splits_checked_like_the_api() -> None:
    raw = {
        "upstreams": {"u": {"base_url": "http://x/v1"}},
        "aliases": {
            "*": {"upstream": "u", "allow_catch_all": True},
            "p": {"upstream": "u", "split": [{"model": "a", "weight": 90}, {"model": "b", "weight": 10}]},
        },
    }
    settings = parse_settings(raw, "t.yaml")
    assert spec_from_settings(settings.aliases["*"], "*").target == Target(upstream="u", model="*")
    split = spec_from_settings(settings.aliases["p"], "p")
    assert (split.target.model, split.canary) == ("a", (WeightedTarget(upstream="u", model="b", weight=10),))
    for alias, message in [
        ({"upstream": "u", "split": [{"model": "a", "weight": 90}]}, "add up to 90"),
        ({"upstream": "u", "model": "m", "split": [{"model": "a", "weight": 100}]}, "either 'model' or 'split'"),
        ({"upstream": "u"}, "either 'model' or 'split'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_settings({**raw, "aliases": {"p": alias}}, "t.yaml")
    with pytest.raises(ConfigError, match="leave out 'model'"):
        parse_settings({**raw, "aliases": {"gpt-4o*": {"upstream": "u", "model": "gpt-4o"}}}, "t.yaml")

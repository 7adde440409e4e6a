"""The loader, the registry and the admin schemas accept and refuse the same names, and the same splits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from tunegate.config import ConfigError, parse_settings
from tunegate.proxy.routes.teams import TeamChange, TeamCreate
from tunegate.registry.aliases import AliasChange, write_alias
from tunegate.registry.db import make_engine, migrate
from tunegate.registry.errors import Invalid
from tunegate.registry.teams import create_team
from tunegate.registry.upstreams import set_upstream

SOURCE = "names.yaml"
UPSTREAM = {"base_url": "http://127.0.0.1:9/v1"}
# (name, usable as a team or upstream name, usable as an alias name)
NAMES = [
    ("airport-cs", True, True),
    ("a", True, True),
    ("A.b_c-1", True, True),
    ("ops:eu", False, True),
    ("-x", False, False),
    (".x", False, False),
    ("", False, False),
    ("a" * 128, True, True),
    ("a" * 129, False, False),
    ("团队", False, False),
    ("a b", False, False),
    ("a\n", False, False),  # Python's `$` alone matches before a trailing newline; the rule does not
    ("gpt-4o*", False, True),
    ("*", False, True),
    ("*-mini", False, True),
    ("ft:gpt-4o:org::id", False, True),
    ("a/b", False, True),
]


@pytest.fixture(scope="module")
def engine(own_database_url: str) -> Iterator[Engine]:
    engine = make_engine(own_database_url)  # its own: the session gateway's database has airport-cs already
    migrate(engine)
    yield engine
    engine.dispose()


def registry_verdict(engine: Engine, write: Any) -> str | None:
    """None when the registry takes the write, else its Invalid message (nothing is kept either way)."""
    with Session(engine) as session:
        try:
            write(session)
        except Invalid as exc:
            return f"{exc.param}: {exc.message}"
        finally:
            session.rollback()
    return None


def config_verdict(raw: dict[str, Any]) -> str | None:
    try:
        parse_settings(raw, SOURCE)
    except ConfigError as exc:
        return str(exc)
    return None


def alias_entry(name: str) -> dict[str, Any]:
    # A pattern forwards the model a client asks for: it names no model (and `*` must be asked for).
    return {"upstream": "u", "allow_catch_all": True} if "*" in name else {"upstream": "u", "model": "m"}


@pytest.mark.parametrize(("name", "usable", "_"), NAMES, ids=repr)
def test_a_team_name_has_one_verdict(engine: Engine, name: str, usable: bool, _: bool) -> None:
    in_file = config_verdict({"teams": [{"name": name}]})
    in_registry = registry_verdict(engine, lambda s: create_team(session=s, name=name, actor="test"))
    schemas = []
    for schema in (TeamCreate, TeamChange):
        try:
            schema.model_validate({"name": name})
            schemas.append(True)
        except ValidationError:
            schemas.append(False)
    assert (in_file is None, in_registry is None, schemas) == (usable, usable, [usable, usable])
    if not usable:
        message = f"'{name}' is not a usable team name: 1-128 letters, digits, '.', '_' or '-', starting with a "
        assert in_registry == f"name: {message}letter or digit"
        assert in_file == f"{SOURCE}: teams[0].name: {message}letter or digit"


@pytest.mark.parametrize(("name", "usable", "_"), NAMES, ids=repr)
def test_an_upstream_name_has_one_verdict(engine: Engine, name: str, usable: bool, _: bool) -> None:
    in_file = config_verdict({"upstreams": {name: UPSTREAM}})
    in_registry = registry_verdict(
        engine, lambda s: set_upstream(session=s, name=name, base_url=UPSTREAM["base_url"], api_key_ref=None, actor="t")
    )
    assert (in_file is None, in_registry is None) == (usable, usable)
    if not usable:
        assert in_registry is not None and in_registry.startswith(f"name: '{name}' is not a usable upstream name: ")
        assert in_file == f"{SOURCE}: upstreams.{name}: {in_registry.removeprefix('name: ')}"


@pytest.mark.parametrize(("name", "_", "usable"), NAMES, ids=repr)
def test_an_alias_name_has_one_verdict(engine: Engine, name: str, _: bool, usable: bool) -> None:
    in_file = config_verdict({"upstreams": {"u": UPSTREAM}, "aliases": {name: alias_entry(name)}})

    def write(session: Session) -> None:
        set_upstream(session=session, name="u", base_url=UPSTREAM["base_url"], api_key_ref=None, actor="t")
        change = AliasChange.model_validate(alias_entry(name))  # what PUT /admin/aliases/{name} builds
        write_alias(session=session, name=name, team=None, change=change, actor="t")

    in_registry = registry_verdict(engine, write)
    assert (in_file is None, in_registry is None) == (usable, usable)
    if not usable:
        assert in_registry is not None and in_registry.startswith(f"name: '{name}' is not a usable alias name: ")
        assert in_file == f"{SOURCE}: aliases.{name}: {in_registry.removeprefix('name: ')}"


# (split entries as (model, weight, upstream), the registry's param when refused, words of both messages)
SPLITS = [
    ([("a", 100, None)], None, ""),
    ([("a", 70, None), ("b", 30, None)], None, ""),
    ([("a", 50, None), ("a", 50, "v")], None, ""),  # the same model id on another upstream is another model
    ([("a", 90, None)], "split", "add up to 90"),
    ([("a", 60, None), ("b", 30, None), ("c", 5, None)], "split", "add up to 95"),
    ([], "model", ""),  # the registry asks for 'model' (or 'split') first; the file says the weights add up to 0
    ([("a", 50, None), ("a", 50, None)], "split[2]", "repeats model 'a'"),
    ([("a", 50, None), ("b", 25, "u"), ("b", 25, None)], "split[3]", "repeats model 'b'"),
]


@pytest.mark.parametrize(("entries", "param", "words"), SPLITS, ids=repr)
def test_a_split_has_one_verdict(
    engine: Engine, entries: list[tuple[str, int, str | None]], param: str | None, words: str
) -> None:
    split = [{"model": m, "weight": w, **({"upstream": u} if u else {})} for m, w, u in entries]
    in_file = config_verdict(
        {"upstreams": {"u": UPSTREAM, "v": UPSTREAM}, "aliases": {"s": {"upstream": "u", "split": split}}}
    )

    def write(session: Session) -> None:
        for upstream in ("u", "v"):
            set_upstream(session=session, name=upstream, base_url=UPSTREAM["base_url"], api_key_ref=None, actor="t")
        change = AliasChange.model_validate({"upstream": "u", "split": split})
        write_alias(session=session, name="s", team=None, change=change, actor="t")

    in_registry = registry_verdict(engine, write)
    if param is None:
        assert (in_file, in_registry) == (None, None)
        return
    assert in_registry is not None and in_registry.startswith(f"{param}: ") and words in in_registry
    assert in_file is not None and in_file.startswith(f"{SOURCE}: aliases.s: split") and words in in_file

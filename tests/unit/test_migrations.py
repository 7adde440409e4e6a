"""The Alembic migrations build exactly the schema the models describe, on every supported database, from one
head, and go down to nothing and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from tunegate.registry.db import MIGRATIONS, make_engine, migrate
from tunegate.registry.models import metadata


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _downgrade(engine: Engine, revision: str) -> None:
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # a second upgrade is a no-op
    diff = _differences(engine)
    engine.dispose()
    assert diff == []


def test_the_migrations_have_one_head() -> None:
    script = ScriptDirectory.from_config(_config())
    assert script.get_heads() == ["0009"]  # 0007 (stored responses) after 0008; 0009 (stored objects) after 0007
    assert set(script.get_revision("0005").down_revision or ()) == {"0002", "0003", "0004"}


def test_an_empty_database_goes_up_to_head_down_to_base_and_up_again(own_database_url: str) -> None:
    engine = make_engine(own_database_url)
    try:
        assert _tables(engine) == set()
        migrate(engine)
        assert _tables(engine) == {*metadata.tables, "alembic_version"}
        assert _differences(engine) == []

        _downgrade(engine, "base")
        assert _tables(engine) == {"alembic_version"}  # Alembic keeps its own table, empty

        migrate(engine)
        assert _tables(engine) == {*metadata.tables, "alembic_version"}
        assert _differences(engine) == []
    finally:
        engine.dispose()

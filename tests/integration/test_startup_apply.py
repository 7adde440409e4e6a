"""Start-up re-applies the configured file without undoing what was changed since (promotions, rollbacks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from tests.utils.gateways import gateway_yaml
from tunegate.config import load_settings
from tunegate.registry.aliases import AliasSpec, Target, current_version, find_alias, set_alias
from tunegate.registry.bootstrap import prepare_database
from tunegate.registry.db import make_engine


def _serving(engine: Engine, name: str) -> tuple[int, str]:
    with Session(engine) as session:
        alias = find_alias(session=session, name=name, team_id=None)
        assert alias is not None
        version = current_version(session=session, alias=alias)
        assert version is not None
        return version.version, AliasSpec.model_validate(version.spec).target.model


def test_a_restart_keeps_later_versions_and_a_changed_file_wins(
    own_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEGATE_TEST_UPSTREAM_KEY", "sk-x")
    path = tmp_path / "tunegate.yaml"
    path.write_text(gateway_yaml(own_database_url, "http://127.0.0.1:9/v1"), encoding="utf-8")
    engine = make_engine(own_database_url)
    prepare_database(engine, load_settings(path))
    assert _serving(engine, "pudong-support") == (1, "ft:gpt-3.5-turbo-0613:pudong::8abc123")

    with Session(engine) as session:  # what a promotion does: a new version, not from the file
        set_alias(
            session=session,
            name="pudong-support",
            team_id=None,
            spec=AliasSpec(target=Target(upstream="fake", model="ft:gpt-3.5-turbo-0613:pudong::retrained")),
            actor="poller",
            reason="promoted from job ftjob-1",
        )
        session.commit()

    prepare_database(engine, load_settings(path))  # a replica restarts with the same file
    assert _serving(engine, "pudong-support") == (2, "ft:gpt-3.5-turbo-0613:pudong::retrained")

    path.write_text(path.read_text(encoding="utf-8").replace("pudong::8abc123", "pudong::fromfile"), encoding="utf-8")
    prepare_database(engine, load_settings(path))  # the file's entry changed: the file wins
    assert _serving(engine, "pudong-support") == (3, "ft:gpt-3.5-turbo-0613:pudong::fromfile")
    engine.dispose()

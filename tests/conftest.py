"""Fixtures that give real parts: the fake upstream and the gateway on loopback, over SQLite and PostgreSQL.

What they are built from lives in tests/utils/ (gateways, upstreams, databases, processes, waiting)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before anything loads tiktoken (tests.utils imports the registry): its encoding files make token counts
# exact. The whole run and the commands it starts share it, so it is not given back.
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
if (SHARED / "tiktoken_cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))

from tests.utils.databases import postgres_database  # noqa: E402
from tests.utils.gateways import GatewayHandle, running_gateway  # noqa: E402
from tests.utils.upstreams import FakeUpstreamHandle, serve_fake_upstream  # noqa: E402


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstreamHandle]:
    with serve_fake_upstream() as handle:
        yield handle


@pytest.fixture(autouse=True)
def _clean_fake_upstream(request: pytest.FixtureRequest) -> None:
    if "fake_upstream" in request.fixturenames:
        request.getfixturevalue("fake_upstream").reset()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty database: SQLite always; PostgreSQL where TUNEGATE_TEST_DATABASE_URL names a server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'tunegate.db'}"
        return
    base = os.environ.get("TUNEGATE_TEST_DATABASE_URL")
    if not base:
        pytest.skip("PostgreSQL run skipped: set TUNEGATE_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test")
    yield from postgres_database(base)


@pytest.fixture(scope="module")
def own_database_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another empty database of the same kind, for one module: every total in it is that module's own."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path_factory.mktemp('own-db') / 'tunegate.db'}"
        return
    yield from postgres_database(os.environ["TUNEGATE_TEST_DATABASE_URL"])


@pytest.fixture(scope="session")
def gateway(
    database_url: str, fake_upstream: FakeUpstreamHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayHandle]:
    """The shared gateway (tests.utils.gateways.gateway_yaml) with a team key for airport-cs and other-team."""
    with running_gateway(database_url, fake_upstream.base_url, tmp_path_factory.mktemp("config")) as handle:
        yield handle

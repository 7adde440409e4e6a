"""Empty databases for the tests: a PostgreSQL database of their own on the server TUNEGATE_TEST_DATABASE_URL
names, created for a scope and dropped after it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest


def postgres_database(base_url: str) -> Iterator[str]:
    """Yield the URL of a new, empty database on ``base_url``'s server, and drop it afterwards (skip when the
    server cannot be reached)."""
    name = "tunegate_test_" + uuid.uuid4().hex[:12]
    plain = base_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at TUNEGATE_TEST_DATABASE_URL is not reachable: {exc}")
    yield plain.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""A gateway of a test module's own: its database, its configuration, its metrics, on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from config import load_settings
from proxy.app import create_app
from proxy.state import Gateway
from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, GatewayHandle, gateway_yaml
from tests.utils.servers import ServerThread


@contextmanager
def running_gateway(
    database_url: str, fake_base_url: str, directory: Path, *, extra: str = "", teams: tuple[str, ...] = ()
) -> Iterator[GatewayHandle]:
    """The conftest configuration (``extra``: one more top-level YAML line) served on 127.0.0.1.

    ``handle.keys`` holds a team key for airport-cs, other-team and each of ``teams`` (created here).
    """
    os.environ["TUNEGATE_ADMIN_KEY"] = ADMIN_KEY
    os.environ["TUNEGATE_TEST_UPSTREAM_KEY"] = UPSTREAM_KEY
    path = directory / "tunegate.yaml"
    path.write_text(gateway_yaml(database_url, fake_base_url, extra=extra), encoding="utf-8")
    settings = load_settings(path)
    gateway = Gateway(settings)
    with ServerThread(create_app(settings, gateway=gateway)) as server:
        handle = GatewayHandle(server.url, gateway)
        for team in teams:
            handle.admin("POST", "/admin/teams", json={"name": team}).raise_for_status()
        for team in ("airport-cs", "other-team", *teams):
            response = handle.admin("POST", "/admin/keys", json={"team": team, "name": "tests"})
            response.raise_for_status()
            handle.keys[team] = response.json()["key"]
        yield handle

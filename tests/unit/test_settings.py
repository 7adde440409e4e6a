"""The configuration loader: strict keys, secrets by reference, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunegate.config import DEFAULT_CONFIG, ConfigError, load_settings, resolve_secret


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_configuration_loads() -> None:
    settings = load_settings(DEFAULT_CONFIG)
    alias = settings.aliases["pudong-support"]
    assert alias.model == "ft:gpt-3.5-turbo-0613:pudong::8abc123"
    assert alias.fallback is not None and alias.fallback.model == "gpt-3.5-turbo"
    assert settings.upstreams["openai"].api_key == "$OPENAI_API_KEY"


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "upstreams:\n  u: {base_url: 'http://x', api_key: '$K'}\naliases:\n  a: {upstream: u, model: m, modle: x}\n",
    )
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(path) in str(error.value) and "unknown key 'aliases.a.modle'" in str(error.value)


def test_secrets_are_references_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "upstreams:\n  u: {base_url: 'http://x', api_key: '$MY_UPSTREAM_KEY'}\n")
    monkeypatch.setenv("MY_UPSTREAM_KEY", "sk-123")
    settings = load_settings(path)
    assert settings.upstreams["u"].api_key == "$MY_UPSTREAM_KEY"
    assert resolve_secret(settings.upstreams["u"].api_key) == "sk-123"
    literal = write(tmp_path, "upstreams:\n  u: {base_url: 'http://x', api_key: 'sk-literal'}\n")
    with pytest.raises(ConfigError, match="api_key"):
        load_settings(literal)


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEGATE_DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("TUNEGATE_PORT", "9123")
    monkeypatch.setenv("TUNEGATE_HOST", "0.0.0.0")
    monkeypatch.setenv("TUNEGATE_ADMIN_KEY", "adm")
    settings = load_settings(write(tmp_path, "server: {port: 1}\n"))
    assert (settings.database.url, settings.server.port, settings.server.host) == ("postgresql://db/x", 9123, "0.0.0.0")
    assert settings.admin_key == "adm"


def test_config_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEGATE_CONFIG", str(write(tmp_path, "server: {port: 4321}\n")))
    assert load_settings().server.port == 4321


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aliases:\n  a: {upstream: nowhere, model: m}\n", "unknown upstream 'nowhere'"),
        ("server: {port: 'high'}\n", "server.port"),
        ("- a list\n", "top level must be a mapping"),
        ("aliases: [\n", "not valid YAML"),
        ("teams:\n  - name: 'ops:eu'\n", r": teams\[0\]\.name: 'ops:eu' is not a usable team name"),
        ("upstreams:\n  'a b': {base_url: 'http://x'}\n", ": upstreams.a b: 'a b' is not a usable upstream name"),
        ("upstreams:\n  u: {base_url: 'http://x'}\naliases:\n  -x: {upstream: u, model: m}\n", ": aliases.-x: '-x'"),
        (
            "upstreams:\n  u: {base_url: 'http://x'}\n"
            "aliases:\n  a: {upstream: u, split: [{model: m, weight: 50}, {model: m, weight: 50}]}\n",
            r"aliases.a: split\[1\]: repeats model 'm'; give each model once",
        ),
    ],
)
def test_unusable_files_are_refused_with_a_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text))

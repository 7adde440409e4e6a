"""The configuration a user edits, and the loader that reads it."""

from tunegate.config.settings import (
    DEFAULT_CONFIG,
    AliasSettings,
    ConfigError,
    Settings,
    TargetSettings,
    UpstreamSettings,
    env_ref,
    load_settings,
    parse_settings,
    resolve_secret,
)

__all__ = [
    "DEFAULT_CONFIG",
    "AliasSettings",
    "ConfigError",
    "Settings",
    "TargetSettings",
    "UpstreamSettings",
    "env_ref",
    "load_settings",
    "parse_settings",
    "resolve_secret",
]

"""The one set of rules for team, alias and upstream names, for the loader, the registry and the admin API.

Each rule is a compiled pattern (its ``.pattern`` also serves pydantic's ``Field(pattern=...)``) and a
function that says what is wrong with a name in the words a user reads, or None when the name is usable.
"""

from __future__ import annotations

import re

WILDCARD = "*"  # in an alias name: a pattern forwarding the model name a client asks for (`gpt-4o*`, `*`)

# Anchored with ^ and $ for pydantic's regex engine, and always applied with fullmatch: Python's $ alone
# would also match before a trailing newline.
TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
UPSTREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_NAME = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9._:/*-]{0,127}$")  # `:` for ids such as ft:gpt-4o:org::id


def team_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a team, or None when it can."""
    if TEAM_NAME.fullmatch(name):
        return None
    return (
        f"'{name}' is not a usable team name: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )


def upstream_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an upstream, or None when it can."""
    if UPSTREAM_NAME.fullmatch(name):
        return None
    return (
        f"'{name}' is not a usable upstream name: 1-128 letters, digits, '.', '_' or '-', starting with a letter "
        "or digit"
    )


def alias_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an alias (or an alias pattern), or None when it can."""
    if ALIAS_NAME.fullmatch(name):
        return None
    return (
        f"'{name}' is not a usable alias name: 1-128 letters, digits or '._:/-', '*' as a wildcard, starting with "
        "a letter, digit or '*'"
    )

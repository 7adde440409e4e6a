"""Environment variables a test sets for as long as it needs them and then gives back as they were.

The gateway reads its secrets (``$TUNEGATE_ADMIN_KEY``, an upstream's ``$NAME``) from the environment each time it
uses them, so a gateway served in-process needs them for its whole life, and gateways of different scopes (a
module's, the session's) end in any order: a variable is put back only when the last holder of it lets go.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

_held: dict[str, tuple[str, str | None, int]] = {}  # name → (value held, value before the first holder, holders)


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block; afterwards each is what it was before the first holder.

    Two holders may share a name only with the same value: a second value would change the first holder's gateway.
    """
    for name, value in values.items():
        held = _held.get(name)
        if held is not None and held[0] != value:
            raise AssertionError(f"{name} is held as {held[0]!r} by another fixture: cannot set it to {value!r}")
    for name, value in values.items():
        _, before, holders = _held.get(name, (value, os.environ.get(name), 0))
        _held[name] = (value, before, holders + 1)
        os.environ[name] = value
    try:
        yield
    finally:
        for name in values:
            value, before, holders = _held[name]
            if holders > 1:
                _held[name] = (value, before, holders - 1)
                continue
            del _held[name]
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before

"""The one way a test waits for something another thread or process does: ``eventually`` polls a check until it
holds, and otherwise fails saying what it waited for and what it saw last."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
SHOWN = 2000  # characters of the last value or exception kept in the failure message


def eventually(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.05,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns something other than None or False; return that.

    An AssertionError the check raises (or one of ``ignoring``) means "not yet"; any other exception ends the wait
    at once. After ``timeout`` seconds, an AssertionError names ``what`` and the last value or exception seen.
    """
    retried: tuple[type[Exception], ...] = (AssertionError, *ignoring)
    deadline = time.monotonic() + timeout
    while True:
        error: Exception | None = None
        try:
            value = check()
        except retried as exc:
            error, last = exc, f"raised {exc!r}"
        else:
            if value is not None and value is not False:
                return value
            last = f"returned {value!r}"
        if time.monotonic() >= deadline:
            if len(last) > SHOWN:
                last = last[:SHOWN] + " …"
            raise AssertionError(f"waited {timeout}s for {what}; the last check {last}") from error
        time.sleep(interval)

"""The admin API's client for the commands: the one HTTP client, their errors, the options every command takes
(``--url``, ``--output``), and how a command is run and its answer printed.

Exit status: 0 done, 1 the server refused (its message is printed) or could not be reached, 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from tunegate.proxy.cli.output import render

DEFAULT_URL = "http://127.0.0.1:8000"
OUTPUTS = ("table", "json", "yaml")


class CommandError(Exception):
    """The server refused, or could not be reached: exit 1 with this message."""


class UsageError(Exception):
    """The command line or environment cannot be used: exit 2 with this message."""


class AdminClient:
    def __init__(self, url: str, key: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=60)

    def call(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        import httpx

        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, path, json=body, params=query)
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach the gateway at {self.url}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else response.text.strip()
            raise CommandError(f"{message} (HTTP {response.status_code})")
        return data


# A handler answers the data (printed as JSON or YAML with --output) and the text (the table); a third element,
# when there is one, is the exit status of a command that succeeded but has something to say by it (apply's diff).
Handler = Callable[[argparse.Namespace, AdminClient], tuple[Any, str] | tuple[Any, str, int]]


def url_of(args: argparse.Namespace) -> str:
    url: str | None = getattr(args, "url", None)
    return url or os.environ.get("TUNEGATE_URL") or DEFAULT_URL


def output_of(args: argparse.Namespace) -> str:
    """--output, else json for --json (its alias), else table."""
    output: str | None = getattr(args, "output", None)
    return output or ("json" if getattr(args, "json", False) else "table")


def runner(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            key = os.environ.get("TUNEGATE_ADMIN_KEY")
            if not key:
                raise UsageError("set TUNEGATE_ADMIN_KEY to an admin key of the gateway")
            answer = handler(args, AdminClient(url_of(args), key))
        except UsageError as exc:
            print(f"tunegate: {exc}", file=sys.stderr)
            return 2
        except CommandError as exc:
            print(f"tunegate: error: {exc}", file=sys.stderr)
            return 1
        data, text = answer[0], answer[1]
        output = output_of(args)
        if output != "table":
            print(render(data, output))
        elif text:
            print(text)
        return answer[2] if len(answer) == 3 else 0

    return run


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """--url and --output (--json): on the main parser and on every command, so they may come before or after it.
    Nothing is set unless given (SUPPRESS): a command's own parser must not overwrite what came before it."""
    parser.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the gateway (default: $TUNEGATE_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default=argparse.SUPPRESS,
        help="table (default), or the server's answer as json or yaml",
    )
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="the same as --output json")


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common)
    return common

"""The admin API's client for the commands: the one HTTP client, their errors and how a command is run.

Exit status: 0 done, 1 the server refused (its message is printed) or could not be reached, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


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


Handler = Callable[[argparse.Namespace, AdminClient], tuple[Any, str]]


def runner(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            key = os.environ.get("TUNEGATE_ADMIN_KEY")
            if not key:
                raise UsageError("set TUNEGATE_ADMIN_KEY to an admin key of the gateway")
            data, text = handler(args, AdminClient(args.url, key))
        except UsageError as exc:
            print(f"tunegate: {exc}", file=sys.stderr)
            return 2
        except CommandError as exc:
            print(f"tunegate: error: {exc}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        elif text:
            print(text)
        return 0

    return run


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=os.environ.get("TUNEGATE_URL", DEFAULT_URL), help="the gateway (default: $TUNEGATE_URL)"
    )
    common.add_argument("--json", action="store_true", help="print the server's JSON answer")
    return common

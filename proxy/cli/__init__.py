"""The ``tunegate`` command: one sub-command per module, each registering itself on the parser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tunegate.proxy.cli import admin, finetune, serve, usage

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
COMMANDS: list[Register] = [serve.register, admin.register, usage.register, finetune.register]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunegate", description="OpenAI-compatible gateway with a fine-tune registry")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

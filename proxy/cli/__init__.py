"""The ``tunegate`` command: one sub-command per module, each registering itself on the parser; the options every
command takes (``--url``, ``--output``), ``--version``, suggestions for a mistyped name, and shell completion."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, cast

from tunegate.proxy.cli import admin, finetune, serve, usage
from tunegate.proxy.cli.client import add_global_options
from tunegate.proxy.cli.completion import SHELLS, script
from tunegate.proxy.cli.examples import EXAMPLES

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
COMMANDS: list[Register] = [serve.register, admin.register, usage.register, finetune.register]


class Parser(argparse.ArgumentParser):
    """argparse with the examples' layout kept, and 'did you mean' when a command or a choice is mistyped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is None or value in action.choices:
            return
        names = [str(choice) for choice in action.choices]
        close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
        if isinstance(action, argparse._SubParsersAction):
            hint = f"did you mean '{close[0]}'?" if close else f"see '{self.prog} --help'"
            self.error(f"unknown command '{value}': {hint}")
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise argparse.ArgumentError(action, f"invalid choice: '{value}'{hint} (choose from {', '.join(names)})")


def version() -> str:
    try:
        return metadata.version("tunegate")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> Parser:
    parser = Parser(
        prog="tunegate", description="OpenAI-compatible gateway with a fine-tune registry", epilog=EXAMPLES[""]
    )
    parser.add_argument("--version", action="version", version=f"tunegate {version()}")
    add_global_options(parser)
    # Every parser under it is a Parser (argparse makes them of the main parser's class); the modules need not know.
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    for register in COMMANDS:
        register(sub)
    completion = sub.add_parser("completion", help="print a shell completion script: bash, zsh or fish")
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(run=lambda args: _print(script(parser, args.shell)))
    for name, examples in EXAMPLES.items():
        if name:
            sub.choices[name].epilog = examples
    return parser


def _print(text: str) -> int:
    sys.stdout.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

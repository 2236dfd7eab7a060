"""The `bertserve` command. Each subcommand lives in `bertserve.commands.<name>` and exposes
`HELP`, `add_arguments(parser)` and `run(args) -> int`; modules are light to import (heavy
libraries are imported inside `run`)."""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser"]

COMMANDS: tuple[str, ...] = ("serve", "build", "perf", "report", "plan", "demo", "ask", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertserve",
        description="Build, serve, measure and cost BERT question-answering models "
        "behind Triton's protocol.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"bertserve.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        # argparse would blame the top-level parser and print its usage; the flag belongs to
        # the subcommand, whose usage says what it does take.
        args._parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

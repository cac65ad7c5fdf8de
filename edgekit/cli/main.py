"""The ``edgekit`` command line: parse, call one API function, render.

Each command lives in its own module ``edgekit.cli.cmd_<name>`` exposing
``add_parser(subparsers)`` (which sets ``func`` on its parser) so commands can
be added without touching this file's logic: list the module in
:data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from edgekit import __version__
from edgekit.core.errors import EdgekitError

__all__ = ["main", "build_parser", "COMMANDS"]

logger = logging.getLogger("edgekit")

#: Command modules, in the order ``--help`` lists them.
COMMANDS = [
    "boards",
    "inspect",
    "compress",
    "compile",
    "tune",
    "flash",
    "run",
    "bench",
    "demo",
    "doctor",
    "completion",
]

EPILOG = """examples:
  edgekit boards
  edgekit inspect model.onnx --board stm32h7
  edgekit compile model.onnx --board host -o model.ekpkg
  edgekit bench model.ekpkg --compare-ort --json result.json

Run 'edgekit COMMAND --help' for the options of one command.
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available command."""
    parser = argparse.ArgumentParser(
        prog="edgekit",
        description="Compress, compile, flash and benchmark ONNX models on edge boards and their simulators.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print results and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"edgekit.cli.cmd_{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"edgekit.cli.cmd_{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    # --debug and -q work after the command name too (edgekit compile ... --debug).
    for command_parser in sub.choices.values():
        command_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command_parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgekit`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO),
        format="%(levelname)s %(name)s: %(message)s" if args.debug else "%(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgekitError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an edgekit bug or a library failure we did not anticipate
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

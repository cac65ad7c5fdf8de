"""JSON text of API results (numpy arrays and scalars, paths), for the
report files the API writes and the command line's ``--json``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["dumps", "write_json"]


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def dumps(data: Any) -> str:
    """Indented JSON of ``data``."""
    return json.dumps(data, indent=2, default=_default)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Writes ``data`` as indented JSON (and a newline) to ``path``."""
    Path(path).write_text(dumps(data) + "\n", encoding="utf-8")

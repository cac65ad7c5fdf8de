"""edgekit's one cache folder.

Everything edgekit rebuilds on demand lives below one root: built device
agents (``agents/``), zig's own compiler cache (``zig/``), tuning databases
(``tuning/``) and NPU RTL models (``npu-rtl/``). The root is

1. ``$EDGEKIT_CACHE`` when set (documented since the first agent cache),
2. else ``$XDG_CACHE_HOME/edgekit``,
3. else ``~/.cache/edgekit``.

Deleting the folder is always safe: its contents are rebuilt when needed.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "cache_dir"]


def cache_root() -> Path:
    """edgekit's cache root (see the module docstring for the search order)."""
    env = os.environ.get("EDGEKIT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "edgekit"


def cache_dir(kind: str) -> Path:
    """The sub-folder of the cache root for one kind of cached thing (``agents``, ``tuning``, ...)."""
    return cache_root() / kind

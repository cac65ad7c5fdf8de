"""Writing output files atomically without losing the user's umask."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["temp_beside"]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def temp_beside(dest: Path) -> tuple[int, str]:
    """A new temporary file next to ``dest`` (for ``os.replace`` onto it),
    with the mode a plain ``open(dest, "w")`` would give: ``0o666`` less the
    umask. ``tempfile.mkstemp`` alone makes it ``0o600``, and the replaced
    output would keep that, unreadable to the user's group.

    Returns:
        The open file descriptor and the temporary path.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    except OSError:
        pass  # a file system without modes (some network mounts): keep mkstemp's
    return fd, tmp

"""``edgekit boards``: the board profiles edgekit knows."""

from __future__ import annotations

import os
from collections.abc import Iterable

from edgekit.core.profiles import Board, load_profiles

__all__ = ["list_boards"]


def list_boards(board_dirs: Iterable[str | os.PathLike[str]] = ()) -> list[Board]:
    """Every known board profile (built-in, ``EDGEKIT_BOARDS`` and
    ``board_dirs``), sorted by name.

    Raises:
        ConfigError: a profile in one of the folders is invalid.
    """
    profiles = load_profiles(board_dirs)
    return [profiles.board(name) for name in profiles.boards.available()]

"""Where a package runs: the board, a port or the simulator (the flags
``run``, ``flash`` and ``bench`` share). Light to import: the command line
builds it before anything heavy loads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["RunTarget"]


@dataclass(frozen=True)
class RunTarget:
    """Where a package runs.

    Attributes:
        board: Board profile name; ``None``: the board the package was built for.
        allow_other_board: Run a package built for another board.
        port: Serial port (or address) of an attached board.
        sim: ``True``: the board's simulator even if a board is attached;
            ``False``: never; ``None``: the runner decides; ``"rtl"`` /
            ``"model"``: an NPU board's RTL or Python model.
        board_dirs: Extra folders of board/target profiles.
    """

    board: str | None = None
    allow_other_board: bool = False
    port: str | None = None
    sim: bool | str | None = None
    board_dirs: tuple[str | os.PathLike[str], ...] = ()

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments the runtime's run and bench functions take."""
        return {"board": self.board, "allow_other_board": self.allow_other_board, "port": self.port,
                "sim": self.sim, "board_dirs": list(self.board_dirs)}  # fmt: skip

"""How API functions with several long phases report progress.

A verb with one kind of progress takes a plain callback (``compile_model``:
``progress(stage, message)``; ``run_package``: ``progress(done, total)``).
:func:`edgekit.api.compress.compress_model` runs several phases (pruning,
quantizing, measuring on the board), each with its own count: it takes a
:class:`Progress`, which opens a :class:`Phase` per phase. The command line
shows each phase as a progress bar; a program may log them, or pass nothing.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Protocol

__all__ = ["Phase", "Progress", "SILENT"]


class Phase(Protocol):
    """One running phase.

    Attributes:
        note: Receives one-line messages of the phase (e.g. each layer
            accuracy control evaluates), or ``None``: they go to the log.
    """

    note: Callable[[str], None] | None

    def update(self, done: int, total: int | None = None, description: str | None = None) -> None:
        """``done`` of ``total`` units finished; ``description`` says what runs now."""


class Progress(Protocol):
    """Opens a :class:`Phase` for each long phase of an API call."""

    def phase(self, description: str, total: int | None = None) -> ContextManager[Phase]:
        """The phase ``description`` (e.g. ``"quantizing"``), of ``total`` units if known."""


class _Silent:
    note = None

    def update(self, done: int, total: int | None = None, description: str | None = None) -> None:
        pass

    def phase(self, description: str, total: int | None = None) -> ContextManager[Phase]:
        return contextlib.nullcontext(self)


#: Reports nothing (messages go to the log).
SILENT: Progress = _Silent()

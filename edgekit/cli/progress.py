"""Progress for long steps: a rich progress bar on stderr, shown only on a
terminal, only in human mode (never with ``--json`` or ``-q``), and only once
a step has lasted :data:`SHOW_AFTER_S` — short steps stay silent."""

from __future__ import annotations

import argparse
import contextlib
import threading
from types import TracebackType
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgekit.cli import render

__all__ = ["Activity", "activity_for", "SHOW_AFTER_S", "CliProgress"]

#: Seconds a step runs before its progress bar appears.
SHOW_AFTER_S = 2.0


class Activity:
    """One long step: ``with Activity("uploading", total=n, enabled=...) as a: a.advance()``.

    Without ``total`` the bar is a spinner with the elapsed time.
    """

    def __init__(self, description: str, *, total: int | None = None, enabled: bool = True) -> None:
        self.enabled = enabled and render.err_console.is_terminal
        self._progress: Progress | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        if not self.enabled:
            return
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        self._progress = Progress(*columns, TimeElapsedColumn(), console=render.err_console, transient=True)
        self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> "Activity":
        if self._progress is not None:
            self._timer = threading.Timer(SHOW_AFTER_S, self._show)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _show(self) -> None:
        with self._lock:
            if self._progress is not None and self._timer is not None:
                self._progress.start()

    def advance(self, steps: int = 1) -> None:
        """Counts ``steps`` more units done."""
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def update(self, done: int, total: int | None = None, description: str | None = None) -> None:
        """Sets the units done (and the total, or the text, once known)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total,
                                  **({"description": description} if description else {}))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._progress is not None:
                self._progress.stop()


def activity_for(args: argparse.Namespace, description: str, *, total: int | None = None) -> Activity:
    """An :class:`Activity` that stays off with ``--json`` on stdout or ``-q``."""
    quiet = bool(getattr(args, "quiet", False)) or (hasattr(args, "json") and render.json_to_stdout(args))
    return Activity(description, total=total, enabled=not quiet)


class CliProgress:
    """The API's :class:`edgekit.api.progress.Progress` on the terminal: a
    bar per phase (see :func:`activity_for`) and the phase's messages on
    stderr beside it — none of either with ``--json`` on stdout or ``-q``
    (the messages then go to the log)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.notes = not getattr(args, "quiet", False) and not (hasattr(args, "json") and render.json_to_stdout(args))

    @contextlib.contextmanager
    def phase(self, description: str, total: int | None = None) -> Iterator["_Phase"]:
        """An :class:`Activity` for the phase."""
        with activity_for(self.args, description, total=total) as act:
            yield _Phase(act, description, self.notes)


class _Phase:
    def __init__(self, act: Activity, description: str, notes: bool) -> None:
        self._act, self._description = act, description
        self.note: Callable[[str], None] | None = self._note if notes else None

    def update(self, done: int, total: int | None = None, description: str | None = None) -> None:
        self._act.update(done, total, description)

    def _note(self, message: str) -> None:
        render.err_console.print(message, highlight=False)
        self._act.update(0, description=f"{self._description}: {message[:60]}")

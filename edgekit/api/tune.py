"""``edgekit tune``: MetaSchedule tuning of a model's kernels for a board;
the records go to the per-target database that compiling reads."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Callable

from edgekit.core.errors import InputError
from edgekit.core.profiles import get_board

if TYPE_CHECKING:  # the tuner imports TVM: only when tuning runs
    from edgekit.compiler.backends.llvm.tuning import TuneProgress, TuneReport

__all__ = ["tune_model"]


def tune_model(
    model: str | os.PathLike[str],
    trials: int,
    *,
    board: str = "host",
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    db_root: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    tracker: str | None = None,
    key: str | None = None,
    board_dirs: Iterable[str | os.PathLike[str]] = (),
    progress: Callable[["TuneProgress"], None] | None = None,
) -> "TuneReport":
    """Tunes ``model``'s kernels for ``board`` with a budget of ``trials``.

    Example::

        report = tune_model("model.onnx", 500, board="host")
        print(report.trials_measured, report.database_dir)

    Args:
        tracker, key: Measure on a remote board registered with this TVM
            RPC tracker under ``key``.
        progress: Called with a :class:`edgekit.compiler.backends.llvm.tuning.TuneProgress`
            as trials finish.

    Returns:
        The :class:`edgekit.compiler.backends.llvm.tuning.TuneReport`.

    Raises:
        InputError: negative trials, or a key without a tracker.
        ConfigError, CompileError: from the board profile and the tuner.
    """
    from edgekit.compiler.backends.llvm.tuning import tune_model as _tune
    from edgekit.frontend.loader import load_model

    if trials < 0:
        raise InputError(f"--trials must be >= 0, got {trials}", hint="Use e.g. --trials 500.")
    profile, target = get_board(board, board_dirs)
    if key and not tracker and profile.transport.kind != "rpc":
        raise InputError("--key needs --tracker", hint="Add --tracker HOST:PORT (the TVM RPC tracker the board is registered with).")
    prepared = load_model(model, input_shapes)
    return _tune(prepared, profile, target, trials, db_root=db_root, progress=progress, seed=seed,
                      tracker=tracker, key=key)  # fmt: skip

"""Calibration and evaluation data: ``.npz`` files or dicts of arrays.

edgekit's data convention (shared/DESIGN.md): one array per model input name,
first axis = samples. A model with a static batch of ``B`` takes ``B`` samples
per run; an array whose items already have the input's full shape is taken
one item per run.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edgekit.core.errors import InputError
from edgekit.core.tensors import TensorSpec, check_inputs

__all__ = [
    "Feeds",
    "DataSource",
    "load_arrays",
    "make_feeds",
    "split_holdout",
    "holdout_indices",
    "select_runs",
    "FeedsReader",
    "shapes_from_data",
]

logger = logging.getLogger(__name__)

#: One run's inputs, by input name.
Feeds = dict[str, np.ndarray]
#: What users pass as data: an ``.npz`` path or a dict of arrays.
DataSource = str | os.PathLike[str] | Mapping[str, np.ndarray]


def load_arrays(source: DataSource, *, what: str = "calibration data") -> dict[str, np.ndarray]:
    """Reads an ``.npz`` file (or takes a dict) into a dict of arrays.

    Raises:
        InputError: the file is missing, unreadable or empty.
    """
    if isinstance(source, Mapping):
        arrays = {str(k): np.asarray(v) for k, v in source.items()}
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{what} file '{path}' does not exist", hint="Check the path of the .npz file.")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise InputError(
                f"{what} file '{path}' is not a readable .npz ({exc})",
                hint="Write it with numpy.savez(path, **{input_name: array}).",
            ) from None
    if not arrays:
        raise InputError(f"{what} has no arrays", hint="Store one array per model input, first axis = samples.")
    return arrays


def shapes_from_data(declared: Mapping[str, Sequence[int | str | None]],
                     arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Static input shapes read off calibration data, for inputs whose
    declared shape has symbolic (or unknown) dimensions.

    An array with one more axis than the input holds stacked samples (its
    items are the shape); one with the input's rank holds samples along a
    batch axis, which becomes 1. A shape that contradicts a fixed declared
    dimension is left out (loading then names the mismatch).

    Args:
        declared: Each input's declared dimensions: an int when fixed,
            anything else (a name, None, 0 or less) when symbolic.
        arrays: The calibration arrays, by input name.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for name, dims in declared.items():
        fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
        if name not in arrays or all(d is not None for d in fixed):
            continue
        data = np.shape(arrays[name])
        if len(data) == len(fixed) + 1:
            shape = tuple(int(d) for d in data[1:])
        elif len(data) == len(fixed) and fixed:
            shape = (1, *(int(d) for d in data[1:]))
        else:
            continue
        if all(f is None or f == s for f, s in zip(fixed, shape)):
            shapes[name] = shape
    return shapes


def make_feeds(
    arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], *, what: str = "calibration data"
) -> list[Feeds]:
    """Cuts arrays (first axis = samples) into one feed dict per model run.

    Args:
        arrays: One array per input name; extra keys (e.g. ``labels``
            stored beside the inputs for a metric) are not fed to the model.
        specs: The model's inputs with their static shapes.
        what: Name of the data in error messages.

    Returns:
        The feeds, in sample order.

    Raises:
        InputError: an input is missing, the sample counts differ, or an
            array's item shape fits the input neither as one sample of a batch
            nor as a whole input.
    """
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(
            f"{what} lacks the model input(s) {', '.join(missing)} (it has {', '.join(sorted(arrays))})",
            hint=f"Store one array per model input, keyed by name: {', '.join(names)}.",
            missing=missing,
        )
    extra = sorted(set(arrays) - set(names))
    if extra:
        # Labels and the like are expected here (a --metric reads them).
        logger.info("%s: arrays that are not model inputs (left to the metric): %s", what, ", ".join(extra))

    per_input: dict[str, list[np.ndarray]] = {}
    for spec in specs:
        arr = np.asarray(arrays[spec.name])
        batch = spec.shape[0] if spec.shape else 1
        if spec.shape and tuple(arr.shape[1:]) == tuple(spec.shape[1:]) and arr.ndim == len(spec.shape):
            # Samples stacked along the batch axis: B per run.
            runs = arr.shape[0] // batch
            if runs * batch != arr.shape[0]:
                logger.warning(
                    "%s: '%s' has %d samples, not a multiple of the batch %d; the last %d are unused",
                    what, spec.name, arr.shape[0], batch, arr.shape[0] - runs * batch,
                )  # fmt: skip
            chunks = [arr[i * batch : (i + 1) * batch] for i in range(runs)]
        elif tuple(arr.shape[1:]) == tuple(spec.shape):
            chunks = [arr[i] for i in range(arr.shape[0])]
        else:
            raise InputError(
                f"{what}: array '{spec.name}' has shape {list(arr.shape)}, which is not samples of the "
                f"model input {list(spec.shape)}",
                hint=f"Store it as [N, {', '.join(str(d) for d in spec.shape[1:])}] (first axis = samples).",
                input=spec.name,
            )
        per_input[spec.name] = chunks
    counts = {n: len(c) for n, c in per_input.items()}
    if len(set(counts.values())) > 1:
        raise InputError(
            f"{what}: inputs have different sample counts ({', '.join(f'{n}: {c}' for n, c in counts.items())})",
            hint="Give every input the same number of samples along the first axis.",
        )
    n_runs = next(iter(counts.values()))
    if n_runs == 0:
        raise InputError(f"{what} holds no complete sample", hint="Add samples along the first axis.")
    return [check_inputs(list(specs), {n: per_input[n][i] for n in names}) for i in range(n_runs)]


def split_holdout(feeds: list[Feeds], fraction: float, seed: int) -> tuple[list[Feeds], list[Feeds]]:
    """Splits feeds into (calibration, evaluation) with a seeded shuffle.

    A shuffle rather than a tail cut, because data files are often sorted by
    class and a tail would evaluate on one class only.

    Raises:
        InputError: fewer than two runs of data (nothing to hold out).
    """
    cal_idx, eval_idx = holdout_indices(len(feeds), fraction, seed)
    return [feeds[i] for i in cal_idx], [feeds[i] for i in eval_idx]


def holdout_indices(runs: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """The run indices :func:`split_holdout` puts in (calibration, evaluation).

    Raises:
        InputError: fewer than two runs of data (nothing to hold out).
    """
    if runs < 2:
        raise InputError(
            f"the calibration data has {runs} sample(s); holding out {fraction:.0%} for evaluation needs at least 2",
            hint="Add calibration samples, or pass evaluation data with --eval.",
        )
    n_eval = min(runs - 1, max(1, round(fraction * runs)))
    order = np.random.default_rng(seed).permutation(runs)
    return sorted(order[n_eval:].tolist()), sorted(order[:n_eval].tolist())


def select_runs(arrays: Mapping[str, np.ndarray], runs: int, keep: Sequence[int]) -> dict[str, np.ndarray]:
    """The rows of ``arrays`` that runs ``keep`` (of ``runs`` in all) read.

    Every array whose first axis holds ``runs * B`` rows (model inputs and
    extra arrays such as labels alike) is cut to the rows of the kept runs,
    ``B`` rows per run; other arrays are passed unchanged.
    """
    out: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        a = np.asarray(arr)
        per_run = a.shape[0] // runs if a.ndim and runs else 0
        if per_run >= 1 and a.shape[0] - per_run * runs < per_run:
            rows = np.concatenate([np.arange(i * per_run, (i + 1) * per_run) for i in keep]) if keep else np.arange(0)
            out[name] = a[rows]
        else:
            out[name] = a
    return out


class FeedsReader(CalibrationDataReader):
    """onnxruntime's calibration reader over a list of feed dicts.

    Args:
        feeds: One dict per run, as made by :func:`make_feeds`.
    """

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self._feeds = list(feeds)
        self._start = 0
        self._end = len(self._feeds)
        self._pos = 0

    def get_next(self) -> Feeds | None:
        """The next run's inputs, or ``None`` at the end."""
        if self._pos >= self._end:
            return None
        self._pos += 1
        return self._feeds[self._pos - 1]

    def rewind(self) -> None:
        """Starts again from the first sample of the current range."""
        self._pos = self._start

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restricts reading to ``[start_index, end_index)`` (strided calibration)."""
        self._start = max(0, start_index)
        self._end = min(len(self._feeds), end_index)
        self._pos = self._start

    def __len__(self) -> int:
        return len(self._feeds)

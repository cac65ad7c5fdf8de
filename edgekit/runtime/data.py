"""Input and output data files: ``.npz``, one array per tensor name.

Convention (shared/DESIGN.md): the first axis of a data file is the sample
axis. For each input, an array

* with exactly the input's shape is one sample;
* with one more leading axis, ``(N, *shape)``, holds ``N`` samples
  (mode ``"stacked"``; outputs are written stacked the same way);
* of a batch-1 input, ``(N, *shape[1:])``, holds ``N`` samples along the
  batch axis (mode ``"batch"``; outputs are concatenated on axis 0), which is
  how most data sets are saved.

Each sample is run separately. All inputs of one file must use the same mode
and hold the same number of samples.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgekit.core.errors import InputError
from edgekit.core.files import temp_beside
from edgekit.core.tensors import TensorSpec, check_inputs

__all__ = ["Samples", "read_npz", "write_npz", "split_samples", "stack_outputs", "random_inputs"]

logger = logging.getLogger(__name__)


class Samples(list):
    """A list of per-sample feed dicts, remembering how the data file laid
    out its samples (``mode``: ``"single"``, ``"stacked"`` or ``"batch"``)
    so outputs are written back the same way."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]] = (), *, mode: str = "single") -> None:
        super().__init__(feeds)
        self.mode = mode

    @property
    def batched(self) -> bool:
        """True when the file held a sample axis (stacked or along the batch)."""
        return self.mode != "single"


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads every array of an ``.npz`` file (pickled objects are refused).

    Raises:
        InputError: if the file is missing, not an ``.npz`` or holds objects.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file '{p}' does not exist", hint="Pass an .npz file with one array per model input name.")
    try:
        data = np.load(p, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InputError(
                f"'{p}' holds a single array, not an .npz archive of named arrays",
                hint="Save it with numpy.savez(path, NAME=array), one array per model input name.",
            )
        with data:
            return {name: np.asarray(data[name]) for name in data.files}
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(
            f"cannot read input file '{p}' ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})",
            hint="Write it with numpy.savez(path, NAME=array), one array per model input, without object arrays.",
        ) from None


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Writes ``arrays`` to ``path`` atomically (temp file + rename).

    Raises:
        InputError: if the destination folder does not exist or is not writable.
    """
    p = Path(path)
    if not p.parent.is_dir():
        raise InputError(f"cannot write '{p}': folder '{p.parent}' does not exist", hint="Create it, or choose another -o path.")
    try:
        fd, tmp = temp_beside(p)
    except OSError as exc:
        raise InputError(f"cannot write '{p}': {exc.strerror}", hint="Check write permission for that folder.") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def _layout(spec: TensorSpec, arr: np.ndarray) -> tuple[str, int]:
    if tuple(arr.shape) == spec.shape:
        return "single", 1
    if arr.ndim == len(spec.shape) + 1 and tuple(arr.shape[1:]) == spec.shape:
        return "stacked", int(arr.shape[0])
    if spec.shape and spec.shape[0] == 1 and arr.ndim == len(spec.shape) and tuple(arr.shape[1:]) == spec.shape[1:]:
        return "batch", int(arr.shape[0])
    return "bad", 0


def split_samples(specs: Sequence[TensorSpec], arrays: Mapping[str, np.ndarray]) -> Samples:
    """Turns the arrays of a data file into validated per-sample feeds.

    Raises:
        InputError: naming a missing, unknown or wrongly shaped input, or
            inputs that disagree on the number or layout of samples.
    """
    specs = list(specs)
    if not specs:  # a model without inputs (all constants) runs once
        check_inputs(specs, arrays)  # names any unknown input
        return Samples([{}])
    # Check names first so a missing input is reported as missing, not as a
    # shape problem.
    if set(arrays) != {s.name for s in specs}:
        check_inputs(specs, arrays)  # raises naming the missing/unknown inputs
    layouts = {s.name: _layout(s, np.asarray(arrays[s.name])) for s in specs}
    bad = [s for s in specs if layouts[s.name][0] == "bad"]
    if bad:
        check_inputs(bad, {s.name: arrays[s.name] for s in bad})  # names the shape problem
    modes = {mode for mode, _ in layouts.values()}
    if modes == {"single"}:
        return Samples([check_inputs(specs, arrays)])
    if "single" in modes and any(n > 1 for _, n in layouts.values()):
        single = [name for name, (mode, _) in layouts.items() if mode == "single"]
        raise InputError(
            f"input(s) {', '.join(single)} hold one sample while others hold several",
            hint="Give every input the same number of samples on its first axis.",
        )
    counts = {name: n for name, (mode, n) in layouts.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise InputError(f"inputs hold different numbers of samples ({listing})", hint="Give every input the same number of samples.")
    modes.discard("single")  # a batch-1 input of shape (1, ...) fits either layout
    if len(modes) > 1:
        raise InputError(
            "inputs mix a separate sample axis (N, *shape) with samples along the batch axis",
            hint="Lay out every input the same way.",
        )
    mode = modes.pop()
    n = next(iter(counts.values()))
    if n == 0:
        raise InputError("the input file holds 0 samples", hint="Put at least one sample in it.")

    def sample(spec: TensorSpec, i: int) -> np.ndarray:
        arr = np.asarray(arrays[spec.name])
        if layouts[spec.name][0] == "single":
            return arr
        return arr[i] if mode == "stacked" else arr[i : i + 1]

    return Samples([check_inputs(specs, {s.name: sample(s, i) for s in specs}) for i in range(n)], mode=mode)


def stack_outputs(results: Sequence[Mapping[str, np.ndarray]], *, mode: str) -> dict[str, np.ndarray]:
    """Joins per-sample outputs the way the inputs were laid out: as they are
    (``single``), on a new first axis (``stacked``) or along axis 0 (``batch``)."""
    if not results:
        return {}
    if mode == "single":
        if len(results) != 1:
            raise ValueError("single-sample outputs must come from exactly one sample")
        return dict(results[0])
    join = np.stack if mode == "stacked" else np.concatenate
    return {name: join([r[name] for r in results]) for name in results[0]}


def random_inputs(specs: Sequence[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds of the right shape and dtype (for benchmarks without data).

    Floats are standard normal; integers are drawn from [0, 10) so that index
    inputs (token ids, gather indices) stay in range for typical models;
    booleans are fair coin flips.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, 10, size=spec.shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=spec.shape).astype(bool)
        else:
            raise InputError(
                f"cannot make random data for input '{spec.name}' of dtype {dtype}",
                hint="Pass real data with --input IN.npz.",
            )
    return feeds

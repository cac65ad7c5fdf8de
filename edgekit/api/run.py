"""``edgekit run``: a package on input arrays, on a board or its simulator."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgekit.api.target import RunTarget
from edgekit.runtime.data import read_npz, stack_outputs, write_npz
from edgekit.runtime.runner import run_package as _run

__all__ = ["RunResult", "run_package"]


@dataclass
class RunResult:
    """Outputs of every sample.

    Attributes:
        board: The board it ran on.
        runner: The runner's name (e.g. ``tvm-host``, ``mcu``).
        simulated: Whether a simulator ran it.
        samples: Number of samples run.
        outputs: Output name -> outputs stacked the way the inputs were.
        output_file: The ``.npz`` the outputs were written to, if any.
    """

    board: str
    runner: str
    simulated: bool
    samples: int
    outputs: dict[str, np.ndarray]
    output_file: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A summary: board, samples, and each output's shape, dtype, min and max."""
        return {
            "board": self.board,
            "runner": self.runner,
            "simulated": self.simulated,
            "samples": self.samples,
            "output_file": self.output_file,
            "outputs": [_output_summary(name, arr) for name, arr in self.outputs.items()],
        }


def _output_summary(name: str, arr: np.ndarray) -> dict[str, Any]:
    numeric = arr.size and arr.dtype.kind in "fiub"
    return {"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype),
            "min": float(arr.min()) if numeric else None, "max": float(arr.max()) if numeric else None}


def run_package(
    package: str | os.PathLike[str],
    inputs: Mapping[str, np.ndarray] | str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    target: RunTarget = RunTarget(),
    progress: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Runs every sample of ``inputs`` through ``package``.

    Example::

        result = run_package("model.ekpkg", "in.npz", output="out.npz", target=RunTarget(sim=True))
        print(result.outputs["logits"].shape)

    Args:
        package: The ``.ekpkg`` file.
        inputs: One array per input name (first axis = samples), or an
            ``.npz`` file of them.
        output: Write the outputs to this ``.npz`` file.
        target: Board, port or simulator.
        progress: ``progress(done, total)`` after each sample.

    Raises:
        PackageError: the package is damaged or for another board.
        InputError: an input is missing, unknown or has the wrong shape.
        DeviceError: the board or its simulator failed.
    """
    arrays = read_npz(inputs) if isinstance(inputs, (str, os.PathLike)) else inputs
    results, samples, info = _run(package, arrays, progress=progress, **target.kwargs())
    outputs = stack_outputs(results, mode=samples.mode)
    if output is not None:
        write_npz(output, outputs)
    return RunResult(board=info["board"], runner=info.get("runner", ""), simulated=bool(info.get("simulated")),
                     samples=len(samples), outputs=outputs, output_file=None if output is None else str(output),
                     info=info)  # fmt: skip

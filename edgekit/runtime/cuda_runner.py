"""Runs ``tvm-vm-cuda`` packages on this machine's NVIDIA GPU.

Like :class:`edgekit.runtime.host.HostRunner` but inputs, weights and the
Relax VM live on ``tvm.cuda(0)``; latency is TVM's ``time_evaluator`` on the
GPU (it synchronises the device around each measurement). Needs a GPU and
the CUDA driver; without one, constructing the runner raises a
:class:`DeviceError` that says so.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgekit.package import Package
from edgekit.core.errors import ConfigError, DeviceError, PackageError
from edgekit.core.links import TRANSPORTS
from edgekit.core.tensors import check_inputs
from edgekit.runtime.connection import Connection
from edgekit.runtime.runner import Timing

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = ["CudaRunner", "gpu_available", "RUNTIME"]

logger = logging.getLogger(__name__)

RUNTIME = "tvm-vm-cuda"


def gpu_available() -> bool:
    """True when TVM sees a CUDA device here."""
    try:
        import tvm

        return bool(tvm.cuda(0).exist)
    except Exception:  # no CUDA runtime in this TVM build, no driver
        return False


def _flatten(value: Any) -> list[Any]:
    if hasattr(value, "numpy"):
        return [value]
    return [t for item in value for t in _flatten(item)]


class CudaRunner:
    """Runs a CUDA package on GPU 0 of this machine.

    Raises:
        ConfigError: for ``--port`` or ``--sim`` (GPUs are not simulated).
        DeviceError: when there is no usable GPU.
    """

    simulated = False

    def __init__(self, package: Package, board: "Board", *, port: str | None = None, sim: bool | None = None) -> None:
        if port or sim:
            raise ConfigError(f"board '{board.name}' runs on this machine's GPU; --port/--sim do not apply",
                              hint="GPUs are not simulated: run on a machine with the GPU.")
        # Nothing to decide: CUDA packages run on this machine's GPU (on a Jetson, edgekit runs on the
        # Jetson), whatever transport the profile names for reaching the board from elsewhere.
        self.connection = Connection(board, TRANSPORTS.get("local"))
        if not gpu_available():
            raise DeviceError(f"no NVIDIA GPU is usable here to run board '{board.name}'s package",
                              hint="Run on a machine with an NVIDIA GPU and driver (compiling needs none).")
        self.board = board
        self._tmp: Path | None = None
        self._vm: Any = None
        self._params: list[Any] = []
        self.package: Package | None = None
        self.load(package)

    def info(self) -> dict[str, Any]:
        import tvm

        dev = tvm.cuda(0)
        return {"runner": "cuda", "device": f"{dev.device_name} (compute {dev.compute_version})", "threads": 0,
                "timing": "TVM time_evaluator on the GPU"}

    def load(self, package: Package) -> None:
        import tvm
        from tvm import relax

        if package.runtime != RUNTIME:
            raise PackageError(f"package runtime is '{package.runtime}', the CUDA runner needs '{RUNTIME}'",
                               hint=f"Recompile with --board {self.board.name}.")
        self.close()
        self._tmp = Path(tempfile.mkdtemp(prefix="edgekit-cuda-"))
        root = package.extract_to(self._tmp / "pkg")
        manifest = package.manifest
        dev = tvm.cuda(0)
        try:
            lib = tvm.runtime.load_module(str(root / manifest.library))
            self._vm = relax.VirtualMachine(lib, dev)
            weights = tvm.runtime.load_param_dict_from_file(str(root / manifest.params_member))
        except Exception as exc:
            self.close()
            raise PackageError(f"cannot load '{package.path}' on the GPU: {str(exc).splitlines()[0][:200]}",
                               hint="Was it compiled for this GPU's architecture? Recompile for the right board.") from exc
        self._params = [tvm.runtime.tensor(weights[k].numpy(), dev) for k in sorted(weights.keys())]
        self.package = package

    def _args(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        import tvm

        assert self.package is not None
        arrays = check_inputs(self.package.inputs, feeds)
        return [tvm.runtime.tensor(arrays[s.name], tvm.cuda(0)) for s in self.package.inputs] + self._params

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.package is not None
        result = _flatten(self._vm["main"](*self._args(feeds)))
        return {spec.name: t.numpy() for spec, t in zip(self.package.outputs, result)}

    def time_runs(self, feeds: Mapping[str, np.ndarray], runs: int, warmup: int) -> Timing:
        import tvm

        args = self._args(feeds)
        for _ in range(warmup):
            self._vm["main"](*args)
        self._vm.set_input("main", *args)
        timer = self._vm.time_evaluator("invoke_stateful", tvm.cuda(0), number=1, repeat=runs, min_repeat_ms=0)
        return Timing(latency_ms=[float(r) * 1e3 for r in timer("main").results])

    def close(self) -> None:
        self._vm = None
        self._params = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

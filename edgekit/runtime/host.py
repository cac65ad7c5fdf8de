"""Runs ``tvm-vm`` packages in this process with the TVM runtime.

The package is extracted (hash-checked) into a fresh temporary folder, the
shared library is loaded with :func:`tvm.runtime.load_module` and executed by a
Relax ``VirtualMachine``; the weights from ``params.bin`` follow the inputs as
arguments of ``main``.
"""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgekit.package import Package
from edgekit.package.sections import ParamsSection
from edgekit.core import cpu_features
from edgekit.core.errors import ConfigError, PackageError
from edgekit.core.tensors import check_inputs
from edgekit.core.threads import configure_tvm_threads, usable_cores
from edgekit.core.vm_exec import exec_mode_of
from edgekit.runtime.connection import connect
from edgekit.runtime.runner import Timing

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = ["HostRunner", "thread_count"]

logger = logging.getLogger(__name__)


def thread_count(board: "Board") -> int:
    """Threads to run with: ``board.cores``, or every usable core when 0."""
    return int(board.cores) if board.cores else usable_cores()


def _check_cpu(package: Package) -> None:
    """Refuses a package whose code uses an x86 extension this CPU lacks.

    Loaded anyway, its first kernel stops the whole process with an illegal
    instruction (a package built on a Sapphire Rapids host, run on a Zen 2).
    """
    import tvm

    spec = package.manifest.tvm_target
    if not isinstance(spec, dict) or spec.get("kind") != "llvm" or not cpu_features.host_flags():
        return
    missing = cpu_features.missing_features(tvm.target.Target(spec))
    if missing:
        raise PackageError(
            f"package '{package.path}' was compiled for {spec.get('mcpu') or 'another CPU'}, whose code uses "
            f"{', '.join(missing)}: this CPU lacks them, and running it would stop with an illegal instruction",
            hint="Recompile the model on this machine (edgekit compile MODEL --board host), "
            "or run the package on a CPU with those extensions.",
        )


def _flatten(value: Any) -> list[Any]:
    """Outputs of ``main``: one tensor, or (nested) tuples of tensors.

    An ONNX ``Shape`` output reaches ``main``'s return as a Relax shape (a
    tuple of ints, not a tensor): it becomes the int64 tensor ONNX defines.
    """
    import tvm

    if hasattr(value, "numpy"):
        return [value]
    if isinstance(value, tvm.runtime.ShapeTuple):
        return [tvm.runtime.tensor(np.array(list(value), dtype=np.int64))]
    out: list[Any] = []
    for item in value:
        out.extend(_flatten(item))
    return out


class HostRunner:
    """Runs a ``tvm-vm`` package on this machine's CPU.

    Args:
        package: An opened, verified package.
        board: The board profile (``cores`` sets the thread count).
        port: Not supported (the model runs in this process).
        sim: Ignored: the host is its own simulator (``native``).
    """

    simulated = False

    def __init__(self, package: Package, board: "Board", *, port: str | None = None, sim: bool | None = None) -> None:
        if board.transport.kind != "local":
            # A tvm-vm package runs in this process whatever the board; with
            # --board rv32-mcu-sim --allow-other-board it ran here and was
            # reported as the MCU's latency.
            raise ConfigError(
                f"a '{package.runtime}' package runs in this process on this machine's CPU; board '{board.name}' "
                f"is reached over {board.transport.kind}",
                hint=("Run it on the board through its TVM RPC tracker (edgekit bench PKG --tracker HOST:PORT)."
                      if board.transport.kind == "rpc" else
                      f"Recompile the model with --board {board.name}, or run this package without --board."),
                board=board.name,
            )
        #: This process (refuses --port, --sim ENGINE): :func:`edgekit.runtime.connection.connect`.
        self.connection = connect(board, port, sim)
        self.board = board
        self.threads = thread_count(board)
        self._tmp: Path | None = None
        self._vm: Any = None
        self._main: Any = None
        self._params: list[Any] = []
        self._exec_mode: str | None = None
        self.package: Package | None = None
        self.load(package)

    def info(self) -> dict[str, Any]:
        """Runner name, device, threads and TVM version."""
        import tvm

        return {
            "runner": "host",
            "device": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "threads": self.threads,
            "tvm_version": str(tvm.__version__),
            **({"vm_exec_mode": self._exec_mode} if self._exec_mode else {}),
        }

    def load(self, package: Package) -> None:
        """Extracts ``package`` into a fresh folder and loads its executable.

        Raises:
            PackageError: if the package is not a ``tvm-vm`` package or is incomplete.
        """
        import tvm
        from tvm import relax

        if package.runtime != "tvm-vm":
            raise PackageError(
                f"package '{package.path}' needs runtime '{package.runtime}', not tvm-vm",
                hint="Run it on a board of the kind it was compiled for.",
            )
        _check_cpu(package)
        manifest = package.manifest
        library, params = manifest.library, manifest.params_member
        for member in (library, params):
            if member not in package:
                raise PackageError(f"package '{package.path}' has no member '{member}'", hint="Rebuild it with `edgekit compile`.")
        self.close()
        self._tmp = Path(tempfile.mkdtemp(prefix="edgekit-run-"))
        root = package.extract_to(self._tmp / "pkg")
        # TVM's process-wide pool, threads not pinned: pinned, the whole process (onnxruntime in
        # bench --compare-ort included) would be left on fewer cores. TVM_NUM_THREADS /
        # TVM_BIND_THREADS set by the user win.
        configure_tvm_threads(self.threads)
        try:
            lib = tvm.runtime.load_module(str(root / library))
            self._vm = relax.VirtualMachine(lib, tvm.cpu())
            self._main = self._vm[manifest.entry]
            # Read from the library, not the manifest: packages written before the manifest
            # carried ``vm_exec_mode`` (all bytecode) are told apart the same way.
            self._exec_mode = exec_mode_of(lib, manifest.entry)
            weights = tvm.runtime.load_param_dict_from_file(str(root / params))
        except Exception as exc:
            self.close()
            raise PackageError(
                f"cannot load package '{package.path}' in the TVM runtime: {str(exc).splitlines()[0][:200]}",
                hint="Rebuild the package with this edgekit and TVM version.",
            ) from exc
        # Keys sort in call order (p00000, p00001, ...; see compiler/backends/llvm/host.py).
        self._params = [weights[k] for k in sorted(weights.keys())]
        params = ParamsSection.of(manifest)
        count = params.count if params is not None else None
        if count is not None and len(self._params) != count:
            self.close()
            raise PackageError(
                f"package '{package.path}' holds {len(self._params)} weights, its manifest says {count}",
                hint="Rebuild the package.",
            )
        self.package = package
        logger.debug("loaded %s (%d weights, %d threads)", package.path, len(self._params), self.threads)

    def _args(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        import tvm

        assert self.package is not None, "load() a package first"
        checked = check_inputs(self.package.inputs, feeds)
        return [tvm.runtime.tensor(checked[s.name]) for s in self.package.inputs] + self._params

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one inference.

        Raises:
            InputError: naming a missing, unknown or wrongly shaped input.
        """
        assert self.package is not None, "load() a package first"
        result = _flatten(self._main(*self._args(feeds)))
        specs = self.package.outputs
        if len(result) != len(specs):
            raise PackageError(
                f"the compiled model returned {len(result)} outputs, the manifest lists {len(specs)}",
                hint="Rebuild the package.",
            )
        return {spec.name: tensor.numpy() for spec, tensor in zip(specs, result)}

    def time_runs(self, feeds: Mapping[str, np.ndarray], runs: int, warmup: int) -> Timing:
        """Times ``runs`` inferences after ``warmup`` untimed ones; inputs are
        converted once so only the VM call is timed."""
        args = self._args(feeds)
        for _ in range(warmup):
            self._main(*args)
        latencies = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self._main(*args)
            latencies.append((time.perf_counter() - t0) * 1000.0)
        return Timing(latency_ms=latencies)

    def close(self) -> None:
        """Drops the VM and deletes the extracted files."""
        self._vm = self._main = None
        self._params = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "HostRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

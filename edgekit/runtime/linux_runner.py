"""Runner for Linux-board packages (runtime ``linux-aot``): the static runner
executable from :mod:`edgekit.compiler.backends.llvm.linux_cross`, run on the board over
SSH, under qemu-user on this machine, or natively when this machine *is* a
board of that architecture (e.g. inside an RPC server on the board).

Where the executable runs is an :class:`Executor`: a working folder that
files are put into and taken out of, and a way to run a command there.
:class:`LocalExecutor` runs it here (optionally under a ``qemu-<arch>``
prefix); :class:`edgekit.runtime.ssh.SshExecutor` runs it on a board.

Latency is the runner's own ``clock_gettime`` around each inference. Under
qemu-user that is the emulator's wall-clock time on this machine, **not** the
board's latency: such reports say ``simulated: true`` and name the timing
source in ``runner.timing``.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import numpy as np

from edgekit.package import Package
from edgekit.package.sections import LinuxSection
from edgekit.core.cpu_features import host_arch
from edgekit.core.errors import ChecksumError, ConfigError, DeviceError, DeviceTimeoutError, PackageError
from edgekit.core.tensors import TensorSpec, check_inputs
from edgekit.runtime.connection import connect
from edgekit.runtime.runner import Timing

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = [
    "LinuxRunner",
    "Executor",
    "CommandResult",
    "LocalExecutor",
    "qemu_command",
    "runner_args",
    "parse_timings",
    "run_on_executor",
    "RUN_TIMEOUT_S",
    "RUNTIME",
]

logger = logging.getLogger(__name__)

RUNTIME = "linux-aot"

#: Limit for one runner invocation (all warm-up and timed runs together);
#: emulated big models are slow.
RUN_TIMEOUT_S = 600.0


# Runner exit codes (see RUNNER_C in edgekit/compiler/backends/llvm/linux_cross.py).
_EXIT_MEANING = {2: "bad arguments", 3: "could not read weights or inputs", 4: "the model returned an error",
                 5: "could not write outputs"}


class CommandResult(Protocol):
    """What an executor returns for a command (``subprocess.CompletedProcess`` fits)."""

    returncode: int
    stdout: str
    stderr: str


class Executor(Protocol):
    """A place where the runner executable runs."""

    #: Describes where (for reports), e.g. ``qemu-aarch64 on this machine``.
    where: str

    def put(self, name: str, data: bytes, *, executable: bool = False) -> str:
        """Stores ``data`` as ``name`` in the working folder; returns its path there."""
        ...

    def get(self, name: str) -> bytes:
        """Reads back a file of the working folder."""
        ...

    def sha256(self, names: Sequence[str]) -> dict[str, str]:
        """SHA-256 (hex) of files put there, computed where they are."""
        ...

    def run(self, args: Sequence[str], timeout_s: float) -> CommandResult:
        """Runs ``args`` (paths as returned by :meth:`put`) in the working folder."""
        ...

    def close(self) -> None:
        """Deletes the working folder."""
        ...


def qemu_command(board: "Board") -> list[str]:
    """The qemu-user command prefix from ``board.simulator.machine`` (e.g.
    ``qemu-riscv64`` or ``qemu-riscv64 -cpu rv64,v=true,vlen=256``).

    Raises:
        ConfigError: when the board has no qemu-user simulator or qemu is not installed.
    """
    sim = board.simulator
    if sim.kind != "qemu-user" or not sim.machine:
        raise ConfigError(
            f"board '{board.name}' has no qemu-user simulator",
            hint='Set [simulator] kind = "qemu-user" and machine = "qemu-<arch>" in its profile.',
        )
    cmd = shlex.split(sim.machine)
    if shutil.which(cmd[0]) is None:
        raise ConfigError(
            f"'{cmd[0]}' (the simulator of board '{board.name}') is not installed",
            hint="Install qemu-user: `apt-get install qemu-user` (Debian/Ubuntu), then retry.",
            program=cmd[0],
        )
    return cmd


class LocalExecutor:
    """Runs the executable on this machine, in a fresh temporary folder.

    Args:
        prefix: Command prefix, e.g. ``["qemu-aarch64"]``; empty to run natively.
    """

    def __init__(self, prefix: Sequence[str] = ()) -> None:
        self.prefix = list(prefix)
        self.root = Path(tempfile.mkdtemp(prefix="edgekit-linux-"))
        self.where = f"{self.prefix[0]} on this machine" if self.prefix else f"this {host_arch()} machine"

    def put(self, name: str, data: bytes, *, executable: bool = False) -> str:
        path = self.root / name
        path.write_bytes(data)
        if executable:
            path.chmod(0o755)
        return str(path)

    def get(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def sha256(self, names: Sequence[str]) -> dict[str, str]:
        """SHA-256 (hex) of deployed files, read back from where they run."""
        return {n: hashlib.sha256((self.root / n).read_bytes()).hexdigest() for n in names}

    def run(self, args: Sequence[str], timeout_s: float) -> CommandResult:
        cmd = [*self.prefix, *args]
        logger.debug("running %s", " ".join(cmd))
        try:
            return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DeviceTimeoutError(
                f"the runner did not finish within {timeout_s:.0f} s on {self.where}",
                hint="Use fewer --runs, or a smaller model; emulated runs are much slower than the board.",
                timeout_s=timeout_s,
            ) from None

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def runner_args(runner: str, weights: str, warmup: int, runs: int, inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
    """The runner's command line (see :mod:`edgekit.compiler.backends.llvm.linux_cross`)."""
    return [runner, weights, str(int(warmup)), str(int(runs)), *inputs, *outputs]


def parse_timings(stdout: str) -> list[int]:
    """Nanoseconds per timed run from the runner's ``ek_ns N`` lines."""
    out = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "ek_ns":
            out.append(int(parts[1]))
    return out


def run_on_executor(
    executor: Executor,
    runner_path: str,
    weights_path: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    feeds: Mapping[str, np.ndarray],
    *,
    warmup: int = 0,
    runs: int = 1,
    timeout_s: float = RUN_TIMEOUT_S,
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Writes the inputs, runs the runner once (``warmup`` + ``runs`` inferences)
    and returns the outputs of the last run and the nanoseconds of each timed run.

    Raises:
        DeviceError: when the runner fails or prints no timings.
    """
    arrays = check_inputs(list(inputs), feeds)
    in_paths = [executor.put(f"in{i}.bin", np.ascontiguousarray(arrays[s.name], dtype=s.dtype).tobytes())
                for i, s in enumerate(inputs)]
    out_names = [f"out{i}.bin" for i in range(len(outputs))]
    out_paths = [str(Path(in_paths[0]).parent / n) if in_paths else n for n in out_names]
    proc = executor.run(runner_args(runner_path, weights_path, warmup, runs, in_paths, out_paths), timeout_s)
    if proc.returncode != 0:
        meaning = _EXIT_MEANING.get(proc.returncode, "it crashed or was killed")
        raise DeviceError(
            f"the model runner failed on {executor.where} (exit {proc.returncode}: {meaning}): "
            f"{(proc.stderr or '').strip()[:300]}",
            hint="Check that the package was compiled for this board's architecture (edgekit compile --board ...).",
            returncode=proc.returncode,
        )
    timings = parse_timings(proc.stdout)
    if len(timings) != runs:
        raise DeviceError(
            f"the model runner on {executor.where} reported {len(timings)} timings, expected {runs}",
            hint="Rebuild the package with this edgekit.",
        )
    result = {}
    for spec, name in zip(outputs, out_names):
        raw = executor.get(name)
        if len(raw) != spec.nbytes:
            raise DeviceError(f"output '{spec.name}' has {len(raw)} bytes, expected {spec.nbytes}", hint="Rebuild the package.")
        result[spec.name] = np.frombuffer(raw, dtype=spec.dtype).reshape(spec.shape).copy()
    return result, timings


def check_deployed(executor: Any, files: Mapping[str, bytes]) -> dict[str, Any]:
    """Hashes the deployed files where they are (``sha256sum`` over SSH, the
    files themselves for qemu-user) and compares with the package's bytes.

    Raises:
        ChecksumError: a deployed file differs from the package's.
    """
    want = {n: hashlib.sha256(data).hexdigest() for n, data in files.items()}
    got = executor.sha256(list(files))
    bad = sorted(n for n in want if got.get(n) != want[n])
    if bad:
        raise ChecksumError(
            f"deployed {', '.join(bad)} on {executor.where} differ from the package (SHA-256)",
            hint="The copy was corrupted or changed on the board; run the command again, and check the board's storage.",
            files=bad,
        )
    return {
        "transport": executor.where,
        "action": f"copied {', '.join(files)} ({sum(map(len, files.values()))} B)",
        "verified": True,
        "check": f"SHA-256 of the deployed {', '.join(files)} on {executor.where} matches the package",
    }


class LinuxRunner:
    """Runs a ``linux-aot`` package on a Linux board, under qemu-user, or natively.

    Args:
        package: The opened package.
        board: Board profile (transport ``ssh`` with ``host``/``user``, simulator ``qemu-user``).
        port: SSH address ``[user@]host[:port]`` of the board; overrides the profile's.
        sim: True forces qemu-user, False forbids it; None simulates when no
            board address is given or configured (with a notice).

    Raises:
        ConfigError: ``sim=False`` without an address, an address with ``sim=True``,
            or qemu-user missing.
    """

    def __init__(self, package: Package, board: "Board", *, port: str | None = None, sim: bool | None = None) -> None:
        self.board = board
        #: Board or qemu-user, decided once (:func:`edgekit.runtime.connection.connect`).
        self.connection = connect(board, port, sim)
        self.simulated = self.connection.simulated
        self._address = self.connection.address or None
        self._executor: Any = None
        self._paths: dict[str, str] = {}
        self.package: Package | None = None
        self.load(package)

    def _open_executor(self, arch: str) -> Any:
        conn = self.connection
        if conn.simulated:
            if self.board.simulator.kind == "qemu-user":
                return LocalExecutor(qemu_command(self.board))
            if arch != host_arch():
                raise self._foreign(arch)
            return LocalExecutor()
        if conn.transport.name == "local":  # this machine is the board (e.g. inside its RPC server)
            if arch != host_arch():
                raise self._foreign(arch)
            return LocalExecutor()
        if conn.transport.name != "ssh":
            raise ConfigError(
                f"board '{self.board.name}' is reached over {conn.transport.name}; `run` reaches Linux boards over ssh",
                hint="Use `edgekit bench --tracker HOST:PORT` for boards behind a TVM RPC tracker, or --sim.",
            )
        from edgekit.runtime.ssh import SshExecutor, SshTarget

        return SshExecutor(SshTarget.from_board(self.board, self._address))

    def _foreign(self, arch: str) -> ConfigError:
        """A package of another ISA on a board that runs here natively
        (``bench rpi.ekpkg --board host --allow-other-board`` died with
        "OSError: Exec format error")."""
        return ConfigError(
            f"the package's runner is {arch} code, and board '{self.board.name}' would run it natively on this "
            f"{host_arch()} machine",
            hint="Run it on the board it was built for (its qemu-user simulator when no port is set), or "
                 f"recompile the model with --board {self.board.name}.",
            arch=arch,
        )

    def load(self, package: Package) -> None:
        """Copies the runner and weights to where they run.

        Raises:
            PackageError: the package is not a ``linux-aot`` package or lacks members.
        """
        if package.runtime != RUNTIME:
            raise PackageError(
                f"package runtime is '{package.runtime}', the Linux runner needs '{RUNTIME}'",
                hint=f"Recompile the model with --board {self.board.name}.",
            )
        info = LinuxSection.of(package.manifest) or LinuxSection()
        runner_member, weights_member = info.runner, info.weights
        for member in (runner_member, weights_member):
            if member not in package:
                raise PackageError(f"package has no member '{member}'", hint="Recompile it with `edgekit compile`.")
        self.close()
        self._executor = self._open_executor(info.arch)
        files = {"runner": package.read(runner_member), "weights.bin": package.read(weights_member)}
        self._paths = {
            "runner": self._executor.put("runner", files["runner"], executable=True),
            "weights": self._executor.put("weights.bin", files["weights.bin"]),
        }
        self.deployment = check_deployed(self._executor, files)
        self.package = package
        logger.debug("loaded %s on %s", package.path, self._executor.where)

    def info(self) -> dict[str, Any]:
        """Runner name, where it runs and what the latency means."""
        where = self._executor.where if self._executor is not None else ""
        return {
            "runner": "linux",
            "device": f"{self.board.name} ({where})",
            "threads": 1,
            "timing": "qemu-user wall clock on this machine (simulated, not board latency)"
            if self.simulated else "clock_gettime(CLOCK_MONOTONIC) on the board",
        }

    def _run(self, feeds: Mapping[str, np.ndarray], warmup: int, runs: int) -> tuple[dict[str, np.ndarray], list[int]]:
        if self.package is None or self._executor is None:
            raise DeviceError("runner is closed", hint="Create a new runner.")
        return run_on_executor(
            self._executor, self._paths["runner"], self._paths["weights"], self.package.inputs,
            self.package.outputs, feeds, warmup=warmup, runs=runs,
        )

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference; outputs by name."""
        return self._run(feeds, 0, 1)[0]

    def time_runs(self, feeds: Mapping[str, np.ndarray], runs: int, warmup: int) -> Timing:
        """``warmup`` + ``runs`` inferences in one runner process, timed by the runner."""
        _, ns = self._run(feeds, warmup, runs)
        return Timing(latency_ms=[t / 1e6 for t in ns])

    def close(self) -> None:
        """Deletes the working folder (here or on the board)."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def __enter__(self) -> "LinuxRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


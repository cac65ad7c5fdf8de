"""TVM RPC for Linux boards and board farms: tracker, servers, and ``bench`` over them.

TVM's RPC tracker is the distribution engine: every board runs an RPC server
that registers with the tracker under a key (its board name, e.g.
``visionfive2``); :func:`bench_remote` asks the tracker for a session with
that key, and the tracker hands out whichever such board is free, queueing
the request while all are busy.

What a session runs depends on the package:

* ``tvm-vm`` packages (a Relax VM library, the board's own TVM runtime): the
  library is uploaded, loaded with ``remote.load_module`` and timed with
  TVM's ``time_evaluator`` on the remote device;
* ``linux-aot`` packages (static runner executable, see
  :mod:`edgekit.compiler.backends.llvm.linux_cross`): runner, weights and inputs are
  uploaded and run through ``edgekit.rpc.run_runner``, a function that
  :func:`start_server` registers in its server. A server started with a
  qemu-user ``machine`` runs the runner under that emulator on the host: a
  CI stand-in for a board, whose latency is reported as simulated.

Security: TVM RPC is unauthenticated and lets any client upload and run code.
Servers and trackers started here bind ``127.0.0.1`` unless told otherwise,
and binding any other address logs a warning.

Servers can also be started from a shell::

    python -m edgekit.runtime.rpc tracker --port 9190
    python -m edgekit.runtime.rpc server --tracker 127.0.0.1:9190 --key visionfive2 --qemu qemu-riscv64
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import ipaddress
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from edgekit.core.errors import ConfigError, DeviceError, DeviceTimeoutError, PackageError, TransportError
from edgekit.core.rpc_tracker import (  # the tracker client, shared with tuning over RPC
    INFO_FUNCTION,
    PROBE_TIMEOUT_S,
    TrackerStatus,
    parse_tracker,
    probe_tracker,
    server_info,
)
from edgekit.core.rpc_tracker import remote_info as _remote_info
from edgekit.package.sections import LinuxSection
from edgekit.runtime.runner import Timing

if TYPE_CHECKING:
    from edgekit.package import Package

__all__ = [
    "parse_tracker",
    "start_tracker",
    "start_server",
    "RpcExecutor",
    "RpcRunner",
    "bench_remote",
    "warn_if_exposed",
    "RUN_FUNCTION",
    "INFO_FUNCTION",
    "DEFAULT_HOST",
    "DEFAULT_TRACKER_PORT",
    "SESSION_WAIT_S",
    "PROBE_TIMEOUT_S",
    "TrackerStatus",
    "probe_tracker",
    "server_info",
]

logger = logging.getLogger(__name__)

#: Remote function (registered by :func:`start_server`) that runs the runner.
RUN_FUNCTION = "edgekit.rpc.run_runner"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_TRACKER_PORT = 9190
#: How long :func:`bench_remote` waits for a free board by default.
SESSION_WAIT_S = 600.0


def warn_if_exposed(host: str, what: str) -> None:
    """Logs a warning when ``host`` is not a loopback address."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        logger.warning(
            "%s binds %s: TVM RPC is unauthenticated and lets anyone who can reach it upload and run code; "
            "use it only on a trusted network", what, host,
        )


def start_tracker(host: str = DEFAULT_HOST, port: int = DEFAULT_TRACKER_PORT, port_end: int = 9199) -> Any:
    """Starts a TVM RPC tracker in a child process (``.port`` is the port it got;
    ``.terminate()`` stops it)."""
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    del rpc  # imported for its side effect of loading the RPC runtime
    warn_if_exposed(host, "the RPC tracker")
    return Tracker(host=host, port=port, port_end=port_end, silent=True)


# --------------------------------------------------------------------------- #
# Server side
# --------------------------------------------------------------------------- #


def _server_run_runner(prefix: Sequence[str], args_json: str, timeout_s: float) -> str:
    """Body of :data:`RUN_FUNCTION`, run inside the server process.

    Only an executable that was uploaded into the server's work folder may be
    run, with arguments that are file names there or numbers.
    """
    import tvm_ffi

    workpath = tvm_ffi.get_global_func("tvm.rpc.server.workpath")
    root = os.path.realpath(workpath("."))
    args = [str(a) for a in json.loads(args_json)]
    for a in args:
        if not (a.isdigit() or os.path.realpath(a).startswith(root + os.sep)) or (a is args[0] and a.isdigit()):
            return json.dumps({"returncode": 2, "stdout": "", "stderr": f"refused argument outside the work folder: {a}"})
    if not args:
        return json.dumps({"returncode": 2, "stdout": "", "stderr": "no command"})
    os.chmod(args[0], 0o755)
    try:
        proc = subprocess.run([*prefix, *args], cwd=root, capture_output=True, text=True, timeout=float(timeout_s))
    except subprocess.TimeoutExpired:
        return json.dumps({"returncode": -9, "stdout": "", "stderr": f"timed out after {timeout_s} s"})
    return json.dumps({"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr[-4000:]})


def _register_server_functions(prefix: tuple[str, ...], name: str) -> None:
    """``server_init_callback`` of :func:`start_server` (runs in the server process)."""
    import platform

    import tvm_ffi

    info = json.dumps({"name": name, "qemu": " ".join(prefix), "machine": platform.machine(), "simulated": bool(prefix)})
    tvm_ffi.register_global_func(RUN_FUNCTION, functools.partial(_server_run_runner, prefix), override=True)
    tvm_ffi.register_global_func(INFO_FUNCTION, lambda: info, override=True)


def start_server(
    tracker: tuple[str, int],
    key: str,
    *,
    qemu: str = "",
    host: str = DEFAULT_HOST,
    port: int = 9091,
    port_end: int = 9199,
    name: str = "",
) -> Any:
    """Starts a TVM RPC server in a child process and registers it with ``tracker``.

    Args:
        tracker: ``(host, port)`` of the tracker.
        key: Board kind clients ask for (e.g. ``visionfive2``).
        qemu: qemu-user command (``qemu-riscv64`` ...) that runs uploaded
            runners; empty to run them natively (a server on the board).
        host: Address to bind; loopback unless the user asks otherwise.
        port: First port to try; the server takes the first free one up to ``port_end``.
        name: Name the server reports to clients (default ``key@host:port``).

    Returns:
        The ``tvm.rpc.Server`` (``.port``; ``.terminate()`` stops it).
    """
    from tvm import rpc

    prefix = tuple(shlex.split(qemu))
    if prefix and subprocess.run(["which", prefix[0]], capture_output=True).returncode != 0:
        raise ConfigError(f"'{prefix[0]}' is not installed", hint="Install qemu-user: `apt-get install qemu-user`.")
    warn_if_exposed(host, f"the RPC server for '{key}'")
    label = name or f"{key}@{host}"
    server = rpc.Server(
        host=host,
        port=port,
        port_end=port_end,
        key=key,
        tracker_addr=tracker,
        silent=True,
        server_init_callback=functools.partial(_register_server_functions, prefix, label),
    )
    logger.info("RPC server '%s' on %s:%d (key %s, %s)", label, host, server.port, key, qemu or "native")
    return server


# --------------------------------------------------------------------------- #
# Client side
# --------------------------------------------------------------------------- #


@dataclass
class _Result:
    returncode: int
    stdout: str
    stderr: str


class RpcExecutor:
    """Runs the Linux runner through an RPC session (see
    :class:`edgekit.runtime.linux_runner.Executor`)."""

    def __init__(self, remote: Any, where: str) -> None:
        self.remote = remote
        self.where = where
        self._workpath = remote.get_function("tvm.rpc.server.workpath")
        try:
            self._run = remote.get_function(RUN_FUNCTION)
        except Exception as exc:  # the server is a plain TVM one
            raise DeviceError(
                f"the RPC server {where} cannot run edgekit's Linux runner ({RUN_FUNCTION} is missing)",
                hint="Start the board's server with `python -m edgekit.runtime.rpc server ...`, "
                "or compile a tvm-vm package on a board that has the TVM runtime.",
            ) from exc

    def put(self, name: str, data: bytes, *, executable: bool = False) -> str:
        self.remote.upload(bytearray(data), name)
        # Uploads lose the mode bits; the server marks args[0] executable.
        return str(self._workpath(name))

    def get(self, name: str) -> bytes:
        return bytes(self.remote.download(name))

    def sha256(self, names: Sequence[str]) -> dict[str, str]:
        """SHA-256 (hex) of uploaded files as the RPC server holds them (read back)."""
        return {n: hashlib.sha256(self.get(n)).hexdigest() for n in names}

    def run(self, args: Sequence[str], timeout_s: float) -> _Result:
        data = json.loads(str(self._run(json.dumps(list(args)), float(timeout_s))))
        if data["returncode"] == -9:
            raise DeviceTimeoutError(f"the runner timed out on {self.where}", hint="Use fewer --runs.")
        return _Result(int(data["returncode"]), data["stdout"], data["stderr"])

    def close(self) -> None:
        """Nothing to do: the server deletes its work folder when the session ends."""


def _flatten(value: Any) -> list[Any]:
    if hasattr(value, "numpy"):
        return [value]
    return [t for item in value for t in _flatten(item)]


class RpcRunner:
    """A :class:`~edgekit.runtime.runner.Runner` on the board behind one RPC session.

    ``linux-aot`` packages run the runner executable through :class:`RpcExecutor`
    (deployed files hash-checked where they are); ``tvm-vm`` packages load the
    Relax VM library on the remote device and are timed by ``time_evaluator``.
    The server says whether it is a qemu-user stand-in (``simulated``).

    Args:
        remote: An RPC session (from the tracker); closing the runner ends it.
        package: The opened package.
        label: Name for the board in reports when the server gives none.

    Raises:
        PackageError: a runtime RPC does not cover.
    """

    def __init__(self, remote: Any, package: "Package", label: str) -> None:
        from edgekit.runtime.linux_runner import RUNTIME as LINUX_RUNTIME

        if package.runtime not in (LINUX_RUNTIME, "tvm-vm"):
            raise PackageError(
                f"packages with runtime '{package.runtime}' cannot be benchmarked over TVM RPC",
                hint="RPC covers Linux boards (linux-aot) and boards with a TVM runtime (tvm-vm).",
            )
        self._remote = remote
        self.package = package
        #: What the server says about itself (name, qemu, machine, simulated).
        self.server = _remote_info(remote)
        self.simulated = bool(self.server.get("simulated"))
        qemu = f" ({self.server['qemu']})" if self.server.get("qemu") else ""
        self.where = f"RPC server '{self.server.get('name') or label}'{qemu}"
        self._linux = package.runtime == LINUX_RUNTIME
        self._executor: RpcExecutor | None = None
        self._vm: Any = None
        self.deployment: dict[str, Any] = {}
        if self._linux:
            self._load_linux()
        else:
            self._load_tvm_vm()

    def _load_linux(self) -> None:
        from edgekit.runtime.linux_runner import check_deployed

        meta = LinuxSection.of(self.package.manifest) or LinuxSection()
        files = {"runner": self.package.read(meta.runner), "weights.bin": self.package.read(meta.weights)}
        self._executor = RpcExecutor(self._remote, self.where)
        self._paths = {name: self._executor.put(name, data, executable=name == "runner") for name, data in files.items()}
        self.deployment = check_deployed(self._executor, files)

    def _load_tvm_vm(self) -> None:
        import tvm
        from tvm import relax

        manifest = self.package.manifest
        params = manifest.params_member
        self._remote.upload(bytearray(self.package.read(manifest.library)), "model.so")
        self._dev = self._remote.cpu()
        self._vm = relax.VirtualMachine(self._remote.load_module("model.so"), self._dev)
        weights = tvm.runtime.load_param_dict(bytearray(self.package.read(params)))
        self._params = [tvm.runtime.tensor(weights[k].numpy(), self._dev) for k in sorted(weights.keys())]
        self._entry = manifest.entry

    def _vm_args(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        import tvm

        from edgekit.core.tensors import check_inputs

        arrays = check_inputs(self.package.inputs, feeds)
        return [tvm.runtime.tensor(arrays[s.name], self._dev) for s in self.package.inputs] + self._params

    def _run_linux(self, feeds: Mapping[str, np.ndarray], warmup: int, runs: int) -> tuple[dict[str, np.ndarray], list[int]]:
        from edgekit.runtime.linux_runner import run_on_executor

        if self._executor is None:
            raise DeviceError("runner is closed", hint="Create a new runner.")
        return run_on_executor(self._executor, self._paths["runner"], self._paths["weights.bin"], self.package.inputs,
                               self.package.outputs, feeds, warmup=warmup, runs=runs)  # fmt: skip

    def info(self) -> dict[str, Any]:
        """Runner ``rpc``, the server, and what the latency means."""
        if self._linux:
            timing = "runner clock_gettime" + (" under qemu-user (simulated, not board latency)" if self.simulated else "")
        else:
            timing = "TVM time_evaluator" + (" (simulated)" if self.simulated else "")
        extra = {k: v for k, v in self.server.items() if k != "simulated"}
        return {"runner": "rpc", "device": self.where, "timing": timing, "threads": 1 if self._linux else 0, **extra}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference on the board; outputs by name."""
        if self._linux:
            return self._run_linux(feeds, 0, 1)[0]
        result = _flatten(self._vm[self._entry](*self._vm_args(feeds)))
        return {spec.name: t.numpy() for spec, t in zip(self.package.outputs, result)}

    def time_runs(self, feeds: Mapping[str, np.ndarray], runs: int, warmup: int) -> Timing:
        """``warmup`` + ``runs`` inferences, timed on the board."""
        if self._linux:
            return Timing(latency_ms=[t / 1e6 for t in self._run_linux(feeds, warmup, runs)[1]])
        args = self._vm_args(feeds)
        for _ in range(warmup):
            self._vm[self._entry](*args)
        self._vm.set_input(self._entry, *args)
        # number=1: one inference per measurement, so the spread is per run.
        timer = self._vm.time_evaluator("invoke_stateful", self._dev, number=1, repeat=runs, min_repeat_ms=0)
        return Timing(latency_ms=[float(r) * 1e3 for r in timer(self._entry).results])

    def close(self) -> None:
        """Ends the session; the server returns to the tracker's pool."""
        self._vm = None
        self._params = []
        self._executor = None
        self._remote = None


def _request(tracker: tuple[str, int], key: str, wait_s: float, priority: int) -> Any:
    from tvm import rpc

    try:
        client = rpc.connect_tracker(*tracker)
    except Exception as exc:
        raise TransportError(
            f"cannot reach the RPC tracker at {tracker[0]}:{tracker[1]}: {str(exc).splitlines()[0][:200]}",
            hint="Start it (`python -m edgekit.runtime.rpc tracker`) or check --tracker HOST:PORT.",
        ) from exc
    started = time.monotonic()
    try:
        # request() blocks in the tracker's queue until a server with this
        # key is free; session_timeout bounds the session once it starts.
        remote = client.request(key, priority=priority, session_timeout=wait_s)
    except Exception as exc:
        raise DeviceTimeoutError(
            f"no board with key '{key}' became available through the tracker {tracker[0]}:{tracker[1]}: "
            f"{str(exc).splitlines()[0][:200]}",
            hint="Check `python -m tvm.exec.query_rpc_tracker` for registered boards and their keys.",
            key=key,
        ) from exc
    logger.info("got a '%s' board after %.1f s in the queue", key, time.monotonic() - started)
    return remote


def bench_remote(
    path: str | os.PathLike[str],
    *,
    tracker: str | tuple[str, int],
    key: str,
    board: str | None = None,
    runs: int = 50,
    warmup: int = 5,
    arrays: Mapping[str, np.ndarray] | None = None,
    compare_ort: bool = False,
    allow_other_board: bool = False,
    board_dirs: Iterable[str] = (),
    seed: int = 0,
    wait_s: float = SESSION_WAIT_S,
    priority: int = 1,
) -> dict[str, Any]:
    """Benchmarks a package on whichever board of kind ``key`` the tracker hands out.

    Returns the same report as :func:`edgekit.runtime.runner.bench_package`
    plus ``rpc`` {``tracker``, ``key``, ``server``, ``queued_s``}.

    Raises:
        ConfigError: bad arguments.
        TransportError, DeviceTimeoutError: tracker unreachable, no board in time.
        DeviceError: the run failed on the board.
    """
    from edgekit.runtime.runner import bench_feeds, bench_runner, check_counts, compare_with_ort, open_for_board

    check_counts(runs, warmup)
    addr = parse_tracker(tracker) if isinstance(tracker, str) else tracker
    package, brd = open_for_board(path, board, allow_other_board, board_dirs)
    feeds = bench_feeds(package, arrays, seed)
    t0 = time.monotonic()
    remote = _request(addr, key, wait_s, priority)
    queued = time.monotonic() - t0
    runner = RpcRunner(remote, package, key)
    del remote  # the runner holds the session; closing it ends the session
    try:
        report, outputs = bench_runner(runner, package, brd, feeds, runs=runs, warmup=warmup,
                                       inputs="data" if arrays is not None else "random")  # fmt: skip
    finally:
        runner.close()
    report.rpc = {"tracker": f"{addr[0]}:{addr[1]}", "key": key, "server": runner.server.get("name", ""),
                  "queued_s": round(queued, 3)}  # fmt: skip
    data = report.to_json()
    if compare_ort:
        compare_with_ort(data, package, feeds, outputs, report.runs, report.warmup)
    return data


# --------------------------------------------------------------------------- #
# `python -m edgekit.runtime.rpc`
# --------------------------------------------------------------------------- #


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgekit.runtime.rpc", description="Run a TVM RPC tracker or an edgekit RPC server.")
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tracker", help="run a tracker")
    t.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1; TVM RPC is unauthenticated)")
    t.add_argument("--port", type=int, default=DEFAULT_TRACKER_PORT)
    s = sub.add_parser("server", help="run a server registered with a tracker")
    s.add_argument("--tracker", required=True, metavar="HOST:PORT")
    s.add_argument("--key", required=True, help="board kind, e.g. visionfive2")
    s.add_argument("--qemu", default="", metavar="CMD", help="run uploaded runners under this qemu-user command")
    s.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=9091)
    s.add_argument("--name", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.what == "tracker":
        proc = start_tracker(args.host, args.port)
        logger.info("tracker listening on %s:%d", args.host, proc.port)
    else:
        proc = start_server(parse_tracker(args.tracker), args.key, qemu=args.qemu, host=args.host, port=args.port, name=args.name)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proc.terminate()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())

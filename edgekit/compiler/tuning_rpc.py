"""Measuring tuning candidates on a board through a TVM RPC tracker.

:func:`edgekit.compiler.backends.llvm.tuning.tune_model` measures on this machine for the
host and simulated boards; for a board reached over the network it builds
each MetaSchedule candidate here and measures it on the board:

* the tracker comes from ``--tracker HOST:PORT`` (as for ``edgekit bench``),
  else from a board profile with ``[transport] kind = "rpc"`` and
  ``host = "HOST:PORT"``; the key from ``--key``, else the profile's
  ``rpc_key``, else the board's name;
* before anything is built, :func:`rpc_measurement` asks the tracker for a
  summary (a few seconds at most, never the 60 s retry loop of TVM's client)
  and fails with a typed error when it is unreachable or no server is
  registered under the key; it then opens one short session to learn the
  server's CPU, and refuses a server that cannot load the board's code;
* candidates are exported here as shared libraries for the board's triple
  (:func:`export_candidate`: zig's clang for another ISA, the host compiler
  for this one) and measured by MetaSchedule's ``RPCRunner``: upload,
  ``load_module`` and ``time_evaluator`` in the server's TVM runtime.

A candidate is a library the *server process* loads, so it runs natively on
whatever runs the server. A server started with ``--qemu`` (see
:mod:`edgekit.runtime.rpc`) is an x86_64 process that emulates a board only
for edgekit's static Linux runners; it cannot load an aarch64 or riscv64
library, and no TVM runtime for those ISAs is available on the build machine
to run under qemu-user. Such a server is refused here, so tuning
measurements are never emulated.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.core.cpu_features import canonical_arch, host_arch
from edgekit.core.errors import CompileError, ConfigError, DeviceError

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.core.profiles import Board, Target

__all__ = [
    "REMOTE_SESSION_TIMEOUT_S",
    "RemoteMeasurement",
    "export_candidate",
    "needs_tracker_error",
    "resolve_tracker",
    "rpc_measurement",
]

logger = logging.getLogger(__name__)

#: Longest one candidate's RPC session (upload, load, measure) may last.
REMOTE_SESSION_TIMEOUT_S = 60

@dataclass(frozen=True)
class RemoteMeasurement:
    """Where the trials of a remote tuning run were measured (``TuneReport.measured_on``).

    Attributes:
        tracker: ``HOST:PORT`` of the tracker.
        key: Key the servers are registered under.
        servers: Servers registered under ``key`` when the run started.
        server: Name of the server probed before the run ("" if it stayed busy).
        machine: CPU architecture that server reported ("" if unknown).
        server_qemu: The qemu-user command that server runs edgekit runners
            under ("" for none); it does not apply to tuning candidates.
    """

    tracker: str
    key: str
    servers: int
    server: str = ""
    machine: str = ""
    server_qemu: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "where": "rpc",
            "tracker": self.tracker,
            "key": self.key,
            "servers": self.servers,
            "server": self.server,
            "machine": self.machine,
            # Candidates are libraries loaded by the server's own TVM runtime:
            # native on the server's CPU even when it was started with --qemu.
            "emulated": False,
            "server_qemu": self.server_qemu,
        }


def resolve_tracker(board: Board, tracker: str | tuple[str, int] | None, key: str | None) -> tuple[tuple[str, int], str] | None:
    """The ``(tracker, key)`` to measure ``board`` through, or None to measure on this machine.

    Raises:
        ConfigError: for a tracker that is not ``HOST:PORT``.
    """
    from edgekit.core.rpc_tracker import parse_tracker

    if tracker:
        addr = parse_tracker(tracker) if isinstance(tracker, str) else (str(tracker[0]), int(tracker[1]))
    elif board.transport.kind == "rpc" and board.transport.host:
        addr = parse_tracker(board.transport.host)
    else:
        return None
    return addr, key or board.transport.rpc_key or board.name


def needs_tracker_error(board: Board) -> ConfigError:
    """The error for a remote board with no tracker to measure through."""
    if board.transport.kind == "rpc":
        where = f"board '{board.name}' uses transport rpc but its profile names no tracker"
    else:
        where = f"board '{board.name}' is reached over {board.transport.kind}, and tuning measures through TVM RPC"
    return ConfigError(
        f"tuning for {where}",
        hint=f"Run an RPC server on the board (`python -m edgekit.runtime.rpc server --tracker HOST:PORT "
        f"--key {board.transport.rpc_key or board.name}`), then pass --tracker HOST:PORT "
        "(or set [transport] kind = \"rpc\", host = \"HOST:PORT\" in the profile); see docs/performance.md.",
        board=board.name,
    )


#: Limit for one zig link (the first per triple also builds zig's libc stubs).
_LINK_TIMEOUT_S = 300


def _link_shared(flags: Sequence[str], output: str, inputs: Sequence[str], options: Sequence[str] = ()) -> None:
    from edgekit.core.toolchain import find_toolchain

    toolchain = find_toolchain(cross=True)
    cmd = [*toolchain.command, *flags, "-shared", "-fPIC", "-o", output, *inputs, *options]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_LINK_TIMEOUT_S, check=False, env=toolchain.env())
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()[:500]}")


def _zig_shared(flags: Sequence[str]) -> Any:
    """A TVM ``fcompile`` that links objects into a shared library with zig's clang."""

    def fcompile(output: str, objects: Sequence[str], options: Sequence[str] | None = None, **_: Any) -> None:
        _link_shared(flags, output, objects, options or ())

    fcompile.output_format = "so"  # type: ignore[attr-defined]
    return fcompile


def export_candidate(flags: Sequence[str], mod: Any) -> str:
    """MetaSchedule ``f_export`` for remote measurement: a shared library for the board.

    Runs in the builder's worker processes (pickled by reference with
    ``functools.partial``). ``flags`` are zig ``cc`` flags selecting the
    board's triple; empty for a board of this machine's ISA (host compiler).
    A shared library rather than MetaSchedule's default tar of objects: the
    board then needs no compiler of its own.
    """
    path = os.path.join(tempfile.mkdtemp(prefix="edgekit-tune-"), "candidate.so")
    if flags:
        mod.export_library(path, fcompile=_zig_shared(flags))
    else:
        mod.export_library(path)
    return path


def _export_flags(target: Target) -> list[str]:
    """zig flags for a board of another ISA, [] for this machine's."""
    if canonical_arch(target.isa) == host_arch():
        return []
    from edgekit.compiler.firmware import cc_flags

    flags = cc_flags(target)
    if not flags:
        raise CompileError(
            f"target '{target.name}' ({target.isa}) names no LLVM triple to cross-compile tuning candidates for",
            hint="Add triple = \"<arch>-linux-gnu\" to the target profile.",
        )
    # Only the triple matters for linking; the kernels carry the CPU already.
    return flags[:2]


def _warm_cross_linker(flags: Sequence[str]) -> None:
    """Links an empty library once: zig builds its libc stubs for a new triple
    on first use (about 20 s here), which must not eat a candidate's build timeout."""
    with tempfile.TemporaryDirectory(prefix="edgekit-zig-") as tmp:
        src = os.path.join(tmp, "empty.c")
        with open(src, "w", encoding="utf-8") as f:
            f.write("int edgekit_empty(void) { return 0; }\n")
        try:
            _link_shared(flags, os.path.join(tmp, "empty.so"), [src])
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            raise CompileError(
                f"cannot link shared libraries for {flags[-1]} with zig ({str(exc).splitlines()[0][:300]})",
                hint="Install or repair ziglang (`pip install ziglang`); tuning candidates are linked with it.",
            ) from None


def rpc_measurement(
    board: Board,
    target: Target,
    tracker: tuple[str, int],
    key: str,
    *,
    timeout_s: float = 30.0,
    probe_timeout_s: float | None = None,
) -> tuple[Any, Any, RemoteMeasurement]:
    """Checks the tracker and returns ``(runner, builder, where)`` for :func:`~edgekit.compiler.backends.llvm.tuning.tune`.

    Args:
        board: The board tuned for.
        target: Its target profile (``isa`` and triple select the exporter).
        tracker: ``(host, port)`` of the TVM RPC tracker.
        key: Key the board's servers are registered under.
        timeout_s: Build timeout of one candidate.
        probe_timeout_s: How long the tracker (and a free server) may take to
            answer before the run starts (default :data:`~edgekit.core.rpc_tracker.PROBE_TIMEOUT_S`).

    Raises:
        TransportError: the tracker is unreachable.
        DeviceError: no server under ``key``, or a server that cannot run the board's code.
    """
    from tvm.s_tir import meta_schedule as ms

    from edgekit.compiler.tensor_intrin import use_cpu_tensor_intrinsics_only
    from edgekit.core.rpc_tracker import PROBE_TIMEOUT_S, probe_tracker, server_info

    wait = PROBE_TIMEOUT_S if probe_timeout_s is None else probe_timeout_s
    where = f"{tracker[0]}:{tracker[1]}"
    status = probe_tracker(tracker, key, wait)
    info = server_info(tracker, key, wait) if status.free else None
    if info is None:
        logger.info("all %d '%s' servers are busy; candidates will wait in the tracker's queue", status.servers, key)
        info = {}
    machine = canonical_arch(str(info.get("machine", "")))
    if machine and machine != canonical_arch(target.isa):
        emulated = f" and emulates the board with {info['qemu']} only for edgekit's static runners" if info.get("qemu") else ""
        raise DeviceError(
            f"the RPC server '{info.get('name') or key}' under key '{key}' runs on {machine}{emulated}; "
            f"tuning candidates for board '{board.name}' are {target.isa} libraries its TVM runtime must load",
            hint=f"Run the server on the board itself (`python -m edgekit.runtime.rpc server --tracker {where} "
            f"--key {key}`, with Python and apache-tvm there), or tune a board of this server's ISA.",
            key=key,
            machine=machine,
        )
    logger.info(
        "measuring on '%s' servers through %s (%d registered, %d free)%s",
        key, where, status.servers, status.free, f", e.g. {info['name']} ({machine})" if info.get("name") else "",
    )
    flags = _export_flags(target)
    if flags:
        _warm_cross_linker(flags)
        logger.warning(
            "tuning records for %s are stored, but `edgekit compile` for board '%s' builds a static runner "
            "that does not read them yet (see docs/linux-boards.md)", target.isa, board.name,
        )
    builder = ms.builder.LocalBuilder(
        max_workers=1,
        timeout_sec=timeout_s,
        f_export=functools.partial(export_candidate, flags),
        initializer=use_cpu_tensor_intrinsics_only,
    )
    runner = ms.runner.RPCRunner(
        ms.runner.RPCConfig(
            tracker_host=tracker[0],
            tracker_port=tracker[1],
            tracker_key=key,
            session_timeout_sec=REMOTE_SESSION_TIMEOUT_S,
        ),
        # As the local runner: a trial ranks candidates, `bench` measures.
        ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=0, enable_cpu_cache_flush=False),
    )
    measured = RemoteMeasurement(
        tracker=where,
        key=key,
        servers=status.servers,
        server=str(info.get("name", "")),
        machine=machine,
        server_qemu=str(info.get("qemu", "")),
    )
    return runner, builder, measured

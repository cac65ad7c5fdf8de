"""``edgekit bench``: latency statistics of a package on a board, its
simulator or a board farm, optionally against onnxruntime, with report files.

The regression gate against a baseline is :func:`edgekit.api.gate.gate_package`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.api.target import RunTarget
from edgekit.core.errors import InputError
from edgekit.report.gates import GateResult
from edgekit.report.outputs import write_bench_outputs
from edgekit.runtime.data import read_npz
from edgekit.runtime.rpc import SESSION_WAIT_S, bench_remote, parse_tracker
from edgekit.runtime.runner import bench_package as _bench

__all__ = ["BenchOptions", "BenchResult", "ReportFiles", "Tracker", "bench_package"]


@dataclass(frozen=True)
class BenchOptions:
    """How to measure.

    Attributes:
        runs: Timed runs (``None``: 50, or 1 on a deterministic simulator).
        warmup: Untimed runs first (``None``: 5, or 0 on a deterministic simulator).
        inputs: One array per input name, or an ``.npz`` file (first
            sample used); ``None``: seeded random inputs.
        compare_ort: Also time onnxruntime on the package's model with the
            same inputs and threads, and compare the outputs.
    """

    runs: int | None = None
    warmup: int | None = None
    inputs: Mapping[str, np.ndarray] | str | os.PathLike[str] | None = None
    compare_ort: bool = False

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the runtime's bench function."""
        arrays = read_npz(self.inputs) if isinstance(self.inputs, (str, os.PathLike)) else self.inputs
        return {"runs": self.runs, "warmup": self.warmup, "arrays": arrays, "compare_ort": self.compare_ort}


@dataclass(frozen=True)
class Tracker:
    """A board farm: a TVM RPC tracker that hands out a free board.

    Attributes:
        address: ``HOST:PORT`` of the tracker.
        key: Board kind the tracker knows the boards by (``""``: the board's
            name, else the package's board).
        wait_s: Give up when no board is free this long.
    """

    address: str
    key: str = ""
    wait_s: float = SESSION_WAIT_S


@dataclass(frozen=True)
class ReportFiles:
    """Report files to write (each optional): a self-contained HTML report,
    a Markdown summary, and JUnit XML of a gate's checks."""

    html: str | os.PathLike[str] | None = None
    markdown: str | os.PathLike[str] | None = None
    junit: str | os.PathLike[str] | None = None


@dataclass
class BenchResult:
    """A benchmark.

    Attributes:
        report: The bench report (``board``, ``simulated``, ``runs``,
            ``latency_ms`` {min, p50, p90, p99, mean, std}, ``memory``...,
            docs/reports.md); with a gate, its ``gate`` section too.
        gate: The gate's checks against the baseline, when gated.
        written: The report files written.
    """

    report: dict[str, Any]
    gate: GateResult | None = None
    written: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """False only when a gate found a regression."""
        return self.gate is None or self.gate.passed


def bench_package(
    package: str | os.PathLike[str],
    *,
    options: BenchOptions = BenchOptions(),
    target: RunTarget = RunTarget(),
    tracker: Tracker | None = None,
    reports: ReportFiles = ReportFiles(),
) -> BenchResult:
    """Benchmarks ``package`` on the board of ``target``, or on a free board
    of a farm with ``tracker``, and writes the ``reports`` asked for.

    Example::

        result = bench_package("model.ekpkg", options=BenchOptions(runs=50, compare_ort=True))
        print(result.report["latency_ms"]["p50"])

    Raises:
        InputError: a port or simulator together with a tracker; JUnit
            without a gate.
        PackageError, DeviceError: from the package and the board.
    """
    if reports.junit:
        raise InputError("--max-regression and --junit need --baseline",
                         hint="Add --baseline BASE.json (written by `edgekit bench PKG --json-out BASE.json`).")
    kwargs = {**options.kwargs(), **target.kwargs()}
    report = _bench_over_tracker(package, tracker, kwargs) if tracker is not None else _bench(package, **kwargs)
    return BenchResult(report, None, write_reports(report, None, reports, target))


def write_reports(report: dict[str, Any], gate: GateResult | None, reports: ReportFiles,
                  target: RunTarget) -> list[str]:  # fmt: skip
    """Writes the report files of one bench run; returns their paths."""
    return write_bench_outputs(report, gate, html=reports.html, markdown=reports.markdown, junit=reports.junit,
                               board_dirs=list(target.board_dirs))  # fmt: skip


def refuse_with_tracker(kwargs: Mapping[str, Any], *, gated: bool = False) -> None:
    """Raises InputError for what does not combine with a tracker: a port,
    a simulator, a baseline (``gated``)."""
    for flag, value in (("--port", kwargs.get("port")), ("--sim", kwargs.get("sim")), ("--baseline", gated)):
        if value:
            raise InputError(f"{flag} cannot be combined with --tracker",
                             hint="The tracker picks the board; drop one of the two.")


def _bench_over_tracker(package: str | os.PathLike[str], tracker: Tracker, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    refuse_with_tracker(kwargs)
    address = parse_tracker(tracker.address)
    # Unset counts (None) keep bench_remote's defaults.
    remote = {k: v for k, v in kwargs.items() if k not in ("port", "sim") and v is not None}
    key = tracker.key or kwargs.get("board")
    if not key:
        from edgekit.package import open_package

        key = open_package(package, allow_other_board=True).board
    return bench_remote(package, tracker=address, key=key, wait_s=tracker.wait_s, **remote)

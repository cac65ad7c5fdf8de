"""``edgekit bench --baseline``: a benchmark gated against a baseline report
(latency, size, arena), with re-measurement of a wall-clock failure."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgekit.api.bench import BenchOptions, BenchResult, ReportFiles, Tracker, refuse_with_tracker, write_reports
from edgekit.api.target import RunTarget
from edgekit.report.bench_gate import bench_with_gate
from edgekit.runtime.runner import bench_package as _bench

__all__ = ["GateRequest", "gate_package"]


@dataclass(frozen=True)
class GateRequest:
    """What to gate against.

    Attributes:
        baseline: A bench report, or its JSON file (``edgekit bench --json-out``).
        max_regression: Allowed relative growth, overall or per quantity
            (``{"latency": 0.05, "size": 0.0}``); docs/reports.md.
        confirm: Re-measure a failing wall-clock latency up to this many
            times and gate the fastest.
    """

    baseline: Mapping[str, Any] | str | os.PathLike[str]
    max_regression: float | Mapping[str, float] = 0.05
    confirm: int = 2


def gate_package(
    package: str | os.PathLike[str],
    gate: GateRequest,
    *,
    options: BenchOptions = BenchOptions(),
    target: RunTarget = RunTarget(),
    tracker: Tracker | None = None,
    reports: ReportFiles = ReportFiles(),
) -> BenchResult:
    """Benchmarks ``package`` and gates the report against ``gate.baseline``.

    Example::

        result = gate_package("model.ekpkg", GateRequest("base.json", max_regression=0.05))
        if not result.passed:
            print([c.metric for c in result.gate.failed])

    Args:
        tracker: Refused (a farm hands out any board of a kind; a baseline
            belongs to one); accepted so the refusal names the flags.

    Raises:
        InputError: a tracker was given.
        ConfigError: the baseline is unreadable or for another board.
        PackageError, DeviceError: from the package and the board.
    """
    kwargs = {**options.kwargs(), **target.kwargs()}
    if tracker is not None:
        refuse_with_tracker(kwargs, gated=True)
    report, result = bench_with_gate(package, gate.baseline, max_regression=gate.max_regression,
                                     confirm=gate.confirm, bench=_bench, **kwargs)  # fmt: skip
    return BenchResult(report, result, write_reports(report, result, reports, target))

"""Regression gates: compare a bench JSON with a baseline bench JSON.

Three quantities are gated, each against ``--max-regression`` (a fraction,
``0.05`` for 5%):

* **latency** -- with a deterministic simulator (``simulated`` and ``cycles``
  in both reports) the p50 *cycle count* is compared exactly: any growth
  beyond the limit fails, there is no noise allowance because the simulator
  has no noise. Otherwise the wall-clock (or device-measured) p50 is compared
  with the noise-aware rule of :func:`check_noisy`.
* **size** -- ``weight_bytes + code_bytes`` of ``memory`` (what goes to
  flash); exact.
* **arena** -- ``memory.arena_bytes`` (the activation RAM); exact.

The noise-aware rule (documented in ``docs/reports.md``): a wall-clock
latency regresses only when *both*

1. ``current.p50 > baseline.p50 * (1 + limit) + noise``, where ``noise`` is
   the larger of the two runs' spreads ``p90 - p50`` -- the tolerance widens
   by what the measurements themselves say about their jitter, but never by
   more than :data:`MAX_NOISE_FRACTION` of the baseline p50 (issue 16: an
   uncapped allowance of 4.68 ms on a 0.85 ms model let a +70 % regression
   pass; with the cap a 2x slowdown always trips a limit below 50 %); and
2. ``current.min > baseline.min * (1 + limit)`` -- on a shared machine noise
   only ever adds time, so the fastest run is the most stable estimate of the
   true cost; a real slowdown moves it too, a noisy neighbour rarely does.

Every latency check states how confident it is (``confidence``): 1.0 for
the deterministic cycle count; for wall-clock latency, where both reports
carry their per-run samples, the one-sided Mann-Whitney U test's confidence
that the current runs are slower than the baseline's scaled by ``1 + limit``
(normal approximation; few runs cannot give high confidence, and the note
says so), else ``None``.

A gate that fails this rule can be confirmed by measuring again (see
:func:`edgekit.report.bench_gate.bench_with_gate`), keeping the best attempt.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgekit.core.errors import ConfigError

__all__ = [
    "METRICS",
    "Check",
    "GateResult",
    "check_exact",
    "check_noisy",
    "slower_confidence",
    "compare",
    "parse_regression",
]

logger = logging.getLogger(__name__)

#: Gated quantities, in table order.
METRICS = ("latency", "size", "arena")

#: Largest noise allowance, as a fraction of the baseline p50.
MAX_NOISE_FRACTION = 0.5

#: Fewer timed runs than this makes a wall-clock gate weak; the result says so.
MIN_WALL_CLOCK_RUNS = 10

_PCT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")


@dataclass
class Check:
    """One gated quantity.

    Attributes:
        metric: ``latency``, ``size`` or ``arena``.
        quantity: What was compared, e.g. ``cycles p50`` or ``latency p50 (ms)``.
        unit: ``cycles``, ``ms`` or ``bytes``.
        baseline: The baseline value (``None`` when the baseline lacks it).
        current: The current value (``None`` when this run lacks it).
        limit: Allowed relative growth (0.05 = 5%).
        rule: ``exact`` or ``noise-aware``.
        status: ``pass``, ``fail``, ``improved`` or ``skipped``.
        allowance: The absolute noise allowance added by the noise-aware rule.
        note: Why a check was skipped, or what the rule saw.
        confidence: How sure the check is that the current value exceeds the
            limit (see the module docstring); None where it cannot say.
    """

    metric: str
    quantity: str
    unit: str
    baseline: float | None
    current: float | None
    limit: float
    rule: str
    status: str
    allowance: float = 0.0
    note: str = ""
    confidence: float | None = None

    @property
    def change(self) -> float | None:
        """Relative change ``current / baseline - 1`` (``None`` when unknown)."""
        if self.baseline is None or self.current is None or self.baseline == 0:
            return None
        return self.current / self.baseline - 1.0

    @property
    def threshold(self) -> float | None:
        """The largest current value that still passes."""
        if self.baseline is None:
            return None
        return self.baseline * (1.0 + self.limit) + self.allowance

    def to_json(self) -> dict[str, Any]:
        """JSON form (``gate`` section of ``bench --json``)."""
        return {
            "metric": self.metric,
            "quantity": self.quantity,
            "unit": self.unit,
            "baseline": self.baseline,
            "current": self.current,
            "change": self.change,
            "limit": self.limit,
            "threshold": self.threshold,
            "allowance": self.allowance,
            "rule": self.rule,
            "status": self.status,
            "note": self.note,
            "confidence": self.confidence,
        }


@dataclass
class GateResult:
    """All checks of one bench report against one baseline.

    Attributes:
        board: The board both reports ran on.
        model: The model name of the current report.
        checks: One :class:`Check` per gated quantity.
        notes: Warnings about the comparison itself (few runs, other model).
    """

    board: str
    model: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.failed

    @property
    def failed(self) -> list[Check]:
        """The checks that regressed."""
        return [c for c in self.checks if c.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "board": self.board,
            "model": self.model,
            "passed": self.passed,
            "checks": [c.to_json() for c in self.checks],
            "notes": list(self.notes),
        }


def parse_regression(specs: str | Iterable[str] | None, default: float = 0.05) -> dict[str, float]:
    """Parses ``--max-regression`` values into a limit per metric.

    Each spec is ``PCT`` (all metrics) or ``METRIC=PCT``; ``PCT`` is ``5%``,
    ``5`` (also percent) or ``0`` -- a bare number is always percent, so
    ``0.5`` means half a percent.

    Raises:
        ConfigError: an unknown metric or a malformed or negative number.
    """
    limits = dict.fromkeys(METRICS, default)
    if specs is None:
        return limits
    if isinstance(specs, str):
        specs = [specs]
    for spec in specs:
        for part in str(spec).split(","):
            name, sep, value = part.rpartition("=")
            name = name.strip()
            match = _PCT.match(value)
            if not match or (sep and not name):
                raise ConfigError(
                    f"--max-regression '{part}' is not a percentage",
                    hint="Write e.g. 5% or latency=5%,size=0%.",
                )
            frac = float(match.group(1)) / 100.0
            if not sep:
                limits = dict.fromkeys(METRICS, frac)
            elif name in METRICS:
                limits[name] = frac
            else:
                raise ConfigError(
                    f"--max-regression names an unknown quantity '{name}'",
                    hint=f"Use one of: {', '.join(METRICS)}.",
                )
    return limits


def _status(current: float, baseline: float, threshold: float) -> str:
    if current > threshold:
        return "fail"
    return "improved" if current < baseline else "pass"


def check_exact(metric: str, quantity: str, unit: str, baseline: float | None, current: float | None,
                limit: float) -> Check:
    """Gates a deterministic quantity: fails when ``current > baseline * (1 + limit)``."""
    if baseline is None or current is None:
        missing = "baseline" if baseline is None else "current report"
        return Check(metric, quantity, unit, baseline, current, limit, "exact", "skipped", note=f"not in the {missing}")
    return Check(metric, quantity, unit, baseline, current, limit, "exact",
                 _status(current, baseline, baseline * (1.0 + limit)), confidence=1.0)


def slower_confidence(baseline: Iterable[float], current: Iterable[float], limit: float) -> float | None:
    """Confidence (0..1) that ``current`` samples are slower than ``baseline``
    samples scaled by ``1 + limit``: the one-sided Mann-Whitney U test in its
    normal approximation. None with fewer than two samples on a side."""
    import numpy as np

    cur = np.asarray(list(current), dtype=float)
    base = np.asarray(list(baseline), dtype=float) * (1.0 + limit)
    n1, n2 = len(cur), len(base)
    if n1 < 2 or n2 < 2:
        return None
    diff = cur[:, None] - base[None, :]
    u = float((diff > 0).sum() + 0.5 * (diff == 0).sum())
    sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)
    z = (u - n1 * n2 / 2.0) / sd
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def check_noisy(metric: str, quantity: str, unit: str, baseline: Mapping[str, float],
                current: Mapping[str, float], limit: float,
                samples: tuple[Iterable[float], Iterable[float]] | None = None) -> Check:
    """Gates a measured (noisy) quantity with the noise-aware rule in this module's docstring.

    Args:
        baseline, current: Stats dicts with at least ``min``, ``p50``, ``p90``.
        samples: ``(baseline, current)`` per-run values, for the confidence.
    """
    spread = max(0.0, baseline["p90"] - baseline["p50"], current["p90"] - current["p50"])
    noise = min(spread, MAX_NOISE_FRACTION * baseline["p50"])
    p50_over = current["p50"] > baseline["p50"] * (1.0 + limit) + noise
    min_over = current["min"] > baseline["min"] * (1.0 + limit)
    if p50_over and min_over:
        status = "fail"
    elif current["p50"] < baseline["p50"] and current["min"] < baseline["min"]:
        status = "improved"
    else:
        status = "pass"
    note = f"min {baseline['min']:.4g} -> {current['min']:.4g}"
    if noise < spread:
        note += f"; spread {spread:.4g} capped at {MAX_NOISE_FRACTION:.0%} of the baseline p50"
    if p50_over and not min_over:
        note += "; p50 beyond limit but fastest run is not: counted as noise"
    confidence = slower_confidence(*samples, limit) if samples is not None else None
    if confidence is None:
        note += "; confidence unknown (no per-run samples in a report)"
    else:
        note += f"; {confidence:.1%} confident the runs are slower than the limit allows"
    return Check(metric, quantity, unit, baseline["p50"], current["p50"], limit, "noise-aware", status,
                 allowance=noise, note=note, confidence=confidence)


def _size(report: Mapping[str, Any]) -> float | None:
    mem = report.get("memory") or {}
    if "weight_bytes" not in mem and "code_bytes" not in mem:
        return None
    return float(mem.get("weight_bytes", 0)) + float(mem.get("code_bytes", 0))


def _arena(report: Mapping[str, Any]) -> float | None:
    value = (report.get("memory") or {}).get("arena_bytes")
    return None if value is None else float(value)


def _samples(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    got = [(r.get("samples") or {}).get("latency_ms") for r in (baseline, current)]
    if not all(isinstance(g, list) and g for g in got):
        return None
    return [float(v) for v in got[0]], [float(v) for v in got[1]]


def _is_finite_stats(stats: Any) -> bool:
    return isinstance(stats, Mapping) and all(
        isinstance(stats.get(k), (int, float)) and math.isfinite(stats[k]) for k in ("min", "p50", "p90"))


def compare(current: Mapping[str, Any], baseline: Mapping[str, Any],
            max_regression: float | Mapping[str, float] = 0.05) -> GateResult:
    """Gates ``current`` (a ``bench --json`` object) against ``baseline`` (another one).

    Args:
        current: The report of this run.
        baseline: The reference report, e.g. committed next to the CI workflow.
        max_regression: Allowed relative growth, for all metrics or per metric
            (see :func:`parse_regression`).

    Returns:
        The :class:`GateResult`; ``passed`` is False when anything regressed.

    Raises:
        ConfigError: the reports are for different boards, or the latency
            statistics are missing -- comparing them would mean nothing.
    """
    limits = dict.fromkeys(METRICS, max_regression) if isinstance(max_regression, (int, float)) else {
        **dict.fromkeys(METRICS, 0.05), **max_regression}
    board, base_board = current.get("board", ""), baseline.get("board", "")
    if board != base_board:
        raise ConfigError(
            f"the baseline was measured on '{base_board}', this run on '{board}'",
            hint="Keep one baseline file per board, e.g. baselines/<board>.json.",
        )
    result = GateResult(board=str(board), model=str(current.get("model", "")))
    if baseline.get("model") and current.get("model") and baseline["model"] != current["model"]:
        result.notes.append(f"model name differs: baseline '{baseline['model']}', current '{current['model']}'")

    deterministic = bool(current.get("simulated")) and bool(baseline.get("simulated")) \
        and "cycles" in current and "cycles" in baseline
    if deterministic:
        result.checks.append(check_exact("latency", "cycles p50", "cycles", float(baseline["cycles"]["p50"]),
                                         float(current["cycles"]["p50"]), limits["latency"]))
    else:
        cur, base = current.get("latency_ms"), baseline.get("latency_ms")
        if not (_is_finite_stats(cur) and _is_finite_stats(base)):
            raise ConfigError("a report has no latency_ms statistics (min, p50, p90)",
                              hint="Use the JSON written by `edgekit bench --json` for both.")
        result.checks.append(check_noisy("latency", "latency p50 (ms)", "ms", base, cur, limits["latency"],
                                         _samples(baseline, current)))
        runs = min(int(current.get("runs", 0)), int(baseline.get("runs", 0)))
        if runs < MIN_WALL_CLOCK_RUNS:
            result.notes.append(f"wall-clock gate on only {runs} run(s): use --runs {MIN_WALL_CLOCK_RUNS} or more "
                                "so the spread is measured")
    result.checks.append(check_exact("size", "weights + code", "bytes", _size(baseline), _size(current),
                                     limits["size"]))
    result.checks.append(check_exact("arena", "arena", "bytes", _arena(baseline), _arena(current), limits["arena"]))
    for c in result.failed:
        logger.debug("gate %s on %s: %s -> %s (limit %+.1f%%)", c.metric, board, c.baseline, c.current, c.limit * 100)
    return result

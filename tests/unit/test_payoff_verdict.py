"""The verdict of a step measured in wall-clock rounds (edgekit.compress.payoff):
the speed-up is the median of the per-round ratios, its band their
quartiles, and the verdict says "faster" / "slower" only when the whole
band is on that side of 1 and the median clears the 3 % noise margin;
otherwise "no measurable latency change". Synthetic rounds, no timing.

tests/sim/test_payoff.py checks that a real measurement (the structured-pruned
digits CNN on host-1core) gets the verdict these rules give.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.compress.passes import CompressionStep, ModelStats
from edgekit.compress.payoff import PackageMeasurement, PayoffPlan, _latency_trend, build_report

pytestmark = pytest.mark.unit

FP32, PRUNED = "a" * 64, "b" * 64
BEFORE, AFTER = ModelStats(1000, 100_000, 4000), ModelStats(700, 54_000, 2800)


def _report(before_ms: list[float], after_ms: list[float]):
    measured = {k: PackageMeasurement(key=k, stats=s, latency_ms=float(np.median(r)), round_ms=list(r),
                                      package_bytes=10_000, memory={"weight_bytes": 4000, "arena_bytes": 1024})
                for k, s, r in ((FP32, BEFORE, before_ms), (PRUNED, AFTER, after_ms))}  # fmt: skip
    step = CompressionStep("prune-structured", {}, True, BEFORE, AFTER, 0.1)
    plan = PayoffPlan(models={FP32: None, PRUNED: None}, fp32_key=FP32,
                      rows=[("prune-structured", "s", step, FP32, PRUNED)])  # fmt: skip
    report = build_report(plan, measured, "host-1core", simulated=False, clock_hz=1e9, rounds=len(before_ms), runs=20)
    return report, report.row("prune-structured")


def _rounds(ratios: list[float]) -> tuple[list[float], list[float]]:
    after = [0.007 * (1 + 0.01 * (i % 3)) for i in range(len(ratios))]  # a model of ~7 us, some drift
    return [a * r for a, r in zip(after, ratios)], after


@pytest.mark.parametrize(
    ("ratios", "trend", "said"),
    [
        ([1.04, 1.06, 1.05, 1.09, 1.07, 1.05, 1.08, 1.04, 1.06, 1.05, 1.07, 1.06, 1.05, 1.08, 1.06], "faster", "1.06× faster"),
        ([0.80, 0.82, 0.79, 0.85, 0.81, 0.80, 0.83, 0.78, 0.82, 0.81, 0.80, 0.84, 0.79, 0.81, 0.82], "slower", "1.23× slower"),
        # The CI run that failed the old wall-clock test: median above 1, lower quartile below.
        ([0.90, 1.23, 0.97, 1.05, 1.10, 0.95, 1.02, 1.08, 0.98, 1.12, 1.01, 0.96, 1.15, 1.04, 0.99], "same",
         "no measurable latency change"),
        # The whole band above 1 but by less than the 3 % margin.
        ([1.01, 1.02, 1.015, 1.02, 1.01, 1.025, 1.02, 1.01, 1.015, 1.02, 1.01, 1.02, 1.015, 1.02, 1.01], "same",
         "no measurable latency change"),
    ],
    ids=["faster", "slower", "noisy", "within-margin"],
)
def test_the_verdict_is_what_the_rounds_give(ratios: list[float], trend: str, said: str) -> None:
    before, after = _rounds(ratios)
    report, row = _report(before, after)
    measured = np.asarray(before) / np.asarray(after)
    q1, median, q3 = np.percentile(measured, [25, 50, 75])
    assert row.speedup == pytest.approx(median) and row.speedup_band == pytest.approx((q1, q3))
    assert _latency_trend(row.speedup, row.speedup_band) == trend
    assert row.verdict == f"46 % fewer MACs; {said}"
    assert row.step.latency_ms_before == pytest.approx(np.median(before))
    assert row.step.latency_ms_after == pytest.approx(np.median(after))
    slower = [w for w in report.warnings() if "slower" in w]
    assert slower == ([f"the s prune-structured step makes the model {1 / median:.2f}x slower on host-1core "
                       f"({np.median(before):.3g} -> {np.median(after):.3g} ms)"] if trend == "slower" else [])  # fmt: skip


def test_latency_trend_needs_the_band_on_one_side_and_the_margin() -> None:
    # Wall clock: quartile band and a 3 % margin.
    assert _latency_trend(1.05, (1.01, 1.08)) == "faster"
    assert _latency_trend(1.05, (0.99, 1.08)) == "same"
    assert _latency_trend(1.02, (1.01, 1.03)) == "same"
    assert _latency_trend(0.95, (0.92, 0.99)) == "slower"
    assert _latency_trend(0.95, (0.92, 1.01)) == "same"
    # Deterministic (cycle counts, band of zero width): 1 % is enough.
    assert _latency_trend(1.011, (1.011, 1.011)) == "faster"
    assert _latency_trend(0.985, (0.985, 0.985)) == "slower"
    assert _latency_trend(1.005, (1.005, 1.005)) == "same"
    # Not measured.
    assert _latency_trend(None, None) == "" and _latency_trend(1.2, None) == ""


def test_rounds_of_unequal_length_give_no_band() -> None:
    before, after = _rounds([1.1] * 15)
    _, row = _report(before, after[:14])
    assert row.speedup == pytest.approx(np.median(before) / np.median(after[:14])) and row.speedup_band is None
    assert row.verdict == "46 % fewer MACs"

"""Issue 16 item 5: the latency gate trips on a 2x slowdown of any model and says how sure it is."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.report.gates import compare, slower_confidence
from edgekit.runtime.stats import summarize


def _report(samples: list[float]) -> dict:
    return {"board": "host", "model": "m", "simulated": False, "runs": len(samples),
            "latency_ms": summarize(samples), "samples": {"latency_ms": samples},
            "memory": {"arena_bytes": 1, "weight_bytes": 1, "code_bytes": 1}}


def _jittery(p50: float, n: int, seed: int) -> list[float]:
    """A sub-millisecond model on a busy host: mostly p50, a tail of outliers
    several milliseconds long (p90 - p50 > p50, as in the issue)."""
    rng = np.random.default_rng(seed)
    runs = p50 * (1 + 0.03 * rng.standard_normal(n))
    runs[rng.random(n) < 0.15] += 5.0
    return [float(v) for v in np.abs(runs)]


@pytest.mark.parametrize("p50", [0.05, 0.85, 3.0, 40.0])
def test_a_2x_slowdown_trips_the_gate_even_with_large_jitter(p50: float) -> None:
    base, cur = _jittery(p50, 50, 1), _jittery(2 * p50, 50, 2)
    result = compare(_report(cur), _report(base), 0.05)
    latency = result.checks[0]
    assert latency.status == "fail", latency
    assert latency.allowance <= 0.5 * latency.baseline
    assert latency.confidence is not None and latency.confidence > 0.99
    assert "confident" in latency.note


def test_same_speed_passes_with_low_confidence() -> None:
    base, cur = _jittery(0.85, 50, 3), _jittery(0.85, 50, 4)
    latency = compare(_report(cur), _report(base), 0.05).checks[0]
    assert latency.status in ("pass", "improved")
    assert latency.confidence is not None and latency.confidence < 0.9


def test_confidence_is_bounded_by_the_number_of_runs() -> None:
    assert slower_confidence([1.0], [2.0], 0.05) is None
    few = slower_confidence([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], 0.05)
    many = slower_confidence([1.0] * 30, [2.0] * 30, 0.05)
    assert few is not None and many is not None and few < many and many > 0.999


def test_deterministic_cycles_are_certain() -> None:
    base = {**_report([1.0, 1.0]), "simulated": True, "cycles": summarize([100.0, 100.0])}
    cur = {**_report([2.0, 2.0]), "simulated": True, "cycles": summarize([200.0, 200.0])}
    check = compare(cur, base, 0.05).checks[0]
    assert check.status == "fail" and check.confidence == 1.0

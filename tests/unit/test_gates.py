"""Regression gates: exact for simulated cycles, noise-aware for wall clock."""

from __future__ import annotations

import pytest

from edgekit.core.errors import ConfigError
from edgekit.report.bench_gate import bench_with_gate
from edgekit.report.gates import compare, parse_regression
from edgekit.report.markdown import gate_text_table


def _stats(p50: float, spread: float = 0.0, lo: float | None = None) -> dict[str, float]:
    lo = p50 - spread if lo is None else lo
    return {"min": lo, "p50": p50, "p90": p50 + spread, "p99": p50 + 2 * spread, "mean": p50, "std": spread / 2}


def _sim(cycles: float, arena: int = 1000, weights: int = 5000) -> dict:
    return {"board": "rv32-mcu-sim", "model": "m", "simulated": True, "runs": 1, "latency_ms": _stats(cycles / 1e5),
            "cycles": _stats(cycles), "memory": {"arena_bytes": arena, "weight_bytes": weights, "code_bytes": 100}}


def _host(p50: float, spread: float, lo: float | None = None, runs: int = 30) -> dict:
    return {"board": "host", "model": "m", "simulated": False, "runs": runs, "latency_ms": _stats(p50, spread, lo),
            "memory": {"arena_bytes": 1000, "weight_bytes": 5000, "code_bytes": 100}}


def _status(result, metric: str) -> str:
    return next(c.status for c in result.checks if c.metric == metric)


def test_parse_regression() -> None:
    assert parse_regression("5%") == {"latency": 0.05, "size": 0.05, "arena": 0.05}
    assert parse_regression(["2", "size=0%"]) == {"latency": 0.02, "size": 0.0, "arena": 0.02}
    assert parse_regression("latency=10%,arena=1%")["arena"] == pytest.approx(0.01)
    for bad in ("five", "speed=5%", "-5%", "=5%"):
        with pytest.raises(ConfigError):
            parse_regression(bad)


def test_simulated_cycles_gate_exactly() -> None:
    base = _sim(1_000_000)
    assert compare(_sim(1_050_000), base, 0.05).passed  # exactly at the limit
    result = compare(_sim(1_050_001), base, 0.05)  # one cycle over
    assert not result.passed and [c.metric for c in result.failed] == ["latency"]
    assert result.checks[0].rule == "exact" and result.checks[0].quantity == "cycles p50"
    assert _status(compare(_sim(900_000), base, 0.05), "latency") == "improved"


def test_size_and_arena_regressions() -> None:
    result = compare(_sim(1e6, arena=1200, weights=5000), _sim(1e6), 0.05)
    assert [c.metric for c in result.failed] == ["arena"]
    result = compare(_sim(1e6, weights=6000), _sim(1e6), {"size": 0.5, "latency": 0.05, "arena": 0.05})
    assert result.passed
    table = gate_text_table(compare(_sim(1.2e6, arena=2000), _sim(1e6), 0.05))
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "compared", "baseline", "current", "change", "limit", "rule", "status"]
    assert "REGRESSED" in lines[2] and "+20.00%" in lines[2] and "REGRESSED" in lines[4] and "ok" in lines[3]


def test_wall_clock_noise_widens_the_tolerance() -> None:
    base = _host(10.0, spread=1.0)
    # p50 +8% but inside the observed spread (p90 - p50 = 1 ms): noise, not a regression.
    assert compare(_host(10.8, spread=1.0), base, 0.05).passed
    # A real slowdown moves p50 beyond limit + spread and the fastest run too.
    slow = compare(_host(12.0, spread=1.0), base, 0.05)
    assert not slow.passed and slow.checks[0].rule == "noise-aware" and slow.checks[0].allowance == 1.0
    # p50 far off but the fastest run as fast as before: a noisy run, counted as noise.
    noisy = compare(_host(12.0, spread=0.2, lo=9.0), base, 0.05)
    assert noisy.passed and "counted as noise" in noisy.checks[0].note
    # With no spread at all the rule is the plain limit.
    assert not compare(_host(10.6, 0.0), _host(10.0, 0.0), 0.05).passed


def test_few_wall_clock_runs_are_flagged() -> None:
    result = compare(_host(10.0, 0.1, runs=3), _host(10.0, 0.1), 0.05)
    assert any("only 3 run" in n for n in result.notes)


def test_mismatched_boards_and_missing_fields() -> None:
    with pytest.raises(ConfigError, match="baseline was measured on 'host'"):
        compare(_sim(1e6), _host(1.0, 0.1), 0.05)
    base = _sim(1e6)
    del base["memory"]
    result = compare(_sim(1e6), base, 0.05)
    assert _status(result, "size") == "skipped" and _status(result, "arena") == "skipped" and result.passed


def test_confirmation_reruns_only_wall_clock_failures() -> None:
    calls: list[int] = []
    sequence = [_host(13.0, 0.1), _host(10.1, 0.1), _host(12.5, 0.1)]

    def fake_bench(path: str, **_: object) -> dict:
        calls.append(1)
        return dict(sequence[len(calls) - 1])

    report, result = bench_with_gate("p.ekpkg", _host(10.0, 0.1), max_regression=0.05, confirm=2, bench=fake_bench)
    assert len(calls) == 2 and result.passed and report["latency_ms"]["p50"] == 10.1
    assert report["gate"]["passed"] and any("measured 2 times" in n for n in result.notes)

    calls.clear()
    sims = iter([_sim(2e6)] * 5)
    _, result = bench_with_gate("p.ekpkg", _sim(1e6), confirm=2, bench=lambda p, **k: next(sims))
    assert not result.passed  # a simulator is not re-measured: it would count the same cycles

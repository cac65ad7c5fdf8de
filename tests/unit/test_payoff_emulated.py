"""compress --board on a board whose simulator counts no cycles (qemu-user
for raspberry-pi-4 and visionfive2): the emulator's wall clock on this
machine is not the board's latency, so the payoff reports sizes and outputs
and no latency or speed-up. Before, raspberry-pi-4's int8 step read "8.01 ms,
2.14x slower" under a "cycles" heading, with "deterministic cycle counts"
below the table.

bench_package is replaced (no package is built or run).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.api import payoff
from edgekit.compress.passes import CompressionStep, ModelStats
from edgekit.compress.payoff import PackageMeasurement, PayoffPlan, build_report

pytestmark = pytest.mark.unit

FP32, INT8 = "a" * 64, "b" * 64


class _Ticks:
    total = 0

    def __call__(self, what: str, detail: str = "") -> None:
        pass


def _bench(monkeypatch: pytest.MonkeyPatch, reports: dict[str, dict]) -> dict[str, PackageMeasurement]:
    monkeypatch.setattr(payoff, "bench_package", lambda path, **kw: reports[Path(path).stem])
    measured = {k: PackageMeasurement(key=k, stats=ModelStats(1000, 10_000, 4000)) for k in reports}
    payoff._bench(list(reports), {k: Path(f"{k}.ekpkg") for k in reports}, measured, "b", [], _Ticks(), True)
    return measured


def _report(p50_ms: float, cycles: float | None = None) -> dict:
    report = {"simulated": True, "latency_ms": {"p50": p50_ms}, "ort_max_rel_error": {"max": 0.0}}
    if cycles is not None:
        report["cycles"] = {"p50": cycles}
    return report


def test_an_emulator_without_cycles_gives_no_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    measured = _bench(monkeypatch, {FP32: _report(3.74), INT8: _report(8.01)})
    assert all(m.simulated and m.latency_ms is None and m.cycles is None for m in measured.values())
    step = CompressionStep("quantize", {}, True, ModelStats(1000, 10_000, 4000), ModelStats(1000, 10_000, 1000), 1.0)
    plan = PayoffPlan(models={FP32: None, INT8: None}, fp32_key=FP32, rows=[("quantize", "", step, FP32, INT8)])
    report = build_report(plan, measured, "raspberry-pi-4", simulated=True, clock_hz=1.5e9, rounds=15, runs=5,
                          emulated=True)  # fmt: skip
    assert "no latency" in report.timing and "cycle counts (" not in report.timing
    row = report.rows[1]
    assert row.speedup is None and row.speedup_vs_fp32 is None
    assert not any("slower" in w for w in report.warnings())
    assert "cycles (latency)" not in report.to_markdown()


def test_a_cycle_counting_simulator_keeps_its_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    measured = _bench(monkeypatch, {FP32: _report(0.11, 10_900.0), INT8: _report(1.95, 195_000.0)})
    assert measured[INT8].cycles == 195_000.0 and measured[INT8].latency_ms == 1.95
    step = CompressionStep("quantize", {}, True, ModelStats(1000, 10_000, 4000), ModelStats(1000, 10_000, 1000), 1.0)
    plan = PayoffPlan(models={FP32: None, INT8: None}, fp32_key=FP32, rows=[("quantize", "", step, FP32, INT8)])
    report = build_report(plan, measured, "rv32-mcu-sim", simulated=True, clock_hz=1e8, rounds=15, runs=5)
    assert "deterministic cycle counts" in report.timing
    assert report.rows[1].speedup == pytest.approx(10_900 / 195_000)
    assert any("slower" in w for w in report.warnings())

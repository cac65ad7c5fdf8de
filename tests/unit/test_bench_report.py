"""The typed bench report: the shipped baselines round-trip, bad baselines get typed errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.core.errors import ConfigError
from edgekit.package.bench_report import BenchReport
from edgekit.report.bench_gate import load_report

BASELINES = sorted((Path(__file__).resolve().parents[2] / "examples" / "ci" / "baselines").glob("*.json"))
STATS = {"min": 1.0, "p50": 1.2, "p90": 1.5, "p99": 1.9, "mean": 1.3, "std": 0.2}


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.stem)
def test_shipped_baselines_round_trip(path: Path) -> None:
    data = json.loads(path.read_text())
    report = BenchReport.from_json(data)

    assert report.to_json() == data
    assert report.board == path.stem and report.latency_ms["p50"] > 0


def test_sections_added_after_the_measurement_are_kept() -> None:
    report = BenchReport(board="host", runs=10, warmup=2, latency_ms=STATS, threads=2)
    data = {**report.to_json(), "ratio_vs_ort": 1.4, "gate": {"passed": True}}

    again = BenchReport.from_json(data)

    assert again.extra == {"ratio_vs_ort": 1.4, "gate": {"passed": True}}
    assert again.to_json() == data
    assert "cycles" not in data and "rpc" not in data  # absent sections stay absent


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"board": 3}, "board"),
        ({"latency_ms": {"p50": 1.0}}, "latency_ms"),
        ({"cycles": {**STATS, "p90": "many"}}, "cycles"),
        ({"runs": 2.5}, "runs"),
        ({"simulated": "yes"}, "simulated"),
        ({"memory": {"arena_bytes": "1 KiB"}}, "memory"),
    ],
)
def test_bad_baseline_names_the_key(tmp_path: Path, change: dict, key: str) -> None:
    data = {**BenchReport(board="host", runs=10, warmup=2, latency_ms=STATS).to_json(), **change}
    path = tmp_path / "base.json"
    path.write_text(json.dumps(data))

    with pytest.raises(ConfigError, match=f"baseline file '{path}': key '{key}' must be") as info:
        load_report(path)

    assert info.value.fields["key"] == key
    assert "edgekit bench --json" in info.value.hint


def test_a_baseline_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "base.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_report(path)

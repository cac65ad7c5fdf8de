"""Smoke test of benchmarks/quantization.py: its core function on the digits CNN,
with tiny sample and run counts (the real run is documented in BENCHMARKS.md)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("onnxruntime")
pytest.importorskip("tvm")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quantization.py"


@pytest.fixture(scope="module")
def bench(script_module):
    with script_module(SCRIPT, "quant_benchmark") as module:
        yield module


@pytest.fixture(scope="module")
def row(bench, tmp_path_factory: pytest.TempPathFactory) -> dict:
    case = bench.digits_case(calibration_samples=128, eval_samples=32)
    return bench.measure(case, tmp_path_factory.mktemp("quant-bench"), runs=2, rounds=1, warmup=1)


def test_int8_weights_shrink(row: dict) -> None:
    assert row["model"] == "digits_cnn"
    assert 0 < row["weight_bytes_int8"] < row["weight_bytes_fp32"] / 3.5, row


def test_int8_package_matches_onnxruntime_qdq_within_one_lsb(row: dict) -> None:
    # The digits logits come out of a per-tensor DequantizeLinear: the check is in LSBs.
    assert row["lsb_within1"] >= 0.999, row
    assert row["lsb_max"] <= 1.0, row


def test_fidelity_fields_are_sane(row: dict) -> None:
    assert row["sqnr_db"] > 20.0 and 0.99 < row["cosine"] <= 1.0 + 1e-9, row
    assert row["top1_agreement"] is not None and row["top1_agreement"] >= 90.0, row
    # 32 real test images: both models classify nearly all of them right.
    assert row["accuracy_fp32"] >= 85.0 and abs(row["accuracy_int8"] - row["accuracy_fp32"]) <= 100.0 / 32 + 1e-9, row


def test_latencies_are_measured_for_all_four_engines(bench, row: dict) -> None:
    assert set(row["latency_ms"]) == set(bench.ENGINES)
    assert all(math.isfinite(v) and v > 0 for v in row["latency_ms"].values()), row["latency_ms"]


def test_table_has_one_row_per_model_and_the_command(bench, row: dict) -> None:
    text = bench.render([row], "CMD")
    assert "`CMD`" in text
    lines = [line for line in text.splitlines() if line.startswith("| digits_cnn |")]
    assert len(lines) == 1
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert lines[0].count("|") == header.count("|")

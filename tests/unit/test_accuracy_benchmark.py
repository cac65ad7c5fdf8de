"""Smoke test of benchmarks/accuracy.py: the rendered-text data and the CTC
exact-match metric read real text with the fp32 PP-OCR recognizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rapidocr")
pytest.importorskip("PIL")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"


@pytest.fixture(scope="module")
def bench(script_module):
    with script_module(SCRIPT, "accuracy_benchmark") as module:
        yield module


def test_recognizer_reads_the_rendered_lines(bench) -> None:
    case = bench.rec_case(calibration_samples=2, eval_samples=8)
    assert case.evaluation["x"].shape == (8, 3, 48, 320) and case.evaluation["labels"].dtype.kind == "U"
    assert bench.task_metric(case, case.fp32) >= 0.75
    # The metric is exact match: one wrong symbol fails the line.
    logits = np.zeros((1, 4, 5), np.float32)
    logits[0, [0, 1, 2, 3], [1, 1, 0, 2]] = 1.0  # "a", "a" (repeat), blank, "b"
    metric = bench.CtcExactMatch(["a", "b", "c", "d"])
    assert metric.decode(logits) == ["ab"]
    assert metric({"y": logits}, {"labels": np.array(["ab"])}) == 1.0
    assert metric({"y": logits}, {"labels": np.array(["abc"])}) == 0.0


def test_classifier_labels_are_rotations(bench) -> None:
    x, labels = bench.rendered_lines(4, seed=0, width=192, rotate=True)
    assert x.shape == (4, 3, 48, 192) and labels.tolist() == [0, 1, 0, 1]
    assert -1.0 <= x.min() and x.max() <= 1.0


@pytest.mark.slow
def test_max_drop_on_the_recognizer_small_sample(bench) -> None:
    """#18 acceptance, on a small sample: ``--max-drop 0.5`` with the task
    metric (exact match after CTC decoding) on the real PP-OCR recognizer
    keeps every evaluated line as fp32 reads it, with weights at least 3x
    smaller, well inside the 5-minute budget."""
    import time

    from edgekit.compress import QuantConfig, quantize

    case = bench.rec_case(calibration_samples=12, eval_samples=16)
    t0 = time.monotonic()
    result = quantize(case.fp32, QuantConfig(max_drop=0.5), case.calibration, eval_data=case.evaluation,
                      metric=case.metric)  # fmt: skip
    seconds = time.monotonic() - t0
    report = result.report
    assert report.fallback is not None and report.fallback.met, report.fallback
    assert 100 * (report.metric_fp32 - report.metric_quantized) <= 0.5
    # Judged again outside quantize(), the QDQ graph run as written.
    assert bench.task_metric(case, result.model) >= bench.task_metric(case, case.fp32) - 0.005
    assert report.weight_bytes_before / report.weight_bytes_after >= 3.0
    assert seconds < 300, seconds

"""Which calibration settings lose the least task accuracy (issue #18 item 2):
activation range methods (MinMax, Percentile, Entropy, and ``auto``, chosen
per tensor), bias correction and SmoothQuant, on real models.

Models and metrics are those of ``benchmarks/accuracy.py`` (the PP-OCR
recognizer and text-angle classifier from the ``rapidocr`` wheel, on
Pillow-rendered text) plus the digits CNN shipped with edgekit (scikit-learn's
digits, real labels). Every quantized model is judged by its task metric with
the QDQ graph run as written (onnxruntime, graph optimizations off); the
output SQNR against fp32 is on the same evaluation data.

Usage::

    nice -n 10 .venv/bin/python benchmarks/calibration.py [--models digits,ppocr-cls,ppocr-rec]
        [--configs minmax,auto,...] [--eval-samples 200] [--calibration-samples 64]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import accuracy  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402

logger = logging.getLogger("benchmarks.calibration")

#: Evaluation samples quantize() itself reports on (not the table's figures).
INTERNAL_EVAL = 8

#: Configuration name -> QuantConfig fields (the rest: BASE, then QuantConfig's defaults).
CONFIGS: dict[str, dict[str, Any]] = {
    "minmax": {"calibration_method": "minmax"},
    "percentile": {"calibration_method": "percentile"},
    "entropy": {"calibration_method": "entropy"},
    "auto": {"calibration_method": "auto"},
    "minmax+bias": {"calibration_method": "minmax", "bias_correction": True},
    "auto+bias": {"calibration_method": "auto", "bias_correction": True},
    "minmax+smooth": {"calibration_method": "minmax", "smooth_quant": True},
    "minmax+bias+smooth": {"calibration_method": "minmax", "bias_correction": True, "smooth_quant": True},
    "auto+bias+smooth": {"calibration_method": "auto", "bias_correction": True, "smooth_quant": True},
}
#: Every configuration states these, so a change of QuantConfig's defaults
#: does not change what a row measures.
BASE = {"bias_correction": False, "smooth_quant": False}


def digits_case(calibration_samples: int, eval_samples: int) -> accuracy.Case:
    from edgekit.examples import digits

    data = digits.load_digits_data(seed=0)  # the split the shipped model was trained on
    return accuracy.Case(
        "digits CNN",
        load_model(str(digits.example_model_path())).model,
        {"x": data.x_train[:calibration_samples]},
        {"x": data.x_test[:eval_samples], "labels": data.y_test[:eval_samples]},
        accuracy.top1,
        f"scikit-learn digits, real labels ({calibration_samples} train / {eval_samples} test)",
    )


CASES: dict[str, Callable[[int, int], accuracy.Case]] = {"digits": digits_case, **accuracy.CASES}


def _input_name(case: accuracy.Case) -> str:
    return case.fp32.graph.input[0].name


def task_metric(case: accuracy.Case, model: onnx.ModelProto) -> tuple[float, float]:
    """(metric, output SQNR dB against fp32) with the QDQ graph run as written."""
    name = _input_name(case)
    x = case.evaluation["x"]

    def outputs(m: onnx.ModelProto) -> dict[str, np.ndarray]:
        sess = accuracy._as_written(m)
        names = [o.name for o in sess.get_outputs()]
        runs = [sess.run(names, {name: x[i : i + 1]}) for i in range(len(x))]
        return {n: np.concatenate([r[k] for r in runs]) for k, n in enumerate(names)}

    out = outputs(model)
    ref = outputs(case.fp32)
    signal = sum(float((r.astype(np.float64) ** 2).sum()) for r in ref.values())
    noise = sum(float(((ref[k].astype(np.float64) - out[k]) ** 2).sum()) for k in ref)
    sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise)
    return case.metric(out, case.evaluation), sqnr


def measure(case: accuracy.Case, configs: list[str]) -> list[dict[str, Any]]:
    fp32_acc, _ = task_metric(case, case.fp32)
    name = _input_name(case)
    calibration = {name: case.calibration["x"]}
    rows = []
    for cfg in configs:
        t0 = time.perf_counter()
        # Every calibration sample calibrates; quantize()'s own report runs on
        # a few evaluation samples (the table is measured below, on all).
        result = quantize(case.fp32, QuantConfig(**{**BASE, **CONFIGS[cfg]}), calibration,
                          eval_data={name: case.evaluation["x"][:INTERNAL_EVAL]},
                          progress=lambda m: logger.info("  %s", m))  # fmt: skip
        seconds = time.perf_counter() - t0
        acc, sqnr = task_metric(case, result.model)
        rows.append({"model": case.name, "config": cfg, "fp32": 100 * fp32_acc, "int8": 100 * acc,
                     "drop": 100 * (fp32_acc - acc), "sqnr_db": sqnr, "seconds": seconds})  # fmt: skip
        logger.warning("%s / %s: %.2f%% -> %.2f%% (drop %+.2f), SQNR %.1f dB, %.0f s", case.name, cfg,
                       100 * fp32_acc, 100 * acc, 100 * (fp32_acc - acc), sqnr, seconds)
    return rows


def render(rows: list[dict[str, Any]], command: str, notes: list[str]) -> str:
    import os

    import onnxruntime as ort

    lines = [
        f"Command: `{command}`; CPU: {accuracy.cpu_name()}, {os.cpu_count()} cores; onnxruntime {ort.__version__}.",
        "",
        "| model | calibration | accuracy fp32 → int8 | drop (points) | output SQNR dB | time s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['config']} | {r['fp32']:.2f}% → {r['int8']:.2f}% | {r['drop']:+.2f} "
                     f"| {r['sqnr_db']:.1f} | {r['seconds']:.0f} |")
    return "\n".join([*lines, "", *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--calibration-samples", type=int, default=64)
    parser.add_argument("-v", "--verbose", action="store_true", help="show edgekit's progress lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("edgekit").setLevel(logging.WARNING)
    models, configs = args.models.split(","), args.configs.split(",")
    for given, known in ((models, CASES), (configs, CONFIGS)):
        unknown = [n for n in given if n not in known]
        if unknown:
            parser.error(f"unknown name(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    rows: list[dict[str, Any]] = []
    notes = []
    for name in models:
        case = CASES[name](args.calibration_samples, args.eval_samples)
        notes.append(f"{case.name}: {case.note}.")
        rows += measure(case, configs)
    command = (f"nice -n 10 .venv/bin/python benchmarks/calibration.py --models {args.models} --configs "
               f"{args.configs} --eval-samples {args.eval_samples} --calibration-samples {args.calibration_samples}")
    print(render(rows, command, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())

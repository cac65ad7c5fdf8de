"""A model onnxruntime quantized with uint8 activations: edgekit int8 before and after the uint8 -> int8 rewrite.

The digits CNN (calibrated on its training split, compared on test images)
or PP-OCR's text-angle classifier from the rapidocr wheel (1x3x48x192, seeded
random images) is quantized by onnxruntime's ``quantize_static`` (QDQ,
``activation_type=QUInt8``, ``weight_type=QInt8``, per channel) and compiled
for ``--board host`` three ways:

* ``int8 before``: the uint8 model without :mod:`edgekit.frontend.uint8_activations`
  (the compile path as it was: every chain reading a uint8 activation stays float);
* ``int8 after``: the same model through ``compile_model`` as it is now;
* ``fp32``: the fp32 model.

Both int8 builds take the int8 variant (an injected cost model; the int8
choice would otherwise measure and may pick fp32), so the table compares the
builds themselves. Latencies are timed interleaved, round by round with the
order rotated, and each cell is the 10th percentile of every run (a shared
machine). The int8 outputs are compared with onnxruntime running the QDQ
graph as written (largest absolute difference).

Usage::

    .venv/bin/python benchmarks/uint8_activations.py [--model digits|ppocr-cls] [--rounds 7] [--runs 50]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import edgekit.compiler.driver as driver  # noqa: E402
from edgekit.compress.calibration import FeedsReader  # noqa: E402
from edgekit.examples.digits import example_model_path, load_digits_data  # noqa: E402
from edgekit.package import open_package  # noqa: E402
from edgekit.runtime.runner import open_runner, resolve_board  # noqa: E402


class _Int8:
    """Cost model keeping every layer int8 (the builds are compared as built)."""

    source, timing = "modeled", "injected by the benchmark"

    def layer_times(self, probe: Any) -> tuple[float, float]:
        return (1.0, 2.0)

    def model_times(self, builds: Any, prepared: Any) -> dict[str, float]:
        return {"int8": 1.0, "mixed": 2.0, "fp32": 2.0}


def _compile(model: str, out: Path, *, rewrite: bool) -> dict[str, Any]:
    keep = driver._int8_activations
    if not rewrite:
        driver._int8_activations = lambda prepared, report: prepared
    try:
        manifest = driver.compile_model(model, "host", out, int8_cost=_Int8()).manifest
    finally:
        driver._int8_activations = keep
    return manifest.section("integer_lowering") or {}


def _case(name: str, d: Path) -> tuple[str, str, list[np.ndarray], list[np.ndarray]]:
    """``(input name, fp32 model path, calibration images, comparison images)``."""
    if name == "digits":
        data = load_digits_data()
        return "input", str(example_model_path()), list(data.x_train[:256, None]), list(data.x_test[:64, None])
    import rapidocr

    from edgekit.frontend.loader import load_model

    src = Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    onnx.save(load_model(str(src), {"x": (1, 3, 48, 192)}).model, str(d / "cls.onnx"))
    rng = np.random.default_rng(0)
    images = [rng.random((1, 3, 48, 192), dtype=np.float32) for _ in range(24)]
    return "x", str(d / "cls.onnx"), images[:16], images[16:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("digits", "ppocr-cls"), default="digits")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args(argv)

    d = Path(tempfile.mkdtemp(prefix="u8bench_"))
    inp, fp32, calib, evals = _case(args.model, d)
    u8 = str(d / "u8.onnx")
    quantize_static(fp32, u8, FeedsReader([{inp: x} for x in calib]), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)  # fmt: skip
    lowering = {"int8 before": _compile(u8, d / "before.ekpkg", rewrite=False),
                "int8 after": _compile(u8, d / "after.ekpkg", rewrite=True)}  # fmt: skip
    driver.compile_model(fp32, "host", d / "fp32.ekpkg")
    pkgs = {"int8 before": d / "before.ekpkg", "int8 after": d / "after.ekpkg", "fp32": d / "fp32.ekpkg"}
    runners = {k: open_runner(p := open_package(v), resolve_board(p, "host")) for k, v in pkgs.items()}

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(u8, opts, providers=["CPUExecutionProvider"])
    out_name = ref.get_outputs()[0].name
    for k in ("int8 before", "int8 after"):
        diff = max(float(np.max(np.abs(runners[k].run({inp: x})[out_name] - ref.run(None, {inp: x})[0]))) for x in evals)
        print(f"{k}: kept float {len(lowering[k].get('kept_float', []))}, lowered {len(lowering[k].get('rewritten', []))}, "
              f"max |diff| vs onnxruntime QDQ {diff:.3g} ({len(evals)} inputs)")  # fmt: skip

    feeds = {inp: evals[0]}
    keys = list(runners)
    every: dict[str, list[float]] = {k: [] for k in keys}
    for r in runners.values():
        r.time_runs(feeds, 10, 0)
    for i in range(args.rounds):
        for k in keys[i % 3 :] + keys[: i % 3]:
            every[k].extend(runners[k].time_runs(feeds, args.runs, 0).latency_ms)
    low = {k: float(np.percentile(v, 10)) for k, v in every.items()}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    print(f"{args.model}, batch 1, host runner defaults, {cpu}; 10th percentile of {args.rounds}x{args.runs} interleaved runs")
    for k in keys:
        print(f"  {k:12s} {low[k] * 1e3:8.1f} us   x{low[k] / low['fp32']:.2f} of fp32")
    for r in runners.values():
        r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

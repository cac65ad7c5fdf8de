"""A model onnxruntime quantized with uint8 activations: edgekit int8 before and after the uint8 -> int8 rewrite.

The digits CNN (calibrated on its training split, compared on test images)
or PP-OCR's text-angle classifier from the rapidocr wheel (1x3x48x192, seeded
random images) is quantized by onnxruntime's ``quantize_static`` (QDQ,
``activation_type=QUInt8``) and compiled for ``--board host``.

``--weights qint8`` (default): ``weight_type=QInt8``, per channel; three builds:

* ``int8 before``: the uint8 model without :mod:`edgekit.frontend.uint8_activations`
  (the compile path as it was: every chain reading a uint8 activation stays float);
* ``int8 after``: the same model through ``compile_model`` as it is now;
* ``fp32``: the fp32 model.

``--weights quint8-asymmetric``: ``weight_type=QUInt8`` with
``WeightSymmetric=False``, per tensor (the weights of onnxruntime's older
default, and of many published int8 models: a zero point other than 128);
four builds:

* ``int8 before``: asymmetric conv/matmul chains kept in float, as before
  the integer lowering took weight zero points (its window-sum step patched
  to skip the chain, which is what the lowering did then);
* ``int8 after``: as it is now (the weight zero point subtracted exactly);
* ``int8 symmetric``: the same fp32 model quantized the same way but with
  symmetric weights (``WeightSymmetric=True``: zero point 128): the cost of
  the zero point, side by side;
* ``fp32``: the fp32 model.

``--before-tree DIR`` (with ``--weights quint8-asymmetric``): ``int8 before``
is the asymmetric model compiled by the edgekit source tree ``DIR`` instead
(e.g. a ``git archive HEAD`` snapshot taken before a change to the lowering),
in a child process with that tree first on the path; the packages are then
loaded and timed here, side by side with this tree's.

Every int8 build takes the int8 variant (an injected cost model; the int8
choice would otherwise measure and may pick fp32), so the table compares the
builds themselves. Latencies are timed interleaved, round by round with the
order rotated, and each cell is the 10th percentile of every run (a shared
machine). The int8 outputs are compared with onnxruntime running the QDQ
graph as written (largest absolute difference).

Usage::

    .venv/bin/python benchmarks/uint8_activations.py [--model digits|ppocr-cls] [--weights qint8|quint8-asymmetric] [--rounds 7] [--runs 50] [--before-tree DIR]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
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


def _keep_asymmetric_float(ctx: Any, *args: Any, **kwargs: Any) -> Any:
    from edgekit.compiler.integer.context import Skip

    raise Skip("asymmetric weights (zero point != 0)")


def _compile(model: str, out: Path, *, rewrite: bool = True, asymmetric: bool = True) -> dict[str, Any]:
    """``compile_model`` for the host, forced to int8; ``rewrite=False`` without the uint8 -> int8
    rewrite, ``asymmetric=False`` with asymmetric weights kept float (the lowering before it took them)."""
    import edgekit.compiler.integer.linear as linear

    keep, keep_asym = driver._int8_activations, linear._minus_weight_zero
    if not rewrite:
        driver._int8_activations = lambda prepared, report: prepared
    if not asymmetric:
        linear._minus_weight_zero = _keep_asymmetric_float
    try:
        manifest = driver.compile_model(model, "host", out, int8_cost=_Int8()).manifest
    finally:
        driver._int8_activations, linear._minus_weight_zero = keep, keep_asym
    return manifest.section("integer_lowering") or {}


#: Run in a child process: ``sys.argv[1:]`` = tree, model, package; ``compile_model`` of that tree, forced to int8.
_TREE_BUILD = """
import json, sys
tree, model, out = sys.argv[1:4]
sys.path.insert(0, tree)
import edgekit.compiler.driver as driver
class Int8:
    source, timing = "modeled", "injected by the benchmark"
    def layer_times(self, probe):
        return (1.0, 2.0)
    def model_times(self, builds, prepared):
        return {"int8": 1.0, "mixed": 2.0, "fp32": 2.0}
manifest = driver.compile_model(model, "host", out, int8_cost=Int8()).manifest
print(json.dumps(manifest.section("integer_lowering") or {}))
"""


def _compile_in_tree(tree: str, model: str, out: Path) -> dict[str, Any]:
    """``compile_model`` of the source tree ``tree`` (a child process), forced to int8."""
    import json

    done = subprocess.run([sys.executable, "-c", _TREE_BUILD, str(Path(tree).resolve()), model, str(out)],
                          check=True, capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def _output_step(qdq: str) -> float:
    """The scale of the model's last DequantizeLinear: one step of its quantized output."""
    model = onnx.load(qdq)
    last = [n for n in model.graph.node if n.op_type == "DequantizeLinear"][-1]
    scale = next(t for t in model.graph.initializer if t.name == last.input[1])
    return float(np.max(onnx.numpy_helper.to_array(scale)))


def _quantize(fp32: str, out: str, inp: str, calib: list[np.ndarray], weights: str, symmetric: bool = False) -> str:
    asym = weights == "quint8-asymmetric"
    quantize_static(fp32, out, FeedsReader([{inp: x} for x in calib]), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8 if asym else QuantType.QInt8,
                    per_channel=not asym, extra_options={"WeightSymmetric": symmetric} if asym else {})  # fmt: skip
    return out


def _builds(args: argparse.Namespace, d: Path, inp: str, fp32: str, calib: list[np.ndarray]) -> dict[str, tuple[str, Path, dict]]:
    """``label -> (the QDQ model it compiles, its package, its integer_lowering section)``."""
    u8 = _quantize(fp32, str(d / "u8.onnx"), inp, calib, args.weights)
    if args.weights == "qint8":
        return {"int8 before": (u8, d / "before.ekpkg", _compile(u8, d / "before.ekpkg", rewrite=False)),
                "int8 after": (u8, d / "after.ekpkg", _compile(u8, d / "after.ekpkg"))}  # fmt: skip
    sym = _quantize(fp32, str(d / "sym.onnx"), inp, calib, args.weights, symmetric=True)
    if args.before_tree:
        before = _compile_in_tree(args.before_tree, u8, d / "before.ekpkg")
    else:
        before = _compile(u8, d / "before.ekpkg", asymmetric=False)
    return {"int8 before": (u8, d / "before.ekpkg", before),
            "int8 after": (u8, d / "after.ekpkg", _compile(u8, d / "after.ekpkg")),
            "int8 symmetric": (sym, d / "sym.ekpkg", _compile(sym, d / "sym.ekpkg"))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("digits", "ppocr-cls"), default="digits")
    ap.add_argument("--weights", choices=("qint8", "quint8-asymmetric"), default="qint8")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--before-tree", metavar="DIR",
                    help="with --weights quint8-asymmetric: 'int8 before' compiled by this edgekit source tree")
    args = ap.parse_args(argv)
    if args.before_tree and args.weights != "quint8-asymmetric":
        ap.error("--before-tree compares asymmetric-weight builds: pass --weights quint8-asymmetric")

    d = Path(tempfile.mkdtemp(prefix="u8bench_"))
    inp, fp32, calib, evals = _case(args.model, d)
    builds = _builds(args, d, inp, fp32, calib)
    driver.compile_model(fp32, "host", d / "fp32.ekpkg")
    pkgs = {k: pkg for k, (_, pkg, _) in builds.items()} | {"fp32": d / "fp32.ekpkg"}
    runners = {k: open_runner(p := open_package(v), resolve_board(p, "host")) for k, v in pkgs.items()}

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for k, (qdq, _, lowering) in builds.items():
        ref = ort.InferenceSession(qdq, opts, providers=["CPUExecutionProvider"])
        out_name = ref.get_outputs()[0].name
        diff = max(float(np.max(np.abs(runners[k].run({inp: x})[out_name] - ref.run(None, {inp: x})[0]))) for x in evals)
        print(f"{k}: kept float {len(lowering.get('kept_float', []))}, lowered {len(lowering.get('rewritten', []))}, "
              f"max |diff| vs onnxruntime QDQ {diff:.3g} = {diff / _output_step(qdq):.2f} output steps "
              f"({len(evals)} inputs)")  # fmt: skip

    if args.before_tree:
        same = all(np.array_equal(runners["int8 before"].run({inp: x})[out_name], runners["int8 after"].run({inp: x})[out_name])
                   for x in evals)  # fmt: skip
        print(f"int8 after and int8 before ({args.before_tree}): outputs bit-identical on {len(evals)} inputs: {same}")

    feeds = {inp: evals[0]}
    keys = list(runners)
    every: dict[str, list[float]] = {k: [] for k in keys}
    for r in runners.values():
        r.time_runs(feeds, 10, 0)
    for i in range(args.rounds):
        for k in keys[i % len(keys) :] + keys[: i % len(keys)]:
            every[k].extend(runners[k].time_runs(feeds, args.runs, 0).latency_ms)
    low = {k: float(np.percentile(v, 10)) for k, v in every.items()}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    print(f"{args.model} ({args.weights} weights), batch 1, host runner defaults, {cpu}; "
          f"10th percentile of {args.rounds}x{args.runs} interleaved runs")
    for k in keys:
        print(f"  {k:14s} {low[k] * 1e3:8.1f} us   x{low[k] / low['fp32']:.2f} of fp32")
    for r in runners.values():
        r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

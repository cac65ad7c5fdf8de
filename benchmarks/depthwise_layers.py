"""int8 vs fp32 depthwise convolutions, layer by layer, on one core.

Each depthwise layer of PP-OCR cls and det (their real weights and bias)
becomes a one-layer model -- the conv and a ReLU -- quantized with
``edgekit.compress.quantize`` (default ``QuantConfig()``, seeded uniform
[-1, 1] calibration inputs) and compiled for ``--mcpu`` three ways: int8 with
the target's depthwise kernel, int8 with the tap-pair kernel it replaces on
AVX512-VNNI + VBMI targets (``edgekit.compiler.backends.llvm.depthwise_vnni``),
and fp32. The figure per build is the CPU time (``time.thread_time``) of its
convolution kernel, the median over ``--runs`` inferences (the VM's
instrumentation, as ``benchmarks/int8_target.py --profile``), the three
builds' inferences interleaved; for int8 also the kernel copying the input
(pad, channel blocks). Whole-model ratios: ``benchmarks/int8_target.py``.

Usage::

    .venv/bin/python benchmarks/depthwise_layers.py [--mcpu znver5] [--models ppocr-cls,ppocr-det] [--runs 100]
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu import PROFILE_EXEC_MODE, check_instrumented  # noqa: E402
from quantization import CASES, cpu_description, runnable_target  # noqa: E402

import edgekit.compiler.backends.llvm.int8 as cpu_int8  # noqa: E402
from edgekit.compiler.backends.llvm.relax_build import build_cpu  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402


def depthwise_layers(model: onnx.ModelProto) -> list[dict]:
    """``{name, x (NCHW shape), w, b, strides, pads}`` of every depthwise Conv with initializer weights."""
    from onnx import shape_inference

    m = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*m.graph.value_info, *m.graph.input]}
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = []
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        w = inits.get(n.input[1])
        if w is None or attrs.get("group", 1) != w.shape[0] or w.shape[1] != 1 or w.shape[0] == 1:
            continue
        b = inits[n.input[2]] if len(n.input) > 2 and n.input[2] in inits else np.zeros(w.shape[0], np.float32)
        out.append({"name": n.name, "x": shapes[n.input[0]], "w": w, "b": b, "strides": attrs.get("strides", [1, 1]),
                    "pads": attrs.get("pads", [0, 0, 0, 0])})  # fmt: skip
    return out


def one_layer(layer: dict) -> onnx.ModelProto:
    """The depthwise conv of ``layer`` and a ReLU, as a model."""
    c, _, kh, kw = layer["w"].shape
    n, _, h, w = layer["x"]
    (sh, sw), (pt, pl, pb, pr) = layer["strides"], layer["pads"]
    out = [n, c, (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1]
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=c, strides=layer["strides"], pads=layer["pads"])
    graph = helper.make_graph([node, helper.make_node("Relu", ["y"], ["z"])], "dw",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, layer["x"])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, out)],
                              [numpy_helper.from_array(layer["w"], "w"), numpy_helper.from_array(layer["b"], "b")])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _vm(path: Path, target, x: np.ndarray, pairs: bool = False):
    import tvm
    from tvm import relax

    saved = cpu_int8.depthwise_vnni_lanes
    if pairs:
        cpu_int8.depthwise_vnni_lanes = lambda t: 0
    try:
        mod, weights = import_onnx(load_model(str(path)))[:2]
        built = build_cpu(mod, target, weights, num_threads=1, exec_mode=PROFILE_EXEC_MODE)  # instrumented
    finally:
        cpu_int8.depthwise_vnni_lanes = saved
    vm = relax.VirtualMachine(built.executable, tvm.cpu())
    vm.set_input("main", tvm.runtime.tensor(x), *built.params)
    return vm


def kernel_times(vms: dict, runs: int) -> dict[str, dict[str, float]]:
    """Per build, the median CPU time (us) of each kernel over ``runs`` inferences, builds interleaved."""
    per_run: dict[str, list[dict[str, float]]] = {tag: [] for tag in vms}
    started: list[float] = []

    def instrument(tag):
        def hook(_func, symbol, before, _ret, *_args):
            if before:
                started.append(time.thread_time())
            else:
                per_run[tag][-1][str(symbol)] += 1e6 * (time.thread_time() - started.pop())
            return 0

        return hook

    for tag, vm in vms.items():
        for _ in range(3):
            vm.invoke_stateful("main")
        vm.set_instrument(instrument(tag))
    for _ in range(runs):
        for tag, vm in vms.items():
            per_run[tag].append(collections.defaultdict(float))
            vm.invoke_stateful("main")
    for vm in vms.values():
        vm.set_instrument(None)
    for rs in per_run.values():
        check_instrumented(sum(len(r) for r in rs))
    return {tag: {k: float(np.median([r.get(k, 0.0) for r in rs])) for k in rs[0]} for tag, rs in per_run.items()}


def _sum(times: dict[str, float], *fragments: str) -> float:
    return sum(t for k, t in times.items() if any(f in k for f in fragments))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mcpu", default=None, help="LLVM CPU to compile for (default: this CPU; it must run the code)")
    parser.add_argument("--models", default="ppocr-cls,ppocr-det")
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    target = runnable_target(args.mcpu)
    args.mcpu = args.mcpu or str(target.attrs["mcpu"])
    rows, totals = [], collections.defaultdict(float)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="edgekit-dw-layers-") as tmp:
        for name in args.models.split(","):
            seen = set()
            for layer in depthwise_layers(CASES[name]().fp32):
                key = (tuple(layer["x"]), layer["w"].shape, tuple(layer["strides"]))
                if key in seen:  # the same shape again: same kernel
                    continue
                seen.add(key)
                fp32 = Path(tmp) / "fp32.onnx"
                onnx.save(one_layer(layer), str(fp32))
                cal = {"x": rng.uniform(-1, 1, (8, *layer["x"][1:])).astype(np.float32)}
                int8 = quantize(str(fp32), QuantConfig(), calibration=cal).save(Path(tmp) / "int8.onnx")
                x = cal["x"][:1]
                vms = {"int8": _vm(int8, target, x), "pairs": _vm(int8, target, x, pairs=True), "fp32": _vm(fp32, target, x)}
                t = kernel_times(vms, args.runs)
                conv = {tag: _sum(t[tag], "conv2d") for tag in vms}
                copy = _sum(t["int8"], "pad_block", "pad_rows")
                c, _, kh, kw = layer["w"].shape
                n, _, h, w = layer["x"]
                for tag in vms:
                    totals[(name, tag)] += conv[tag]
                rows.append(f"| {name} | {c} | {h}x{w} | {kh}x{kw} | {'x'.join(map(str, layer['strides']))} "
                            f"| {conv['pairs']:.1f} | {conv['int8']:.1f} | {copy:.1f} | {conv['fp32']:.1f} "
                            f"| {conv['int8'] / conv['fp32']:.2f} |")  # fmt: skip
                print(rows[-1], file=sys.stderr, flush=True)
    print(f"Command: `.venv/bin/python benchmarks/depthwise_layers.py --mcpu {args.mcpu} --models {args.models} "
          f"--runs {args.runs}`; {args.mcpu} code on {cpu_description()}, one thread; kernel CPU time (us), median of "
          f"{args.runs} interleaved inferences; date: {date.today()}; load average {os.getloadavg()[0]:.1f}.\n")  # fmt: skip
    print("| model | channels | input | kernel | stride | int8 tap pairs | int8 | int8 input copy | fp32 | int8/fp32 |\n"
          "|---|---:|---|---|---|---:|---:|---:|---:|---:|")  # fmt: skip
    print("\n".join(rows))
    for name in args.models.split(","):
        print(f"\n{name}, one of each shape: tap pairs {totals[(name, 'pairs')]:.1f} us, int8 {totals[(name, 'int8')]:.1f} us, "
              f"fp32 {totals[(name, 'fp32')]:.1f} us")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

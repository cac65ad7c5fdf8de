"""Shared steps of the int8 build tests: quantize a test's own fp32 model, compare with onnxruntime's QDQ graph."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.backends.llvm.relax_build import build_cpu, prepare_cpu_module, schedule_passes
from edgekit.compiler.importer import import_onnx
from edgekit.compress import QuantConfig, quantize
from edgekit.frontend.loader import load_model

if TYPE_CHECKING:  # pragma: no cover
    import tvm


def quantized(directory: Path, fp32: onnx.ModelProto, calibration: dict[str, np.ndarray]) -> str:
    """``fp32`` quantized by edgekit (default :class:`QuantConfig`) with ``calibration``; the int8 model's path."""
    src = directory / "fp32.onnx"
    onnx.save(fp32, str(src))
    out = directory / "int8.onnx"
    quantize(str(src), QuantConfig(), calibration=calibration).save(out)
    return str(out)


def small_cnn(shape: tuple[int, ...], *, seed: int, mean: float, stride_on: str) -> onnx.ModelProto:
    """The asymmetric-weight tests' fp32 CNN: conv 3x3 (padded) to 8 channels, depthwise 3x3,
    a 1x1 conv to 16 channels (a whole vector), Gemm to 5; ``stride_on`` ("depthwise" or
    "conv3") is the layer with stride 2. Weights ``N(mean, 0.3)`` from ``seed``."""
    rng = np.random.default_rng(seed)

    def init(name: str, *dims: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(dims) * 0.3 + mean).astype(np.float32), name)

    stride = {name: ({"strides": [2, 2]} if name == stride_on else {}) for name in ("depthwise", "conv3")}
    features = 16 * ((shape[2] + 1) // 2) * ((shape[3] + 1) // 2)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["c2"], "depthwise", pads=[1, 1, 1, 1], group=8, **stride["depthwise"]),
        helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"], "conv3", **stride["conv3"]),
        helper.make_node("Flatten", ["c3"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], "gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        initializer=[init("w1", 8, 3, 3, 3), init("b1", 8), init("wd", 8, 1, 3, 3), init("bd", 8),
                     init("w3", 16, 8, 1, 1), init("b3", 16), init("wg", 5, features), init("bg", 5)],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def hard_swish_block(*, seed: int, gated: bool, channels: int = 48) -> onnx.ModelProto:
    """The lookup tests' fp32 block: conv 3x3 (8 -> ``channels``) -> HardSwish -> depthwise 3x3 ->
    HardSwish (``gated``: ``x * HardSigmoid(x)``) -> conv 1x1 (-> 16), 12x16 pixels, so one lookup
    before a padded depthwise input and one before a 1x1 conv's input. Weights from ``seed``."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((channels, 8, 3, 3)) / 8).astype(np.float32)
    w2 = (rng.standard_normal((channels, 1, 3, 3)) / 3).astype(np.float32)
    w3 = (rng.standard_normal((16, channels, 1, 1)) / np.sqrt(channels)).astype(np.float32)
    second = ([helper.make_node("HardSigmoid", ["c2"], ["g2"], alpha=0.2, beta=0.5),
               helper.make_node("Mul", ["c2", "g2"], ["h2"])]
              if gated else [helper.make_node("HardSwish", ["c2"], ["h2"])])  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=channels),
        *second,
        helper.make_node("Conv", ["h2", "w3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "hswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 16])],
        [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def normal_feeds(shape: tuple[int, ...], n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` seeded N(0, 1) feeds of the model input ``x``."""
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def kernels_asm(model_path: str, mcpu: str) -> dict[str, str]:
    """Assembly of every kernel of the model compiled for ``mcpu``, by kernel name (its parallel body included)."""
    import tvm

    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    prepared, _ = prepare_cpu_module(import_onnx(load_model(model_path))[0], target)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(target))(prepared)
    funcs = {gv.name_hint: f.with_attr("global_symbol", gv.name_hint)
             for gv, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}  # fmt: skip
    asm = tvm.tirx.build(tvm.IRModule(funcs), target).inspect_source("asm")
    parts = re.split(r"^([A-Za-z_][\w.]*):\n", asm, flags=re.M)
    out = dict.fromkeys(funcs, "")
    for label, body in zip(parts[1::2], parts[2::2]):
        name = label.removeprefix("__tvm_ffi_").removesuffix("_compute_")
        if name in out:
            out[name] += body
    return out


def parallel_closures(asm: str) -> list[str]:
    """The bodies of the parallel-loop closures (``__tvm_parallel_lambda``) in ``asm``."""
    return [body for _label, body in
            re.findall(r"^(\.?L?__tvm_parallel_lambda[\w.]*):\n(.*?)^\s+\.size\s+\1,", asm, re.M | re.S)]  # fmt: skip


def mnemonics(asm: str) -> set[str]:
    """The instruction mnemonics in ``asm`` (a ``{vex}`` prefix dropped)."""
    return {m.group(1) for m in re.finditer(r"^\s+(?:\{vex\}\s+)?([a-z][a-z0-9]*)", asm, re.M)}


def assert_within_one_lsb_of_onnxruntime(model_path: str, feeds: dict[str, np.ndarray], got: np.ndarray) -> None:
    """At least 99.9 % of ``got`` within one step of the last DequantizeLinear of onnxruntime's QDQ graph as written."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    model = onnx.load(model_path)
    last = [n for n in model.graph.node if n.op_type == "DequantizeLinear"][-1]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    lsb = float(np.max(inits[last.input[1]]))
    assert np.mean(np.abs(got - want) <= lsb * 1.001) >= 0.999, float(np.max(np.abs(got - want)) / lsb)


def kernel_calls(model_path: str, target: "tvm.target.Target") -> list[tuple[str, list[tuple], tuple]]:
    """``(kernel, input shapes and dtypes, output shape and dtype)`` of every kernel call ``main`` makes
    after :func:`prepare_cpu_module` (fused, before scheduling)."""
    import tvm

    mod = prepare_cpu_module(import_onnx(load_model(model_path))[0], target)[0]
    out = []
    for value in tvm.relax.analysis.get_var2val(mod["main"]).values():
        if isinstance(value, tvm.relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.call_tir")):
            ins = [(*(int(v) for v in a.ty.shape.values), str(a.ty.dtype)) for a in value.args[1].fields]
            t = value.ty
            out.append((value.args[0].name_hint, ins, (*(int(v) for v in t.shape.values), str(t.dtype))))
    return out


def run_built(model_path: str, target: "tvm.target.Target", x: np.ndarray | list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """The output of ``model_path`` built by :func:`build_cpu` for ``target`` and run here on ``x``;
    for a list of inputs, the list of outputs of one build (a build costs seconds, a run microseconds)."""
    import tvm

    mod, weights = import_onnx(load_model(model_path))[:2]
    built = build_cpu(mod, target, weights)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())

    def run(one: np.ndarray) -> np.ndarray:
        out = vm["main"](tvm.runtime.tensor(one), *built.params)
        return out.numpy() if hasattr(out, "numpy") else out[0].numpy()

    return [run(one) for one in x] if isinstance(x, list) else run(x)

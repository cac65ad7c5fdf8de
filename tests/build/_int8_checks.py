"""Shared steps of the int8 build tests: quantize a test's own fp32 model, compare with onnxruntime's QDQ graph."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from edgekit.compiler.backends.llvm.relax_build import build_cpu, prepare_cpu_module
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


def run_built(model_path: str, target: "tvm.target.Target", x: np.ndarray) -> np.ndarray:
    """The output of ``model_path`` built by :func:`build_cpu` for ``target`` and run here on ``x``."""
    import tvm

    mod, weights = import_onnx(load_model(model_path))[:2]
    built = build_cpu(mod, target, weights)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x), *built.params)
    return out.numpy() if hasattr(out, "numpy") else out[0].numpy()

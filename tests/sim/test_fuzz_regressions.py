"""Bugs the differential fuzzer (fuzz/differential.py) found, each kept as a small test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.backends.aot_c.pipeline import compile_aot
from edgekit.compiler.backends.aot_c.host import run_on_host
from edgekit.frontend.loader import load_model


def _model(nodes: list[onnx.NodeProto], x_shape: list[int], y_shape: list[int], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "regression", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _w(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _gemm_k1() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], [1, 1], [1, 5],
                  [_w(rng, "w", 5, 1), _w(rng, "b", 5)])  # fmt: skip


def _depthwise_1x1_bias() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    return _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], group=3, kernel_shape=[1, 1])], [1, 3, 4, 4],
                  [1, 3, 4, 4], [_w(rng, "w", 3, 1, 1, 1), _w(rng, "b", 3)])  # fmt: skip


# fuzz seed 4 (float32): a Gemm whose reduction length is 1 (it follows a
# Gemm with one output) had its bias added twice by the MCU kernel schedule.
@pytest.mark.parametrize("make", [_gemm_k1, _depthwise_1x1_bias], ids=["gemm-k1", "depthwise-1x1"])
def test_reductions_of_length_one_add_the_bias_once(make, tmp_path: Path) -> None:
    model = make()
    prepared = load_model(model)
    art = compile_aot(prepared, tvm.target.Target({"kind": "llvm"}))
    x = np.random.default_rng(2).standard_normal([d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])
    feeds = {"x": x.astype(np.float32)}
    (got,) = run_on_host(art.members(), prepared.inputs, prepared.outputs, feeds, workdir=tmp_path)
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# fuzz seed 5 (int8): an Add of an activation and a quantized constant was
# mapped to the accelerator's ALU, whose code generator then had no address
# for the constant (KeyError); such adds now stay on the host.
def test_npu_keeps_adds_of_a_constant_on_the_host(script_module, tmp_path: Path) -> None:
    with script_module(Path(__file__).resolve().parents[2] / "fuzz" / "differential.py", "differential") as fuzz:
        case = fuzz.run_case(5, "pynq-z2", tmp_path)
    assert "Add" in case["ops"] and case["int8"]
    assert case["outcome"] == "match", case

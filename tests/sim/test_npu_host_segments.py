"""The host sub-graphs the NPU backend cuts off load in onnxruntime and compute the model.

Found by ``fuzz/differential.py`` (seed 2 on pynq-z2): a host node reading
one tensor twice (``Concat(x, x)``) listed it twice among its segment's
inputs, and onnxruntime refused the segment ("Duplicate definition-site").
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.backends.npu import compile_npu
from edgekit.core.profiles import NpuConfig
from edgekit.runtime.npu.loader import open_simulated

NPU = NpuConfig(8, 8, 100_000_000, 32 * 1024, 32 * 1024, 32 * 1024, 8.0)
C = 8


def _float_concat_conv() -> onnx.ModelProto:
    """The fuzzer's graph: ``Conv(Concat(x, x))`` in float, so everything stays on the host."""
    w = np.random.default_rng(0).normal(0, 0.5, (6, 2, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Concat", ["x", "x"], ["cat"], name="concat", axis=1),
             helper.make_node("Conv", ["cat", "w"], ["y"], name="conv", strides=[2, 2])]  # fmt: skip
    graph = helper.make_graph(nodes, "concat_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 2, 2])], [numpy_helper.from_array(w, "w")])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _square_then_quantized_conv() -> onnx.ModelProto:
    """``Mul(x, x)`` on the host, then a QDQ conv the accelerator runs."""
    rng = np.random.default_rng(0)
    consts = {"w": rng.integers(-60, 60, (C, C, 1, 1)).astype(np.int8), "ws": np.full(C, 0.01, np.float32),
              "wz": np.zeros(C, np.int8), "xs": np.float32(0.02), "ys": np.float32(0.01), "z": np.int8(0)}  # fmt: skip
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"], name="square"),
        helper.make_node("QuantizeLinear", ["sq", "xs", "z"], ["sqq"], name="qsq"),
        helper.make_node("DequantizeLinear", ["sqq", "xs", "z"], ["sqd"], name="dqsq"),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dqw", axis=0),
        helper.make_node("Conv", ["sqd", "wd"], ["y"], name="conv"),
        helper.make_node("QuantizeLinear", ["y", "ys", "z"], ["yq"], name="qy"),
        helper.make_node("DequantizeLinear", ["yq", "ys", "z"], ["out"], name="dqy"),
    ]
    graph = helper.make_graph(nodes, "square_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, C, 4, 4])],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# The accelerator's fixed-point requantization may round a value one output step (ys = 0.01) off
# onnxruntime's float arithmetic; the float graph runs in onnxruntime on both sides.
@pytest.mark.parametrize("make, npu_layers, atol", [(_float_concat_conv, 0, 1e-6), (_square_then_quantized_conv, 1, 0.01 * 1.01)],
                         ids=["all-host-concat", "host-square-then-npu-conv"])  # fmt: skip
def test_a_node_reading_one_tensor_twice_gets_it_once_as_a_segment_input(make, npu_layers, atol):
    model = make()
    built = compile_npu(model, NPU)
    assert len(built.partition.layers) == npu_layers
    executor, _, plan = open_simulated(built.members.__getitem__, NPU)  # onnxruntime loads every segment
    assert all(len(set(s["inputs"])) == len(s["inputs"]) for s in plan["host_segments"])
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
    got = executor.run({"x": x})[0]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph as written
    session = ort.InferenceSession(model.SerializeToString(), opts)
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=0, atol=atol)

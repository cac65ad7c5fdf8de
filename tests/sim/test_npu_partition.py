"""The quantized activation folded into an NPU layer as a second requantization stage.

``Conv -> Q -> DQ -> Relu|Clip -> Q`` becomes one layer whose second stage
rescales the int8 output in fixed point. The host integer compile computes
the same ``Q(act(DQ(x)))`` as a 256-entry table with onnxruntime's float32
arithmetic (round half to even), so the stage is folded only where it equals
that table for every int8 input; a Clip with a negative minimum keeps its
negative half.
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


def _conv_clip(out_scale: float, lo: float, hi: float) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    consts = {"w": rng.integers(-60, 60, (C, C, 1, 1)).astype(np.int8), "ws": np.full(C, 0.01, np.float32), "wz": np.zeros(C, np.int8),
              "xs": np.float32(0.02), "ys": np.float32(0.01), "cs": np.float32(out_scale), "z": np.int8(0),
              "lo": np.float32(lo), "hi": np.float32(hi)}  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "z"], ["xq"], name="qx"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "z"], ["xd"], name="dqx"),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dqw", axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv"),
        helper.make_node("QuantizeLinear", ["y", "ys", "z"], ["yq"], name="qy"),
        helper.make_node("DequantizeLinear", ["yq", "ys", "z"], ["yd"], name="dqy"),
        helper.make_node("Clip", ["yd", "lo", "hi"], ["c"], name="clip"),
        helper.make_node("QuantizeLinear", ["c", "cs", "z"], ["cq"], name="qc"),
        helper.make_node("DequantizeLinear", ["cq", "cs", "z"], ["out"], name="dqc"),
    ]
    graph = helper.make_graph(nodes, "conv_clip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, C, 4, 4])],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("out_scale, lo, hi, folded", [
    (0.0037, -0.3, 0.3, True),   # no rescaled value on a half-way point: one layer
    (0.004, -0.3, 0.3, False),   # scale ratio 2.5: half-way points, rounded the other way in fixed point
    (0.0037, 0.0, 0.3, True),    # a ReLU6-like clip: ReLU before the rescale
])  # fmt: skip
def test_second_stage_is_folded_only_where_it_equals_the_hosts_table(out_scale, lo, hi, folded):
    model = _conv_clip(out_scale, lo, hi)
    built = compile_npu(model, NPU)
    (layer,) = built.partition.layers
    assert ("clip" in layer.nodes) is folded
    if folded:
        assert layer.stages[1].relu is (lo >= 0)
    x = np.random.default_rng(1).normal(0, 1, (1, C, 4, 4)).astype(np.float32)
    executor, _, _ = open_simulated(built.members.__getitem__, NPU)
    got = executor.run({"x": x})[0]["out"]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(model.SerializeToString(), opts).run(None, {"x": x})[0]
    assert want.min() < 0 if lo < 0 else want.min() == 0
    np.testing.assert_array_equal(got, want)


def test_compile_reports_the_backends_passes_in_order():
    """The NPU backend's PASSES are the stages compile_npu reports, in order."""
    from edgekit.compiler.backends.npu import PASSES

    stages: list[str] = []
    built = compile_npu(_conv_clip(0.0037, -0.3, 0.3), NPU, lambda stage, msg: stages.append(stage))
    assert list(dict.fromkeys(stages)) == [p.name for p in PASSES]
    assert built.partition.layers and built.members["npu/program.bin"]

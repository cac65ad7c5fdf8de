"""Long float reductions are staged axis by axis (issue #20: real models within 1e-4 of onnxruntime).

Pure ONNX: the rewrite is checked on small models against onnxruntime, without TVM.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgekit.frontend.legalize import legalize
from edgekit.frontend.loader import infer_shapes
from edgekit.frontend.staged_reductions import MIN_ELEMENTS

SUPPORTED = {"ReduceMean", "ReduceSum", "DequantizeLinear", "Relu", "Shape", "Slice"}


def _model(nodes, x_shape, y_shape, inits=(), opset=13, x_type=TensorProto.FLOAT):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", x_type, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], list(inits))
    return infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _reductions(model):
    return [n for n in model.graph.node if n.op_type.startswith("Reduce")]


def test_a_mean_over_a_feature_map_is_a_mean_of_row_means():
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)
    model = _model([node], [1, 4, 32, 48], [1, 4])
    fixed, notes = legalize(model, 13, SUPPORTED)
    first, second = _reductions(fixed)
    assert [a.ints for a in first.attribute if a.name == "axes"] == [[3]]
    assert second.input[0] == first.output[0] and second.output[0] == "y"
    assert notes == ["front end: 1 ReduceMean staged"]
    x = np.random.default_rng(0).uniform(1, 2, (1, 4, 32, 48)).astype(np.float32)
    got, want = _run(fixed, x), _run(model, x)
    assert got.shape == want.shape == (1, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_axes_given_as_an_input_are_staged_until_the_rest_is_short():
    axes = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)
    model = _model([node], [2, 32, 16, 8], [2, 1, 1, 1], [axes], opset=18)
    fixed, _ = legalize(model, 18, SUPPORTED)
    inits = {i.name: numpy_helper.to_array(i).tolist() for i in fixed.graph.initializer}
    stages = [inits[n.input[1]] for n in _reductions(fixed)]
    # 8, then 16, then the 32 left (axes of size 1 by then are reduced again at no cost).
    assert stages == [[3], [2], [1, 2, 3]]
    x = np.random.default_rng(1).standard_normal((2, 32, 16, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(fixed, x), _run(model, x), rtol=1e-5, atol=1e-5)


def test_short_single_axis_dequantized_and_run_time_reductions_stay_whole():
    side = int(np.sqrt(MIN_ELEMENTS))
    short = _model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3])], [1, 2, side, side], [1, 2, 1, 1])
    one_axis = _model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[2])], [1, 2, 4096], [1, 2, 1])
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    dequantized = _model([helper.make_node("DequantizeLinear", ["x", "s"], ["d"]),
                          helper.make_node("ReduceMean", ["d"], ["y"], axes=[2, 3])],
                         [1, 2, 64, 64], [1, 2, 1, 1], [scale], x_type=TensorProto.INT8)
    start = numpy_helper.from_array(np.array([2], np.int64), "st")
    end = numpy_helper.from_array(np.array([4], np.int64), "en")
    run_time = _model([helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("Slice", ["sh", "st", "en"], ["ax"]),
                       helper.make_node("ReduceSum", ["x", "ax"], ["y"])], [1, 2, 64, 64], None, [start, end])
    for model in (short, one_axis, dequantized, run_time):
        before = [n.op_type for n in model.graph.node]
        fixed, notes = legalize(model, 13, SUPPORTED)
        assert [n.op_type for n in fixed.graph.node] == before and notes == []

"""Loop and Scan with a compile-time number of iterations are unrolled (issue #20 item 4).

Pure ONNX: the unrolled graph is run with onnxruntime against the original.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.core.errors import UnsupportedOpsError
from edgekit.frontend.legalize import legalize
from edgekit.frontend.loader import infer_shapes
from edgekit.frontend.unroll import MAX_ITERATIONS

SUPPORTED = {"Add", "Mul", "Identity", "Gather", "Unsqueeze", "Concat", "Less"}
F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
vi = helper.make_tensor_value_info


def _run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _scan_model(directions=(0, 1), out_dirs=(1,), out_axes=(1,)):
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "a"], ["s_out"]), helper.make_node("Mul", ["s_out", "b"], ["o"])],
        "body", [vi("s_in", F, [2]), vi("a", F, [2]), vi("b", F, [2])], [vi("s_out", F, [2]), vi("o", F, [2])],
    )
    node = helper.make_node("Scan", ["s0", "xa", "xb"], ["s", "ys"], body=body, num_scan_inputs=2,
                            scan_input_axes=[0, 1], scan_input_directions=list(directions),
                            scan_output_directions=list(out_dirs), scan_output_axes=list(out_axes))
    graph = helper.make_graph([node], "g", [vi("s0", F, [2]), vi("xa", F, [3, 2]), vi("xb", F, [2, 3])],
                              [vi("s", F, [2]), vi("ys", F, [2, 3])])
    return infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_scan_with_reversed_inputs_and_outputs_unrolls_to_the_same_result():
    model = _scan_model()
    fixed, notes = legalize(model, 17, SUPPORTED)
    assert "Scan" not in {n.op_type for n in fixed.graph.node} and notes == ["front end: 1 Scan unrolled"]
    rng = np.random.default_rng(0)
    feeds = {"s0": rng.standard_normal(2).astype(np.float32), "xa": rng.standard_normal((3, 2)).astype(np.float32),
             "xb": rng.standard_normal((2, 3)).astype(np.float32)}
    for got, want in zip(_run(fixed, feeds), _run(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def _loop_model(trips, cond_body=False, trip_input=False):
    nodes = [helper.make_node("Cast", ["i"], ["fi"], to=F), helper.make_node("Add", ["v_in", "fi"], ["v_out"]),
             helper.make_node("Mul", ["v_out", "v_out"], ["sq"])]
    if cond_body:
        nodes.append(helper.make_node("Less", ["v_out", "ten"], ["c_out"]))
        inits = [numpy_helper.from_array(np.array(10.0, np.float32), "ten")]
    else:
        nodes.append(helper.make_node("Identity", ["c_in"], ["c_out"]))
        inits = []
    body = helper.make_graph(nodes, "body", [vi("i", I64, []), vi("c_in", B, []), vi("v_in", F, [1])],
                             [vi("c_out", B, []), vi("v_out", F, [1]), vi("sq", F, [1])], inits)
    node = helper.make_node("Loop", ["M", "", "v0"], ["v", "sqs"], body=body)
    outer = [] if trip_input else [numpy_helper.from_array(np.array(trips, np.int64), "M")]
    inputs = [vi("v0", F, [1])] + ([vi("M", I64, [])] if trip_input else [])
    graph = helper.make_graph([node], "g", inputs, [vi("v", F, [1]), vi("sqs", F, [trips, 1])], outer)
    return infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_loop_with_a_constant_trip_count_unrolls_to_the_same_result():
    model = _loop_model(4)
    fixed, notes = legalize(model, 17, SUPPORTED | {"Cast"})
    assert "Loop" not in {n.op_type for n in fixed.graph.node} and notes == ["front end: 1 Loop unrolled"]
    feeds = {"v0": np.array([0.5], np.float32)}
    for got, want in zip(_run(fixed, feeds), _run(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("model, why", [
    (lambda: _loop_model(3, trip_input=True), "a trip count computed at run time"),
    (lambda: _loop_model(3, cond_body=True), "a loop body that computes its own condition"),
    (lambda: _loop_model(MAX_ITERATIONS + 1), f"more than {MAX_ITERATIONS} iterations"),
])
def test_loops_that_cannot_be_unrolled_are_refused_naming_why(model, why):
    with pytest.raises(UnsupportedOpsError, match=f"Loop node 'v': .*{why}"):
        legalize(model(), 17, SUPPORTED | {"Cast"})

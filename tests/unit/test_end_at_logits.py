"""end_at_logits: a classifier's graph ends at its logits, checked with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgekit.frontend.logits import end_at_logits


def _classifier(after: list[onnx.NodeProto]) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    shape = numpy_helper.from_array(np.array([1, 1, 3], dtype=np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["p"]),
             *after]  # fmt: skip
    out = after[-1].output[0] if after else "p"
    graph = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], [w, shape])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_final_softmax_and_trailing_reshape_give_logits() -> None:
    x = np.array([[1.0, -2.0, 0.5, 3.0]], dtype=np.float32)
    for after in ([], [helper.make_node("Reshape", ["p", "shape"], ["y"])]):
        model = _classifier(after)
        assert end_at_logits(model)
        assert [n.op_type for n in model.graph.node] == ["MatMul"] + [n.op_type for n in after]
        np.testing.assert_allclose(_run(model, x).reshape(1, 3), x @ (np.arange(12).reshape(4, 3) / 10), rtol=1e-6)


def test_softmax_feeding_other_ops_is_kept() -> None:
    model = _classifier([helper.make_node("Neg", ["p"], ["y"])])
    assert not end_at_logits(model)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Softmax", "Neg"]
    assert not end_at_logits(onnx.ModelProto())

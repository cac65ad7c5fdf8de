"""Front end: loading real-world ONNX quirks into a compilable model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.core.errors import InputError, ModelError, UnsupportedOpsError
from edgekit.frontend.loader import MIN_OPSET, load_model
from edgekit.frontend.support import check_supported, unsupported_ops


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _dynamic_model(opset: int = 11) -> onnx.ModelProto:
    """Batch-dynamic MLP with weights in Constant nodes and a shape subgraph:
    flatten via Reshape(x, Concat(Shape(x)[0:1], [-1]))."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((12, 4)).astype(np.float32)
    b = rng.standard_normal((4,)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(b)),
        helper.make_node("Constant", [], ["minus1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Gather", ["shp", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus1"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["x", "newshape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def test_dynamic_model_made_static_and_folded() -> None:
    src = _dynamic_model()
    prepared = load_model(src)
    ops = _ops(prepared.model)
    assert "Constant" not in ops
    assert "Shape" not in ops and "Concat" not in ops, ops  # shape arithmetic folded
    assert prepared.inputs[0].shape == (1, 3, 4)
    assert prepared.outputs[0].shape == (1, 4)
    assert prepared.opset >= MIN_OPSET
    assert any("symbolic batch 'N'" in n for n in prepared.notes)
    # Same numbers as the original model.
    x = np.random.default_rng(1).standard_normal((1, 3, 4)).astype(np.float32)
    want = ort.InferenceSession(src.SerializeToString()).run(None, {"x": x})[0]
    got = ort.InferenceSession(prepared.serialize()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_input_shape_override() -> None:
    prepared = load_model(_dynamic_model(), {"x": (4, 3, 4)})
    assert prepared.inputs[0].shape == (4, 3, 4)
    assert prepared.outputs[0].shape == (4, 4)


def test_input_shape_errors() -> None:
    with pytest.raises(InputError, match="unknown input.*'?nope'?.*inputs are: x"):
        load_model(_dynamic_model(), {"nope": (1, 2)})
    with pytest.raises(InputError, match="has 2 dimensions"):
        load_model(_dynamic_model(), {"x": (1, 2)})


def test_symbolic_non_batch_axis_needs_shape() -> None:
    model = _dynamic_model()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "W"
    with pytest.raises(InputError) as info:
        load_model(model)
    assert "axis 2 is symbolic ('W')" in str(info.value)
    assert "--input-shape x=1x3xW" in str(info.value)


def test_old_opset_with_initializers_as_inputs(light_models_dir: Path) -> None:
    prepared = load_model(light_models_dir / "light_squeezenet.onnx")
    assert prepared.opset == MIN_OPSET
    assert [s.name for s in prepared.inputs] == ["data_0"]  # weights are not inputs
    assert prepared.outputs[0].shape == (1, 1000, 1, 1)
    assert "ConstantOfShape" not in _ops(prepared.model)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not protobuf\xff\xff\xff")
    with pytest.raises(ModelError, match="bad.onnx"):
        load_model(bad)
    src = _dynamic_model().SerializeToString()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(src[: len(src) // 2])
    with pytest.raises(ModelError, match="trunc.onnx"):
        load_model(trunc)


def test_checker_failure_is_model_error() -> None:
    model = _dynamic_model()
    model.graph.node[-1].input[0] = "does_not_exist"
    with pytest.raises(ModelError, match="ONNX checker"):
        load_model(model)


def test_unsupported_ops_all_reported_at_once() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("FancyOp", ["a"], ["b"], domain="com.example", name="fancy1"),
            helper.make_node("OtherOp", ["b"], ["c"], domain="com.example", name="other1"),
            helper.make_node("FancyOp", ["c"], ["y"], domain="com.example", name="fancy2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    found = unsupported_ops(model)
    assert set(found) == {"com.example::FancyOp", "com.example::OtherOp"}
    assert found["com.example::FancyOp"] == ["fancy1", "fancy2"]
    with pytest.raises(UnsupportedOpsError) as info:
        check_supported(model)
    msg = str(info.value)
    assert "2 operator type(s)" in msg and "FancyOp (x2" in msg and "OtherOp (x1" in msg


def test_ir3_model_prepared_passes_full_check(light_models_dir: Path) -> None:
    prepared = load_model(light_models_dir / "light_bvlc_alexnet.onnx")
    assert prepared.model.ir_version >= 7
    onnx.checker.check_model(prepared.model, full_check=True)


def test_declared_minus_one_dim_is_dynamic_not_hostile() -> None:
    # PaddlePaddle exports write -1 for a dynamic axis (the PP-OCR models do).
    model = _dynamic_model()
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = -1
    prepared = load_model(model)
    assert prepared.inputs[0].shape == (1, 3, 4)


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_conv_auto_pad_made_explicit(mode: str) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 2, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=mode, strides=[2, 1])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 7, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 6])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    prepared = load_model(model)
    conv = next(n for n in prepared.model.graph.node if n.op_type == "Conv")
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    assert "auto_pad" not in attrs
    # H: 7 -> 4 with stride 2, kernel 2: 1 padded row; W: kernel 3, stride 1: 2 columns.
    want_pads = [0, 1, 1, 1] if mode == "SAME_UPPER" else [1, 1, 0, 1]
    assert list(attrs["pads"]) == want_pads
    x = rng.standard_normal((1, 3, 7, 6)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    after = ort.InferenceSession(prepared.model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)

"""Rules that keep TVM's ONNX importer from silent wrong answers (issue #20 item 2).

Pure ONNX: each rule is checked on a one-node model, without TVM.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.core.errors import UnsupportedOpsError
from edgekit.frontend.legalize import legalize
from edgekit.frontend.loader import infer_shapes

#: What the importer is told it converts (Attention/LayerNormalization are in
#: TVM's table, wrongly for the cases below).
SUPPORTED = {"Conv", "ConvTranspose", "LayerNormalization", "BatchNormalization", "Resize", "Attention",
             "IsInf", "Add", "Mul", "Sub", "Div", "ReduceMean", "Sqrt", "Reciprocal", "Cast", "Softmax",
             "MatMul", "Transpose", "Reshape", "Shape", "Concat", "Constant", "Greater", "Less", "And", "Xor",
             "Where", "Equal", "ReduceL2", "ReduceL1", "Pow"}


def _model(node, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph([node], "g", inputs, outputs, list(inits))
    return infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_batch_norm_training_mode_is_refused_naming_op_and_attribute():
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1)
    inits = [numpy_helper.from_array(np.ones(2, np.float32), n) for n in "sbmv"]
    model = _model(node, [_vi("x", [1, 2, 3, 3])], [_vi("y", [1, 2, 3, 3]), _vi("rm", [2]), _vi("rv", [2])], inits, 15)
    with pytest.raises(UnsupportedOpsError, match="BatchNormalization node 'y': training_mode=1") as err:
        legalize(model, 15, SUPPORTED)
    assert err.value.fields["ops"] == ["BatchNormalization"]
    assert "eval mode" in str(err.value)


def test_every_refusal_is_listed_in_one_error():
    nodes = [
        helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear", antialias=1),
        helper.make_node("RoiAlign", ["x", "r", "i"], ["z"], mode="max"),
    ]
    inits = [numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "sc"),
             numpy_helper.from_array(np.zeros((1, 4), np.float32), "r"),
             numpy_helper.from_array(np.zeros(1, np.int64), "i")]
    graph = helper.make_graph(nodes, "g", [_vi("x", [1, 1, 4, 4])], [_vi("y", None), _vi("z", None)], inits)
    model = infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    with pytest.raises(UnsupportedOpsError) as err:
        legalize(model, 18, SUPPORTED | {"RoiAlign"})
    assert "Resize node 'y': antialias=1" in str(err.value) and "RoiAlign node 'z': mode=max" in str(err.value)


def test_resize_with_a_scale_that_does_not_divide_the_size_is_refused():
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear")
    sc = numpy_helper.from_array(np.array([1, 1, 0.6, 0.6], np.float32), "sc")
    model = _model(node, [_vi("x", [1, 1, 4, 4])], [_vi("y", None)], [sc])
    with pytest.raises(UnsupportedOpsError, match="scales .* do not divide"):
        legalize(model, 18, SUPPORTED)


def test_conv_transpose_output_shape_becomes_pads_with_the_same_result():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((1, 2, 3, 3)).astype(np.float32), "w")
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[3, 2], output_shape=[10, 8])
    model = _model(node, [_vi("x", [1, 1, 3, 3])], [_vi("y", [1, 2, 10, 8])], [w], 13)
    fixed, notes = legalize(model, 13, SUPPORTED)
    (conv,) = [n for n in fixed.graph.node if n.op_type == "ConvTranspose"]
    attrs = {a.name: list(helper.get_attribute_value(a)) for a in conv.attribute}
    assert "output_shape" not in attrs and attrs["output_padding"] == [1, 1]
    assert notes and "ConvTranspose rewritten" in notes[0]
    x = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(fixed, {"x": x})[0], _run(model, {"x": x})[0], rtol=1e-6)


@pytest.mark.parametrize("axis", [1, -2])
def test_layer_norm_off_the_last_axis_is_expanded_to_its_function(axis):
    scale = numpy_helper.from_array(np.full((3, 4), 1.5, np.float32), "s")
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean", "inv"], axis=axis)
    model = _model(node, [_vi("x", [2, 3, 4])], [_vi("y", [2, 3, 4]), _vi("mean", None), _vi("inv", None)], [scale], 17)
    fixed, _ = legalize(model, 17, SUPPORTED)
    assert "LayerNormalization" not in {n.op_type for n in fixed.graph.node}
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    for got, want in zip(_run(fixed, {"x": x}), _run(model, {"x": x})):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_layer_norm_on_the_last_axis_is_left_to_tvm():
    scale = numpy_helper.from_array(np.ones(4, np.float32), "s")
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=-1)
    model = _model(node, [_vi("x", [2, 3, 4])], [_vi("y", [2, 3, 4])], [scale], 17)
    fixed, notes = legalize(model, 17, SUPPORTED)
    assert [n.op_type for n in fixed.graph.node] == ["LayerNormalization"] and notes == []


def test_ops_without_a_converter_are_expanded_when_onnx_defines_a_function():
    node = helper.make_node("Celu", ["x"], ["y"], alpha=2.0)
    model = _model(node, [_vi("x", [5])], [_vi("y", [5])], opset=13)
    fixed, _ = legalize(model, 13, SUPPORTED | {"Elu"})
    assert "Celu" not in {n.op_type for n in fixed.graph.node}
    x = np.linspace(-3, 3, 5, dtype=np.float32)
    np.testing.assert_allclose(_run(fixed, {"x": x})[0], _run(model, {"x": x})[0], rtol=1e-6)


def test_is_inf_with_one_sign_is_rewritten():
    node = helper.make_node("IsInf", ["x"], ["y"], detect_positive=0)
    model = _model(node, [_vi("x", [4])], [_vi("y", [4], TensorProto.BOOL)], opset=13)
    fixed, _ = legalize(model, 13, SUPPORTED)
    x = np.array([np.inf, -np.inf, 1.0, np.nan], np.float32)
    assert _run(fixed, {"x": x})[0].tolist() == [False, True, False, False]


def test_lp_normalization_is_rewritten_with_zero_for_zero_norm():
    node = helper.make_node("LpNormalization", ["x"], ["y"], axis=1, p=2)
    model = _model(node, [_vi("x", [2, 3])], [_vi("y", [2, 3])], opset=18)
    fixed, _ = legalize(model, 18, SUPPORTED)
    x = np.array([[3, 4, 0], [0, 0, 0]], np.float32)
    np.testing.assert_allclose(_run(fixed, {"x": x})[0], [[0.6, 0.8, 0], [0, 0, 0]], rtol=1e-6)


def test_sub_byte_types_are_refused_up_front():
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT4)
    model = _model(node, [_vi("x", [4])], [_vi("y", [4], TensorProto.INT4)], opset=21)
    with pytest.raises(UnsupportedOpsError, match="INT4"):
        legalize(model, 21, SUPPORTED)


def test_float_mod_by_an_infinite_divisor_follows_python():
    node = helper.make_node("Mod", ["x", "y"], ["z"], fmod=0)
    model = _model(node, [_vi("x", [5]), _vi("y", [5])], [_vi("z", [5])], opset=13)
    fixed, _ = legalize(model, 13, SUPPORTED | {"Mod", "IsNaN", "Or", "Not"})
    x = np.array([-3, 3, -1, 1, 5], np.float32)
    y = np.array([np.inf, np.inf, -np.inf, -np.inf, 3], np.float32)
    want = np.array([np.inf, 3, -1, -np.inf, 2], np.float32)
    # onnxruntime has no float Mod with fmod=0 before opset 28; ONNX's
    # reference evaluator runs the rewritten graph (the rewrite must keep the
    # standard's answer; TVM's own Mod gives NaN there).
    from onnx.reference import ReferenceEvaluator

    assert "Where" in {n.op_type for n in fixed.graph.node}
    np.testing.assert_array_equal(ReferenceEvaluator(fixed).run(None, {"x": x, "y": y})[0], want)


def test_reduce_max_over_all_negative_infinity_is_rewritten_to_keep_it():
    node = helper.make_node("ReduceMax", ["x"], ["y"], axes=[1], keepdims=0)
    model = _model(node, [_vi("x", [2, 3])], [_vi("y", [2])], opset=13)
    fixed, notes = legalize(model, 13, SUPPORTED | {"ReduceMax", "ReduceMin"})
    assert "ReduceMax rewritten" in notes[0]
    x = np.array([[-np.inf] * 3, [1, -np.inf, 2]], np.float32)
    np.testing.assert_array_equal(_run(fixed, {"x": x})[0], [-np.inf, 2])


def test_compress_with_a_constant_condition_becomes_a_gather():
    cond = numpy_helper.from_array(np.array([True, False, True]), "c")
    node = helper.make_node("Compress", ["x", "c"], ["y"], axis=1)
    model = _model(node, [_vi("x", [2, 3])], [_vi("y", None)], [cond], opset=13)
    fixed, _ = legalize(model, 13, SUPPORTED | {"Gather"})
    assert [n.op_type for n in fixed.graph.node] == ["Gather"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(_run(fixed, {"x": x})[0], x[:, [0, 2]])


def test_compress_with_a_computed_condition_is_refused():
    node = helper.make_node("Compress", ["x", "c"], ["y"], axis=0)
    model = _model(node, [_vi("x", [3]), _vi("c", [3], TensorProto.BOOL)], [_vi("y", None)], opset=13)
    with pytest.raises(UnsupportedOpsError, match="Compress node 'y': a condition computed at run time"):
        legalize(model, 13, SUPPORTED)


@pytest.mark.parametrize("op", ["MatMul", "Softmax"])
def test_float16_matmul_and_softmax_are_computed_in_float32(op):
    if op == "MatMul":
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        inputs = [_vi("a", [2, 64], TensorProto.FLOAT16), _vi("b", [64, 2], TensorProto.FLOAT16)]
    else:
        node = helper.make_node("Softmax", ["a"], ["y"])
        inputs = [_vi("a", [2, 2], TensorProto.FLOAT16)]
    model = _model(node, inputs, [_vi("y", [2, 2], TensorProto.FLOAT16)], opset=13)
    fixed, _ = legalize(model, 13, SUPPORTED)
    (mm,) = [n for n in fixed.graph.node if n.op_type == op]
    types = {vi.name: vi.type.tensor_type.elem_type for vi in fixed.graph.value_info}
    assert all(types.get(i) == TensorProto.FLOAT for i in mm.input)
    assert fixed.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16


def test_one_hot_with_float_depth_and_indices_gets_integer_ones():
    depth = numpy_helper.from_array(np.array([4.0], np.float32), "d")
    values = numpy_helper.from_array(np.array([0, 1], np.float32), "v")
    node = helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=-1)
    model = _model(node, [_vi("i", [3])], [_vi("y", [3, 4])], [depth, values], opset=11)
    fixed, _ = legalize(model, 11, SUPPORTED | {"OneHot"})
    (oh,) = [n for n in fixed.graph.node if n.op_type == "OneHot"]
    inits = {i.name: numpy_helper.to_array(i) for i in fixed.graph.initializer}
    assert inits[oh.input[1]].dtype == np.int64 and inits[oh.input[1]].ndim == 0
    i = np.array([0.0, 3.0, 1.0], np.float32)
    np.testing.assert_array_equal(_run(fixed, {"i": i})[0], np.eye(4, dtype=np.float32)[[0, 3, 1]])


def test_dropout_training_with_zero_ratio_is_the_identity_and_random_training_is_refused():
    ratio0 = numpy_helper.from_array(np.array(0.0, np.float32), "r")
    mode = numpy_helper.from_array(np.array(True), "t")
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"])
    model = _model(node, [_vi("x", [3])], [_vi("y", [3]), _vi("m", [3], TensorProto.BOOL)], [ratio0, mode], opset=13)
    fixed, _ = legalize(model, 13, SUPPORTED | {"Identity", "ConstantOfShape"})
    y, m = _run(fixed, {"x": np.array([1, 2, 3], np.float32)})
    assert y.tolist() == [1, 2, 3] and m.tolist() == [True, True, True]
    half = numpy_helper.from_array(np.array(0.5, np.float32), "r")
    model = _model(node, [_vi("x", [3])], [_vi("y", [3]), _vi("m", [3], TensorProto.BOOL)], [half, mode], opset=13)
    with pytest.raises(UnsupportedOpsError, match="Dropout node 'y': training_mode"):
        legalize(model, 13, SUPPORTED)


@pytest.mark.parametrize("attrs", [{}, {"strides": [2, 2]}, {"dilations": [1, 2], "pads": [0, 1, 0, 1]}])
def test_col2im_becomes_a_conv_transpose_with_the_same_result(attrs):
    image = numpy_helper.from_array(np.array([5, 6], np.int64), "im")
    block = numpy_helper.from_array(np.array([2, 3], np.int64), "bl")
    strides, dil, pads = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1]), attrs.get("pads", [0] * 4)
    grid = [(i + pads[d] + pads[2 + d] - dil[d] * (k - 1) - 1) // strides[d] + 1 for d, (i, k) in enumerate(([5, 2], [6, 3]))]
    cols = [1, 2 * 6, grid[0] * grid[1]]
    node = helper.make_node("Col2Im", ["x", "im", "bl"], ["y"], **attrs)
    model = _model(node, [_vi("x", cols)], [_vi("y", [1, 2, 5, 6])], [image, block], 18)
    fixed, notes = legalize(model, 18, SUPPORTED)
    assert [n.op_type for n in fixed.graph.node] == ["Reshape", "ConvTranspose"] and "Col2Im rewritten" in notes[0]
    x = np.random.default_rng(2).standard_normal(cols).astype(np.float32)
    np.testing.assert_allclose(_run(fixed, {"x": x})[0], _run(model, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_col2im_with_a_run_time_image_shape_is_refused():
    block = numpy_helper.from_array(np.array([2, 2], np.int64), "bl")
    node = helper.make_node("Col2Im", ["x", "im", "bl"], ["y"])
    model = _model(node, [_vi("x", [1, 4, 4]), _vi("im", [2], TensorProto.INT64)], [_vi("y", None)], [block], 18)
    with pytest.raises(UnsupportedOpsError, match="Col2Im node 'y': image_shape/block_shape computed at run time"):
        legalize(model, 18, SUPPORTED)

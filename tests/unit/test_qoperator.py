"""QOperator -> QDQ normalization keeps onnxruntime's outputs (within 1 LSB)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

from edgekit.compress.calibration import FeedsReader
from edgekit.frontend.qoperator import is_qoperator_model, normalize_qoperator
from edgekit.core.errors import UnsupportedOpsError

_QOP_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "QGemm",
            "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool", "QLinearAveragePool",
            "QLinearSigmoid", "QLinearLeakyRelu"}  # fmt: skip


def _fp32_model(tmp_path) -> tuple[str, list[dict[str, np.ndarray]]]:
    """Conv -> Relu -> (Add residual) -> GlobalAveragePool -> MatMul, and a
    second Conv branch concatenated: exercises QLinearConv, QLinearAdd,
    QLinearConcat, QLinearGlobalAveragePool and QLinearMatMul."""
    rng = np.random.default_rng(0)
    init = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.5, "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "w2"),
        numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w3"),
        numpy_helper.from_array(rng.standard_normal((12, 5)).astype(np.float32), "wm"),
        numpy_helper.from_array(np.array([1, 12], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], "add"),
        helper.make_node("Conv", ["x", "w3"], ["c3"], "conv3"),
        helper.make_node("Concat", ["s", "c3"], ["cat"], "concat", axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"], "gap"),
        helper.make_node("Reshape", ["gap", "shape"], ["flat"], "reshape"),
        helper.make_node("MatMul", ["flat", "wm"], ["y"], "matmul"),
    ]
    graph = helper.make_graph(
        nodes, "qop_test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], initializer=init,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "fp32.onnx")
    onnx.save(model, path)
    feeds = [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(24)]
    return path, feeds


def _run(model: onnx.ModelProto | str, feeds, *, optimize: bool = True) -> np.ndarray:
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("per_channel", [True, False])
def test_static_qoperator_normalizes_and_matches_within_one_lsb(tmp_path, per_channel) -> None:
    fp32, feeds = _fp32_model(tmp_path)
    qop_path = str(tmp_path / "qop.onnx")
    quantize_static(fp32, qop_path, FeedsReader(feeds), quant_format=QuantFormat.QOperator, per_channel=per_channel)
    qop = onnx.load(qop_path)
    assert {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearConcat", "QLinearGlobalAveragePool"} <= _ops(qop)
    assert is_qoperator_model(qop)

    result = normalize_qoperator(qop)
    assert result.modified and result.rewritten["QLinearConv"] == 3
    ops = _ops(result.model)
    assert not ops & _QOP_OPS, ops & _QOP_OPS
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "Add", "Concat", "GlobalAveragePool"} <= ops
    assert all(o.domain != "com.microsoft" for o in result.model.opset_import)
    # Weights stay int8 initializers feeding DequantizeLinear.
    inits = {t.name: t for t in result.model.graph.initializer}
    dq_weights = [n.input[0] for n in result.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert any(inits[w].data_type == TensorProto.INT8 for w in dq_weights)

    lsb = float(numpy_helper.to_array(next(t for t in qop.graph.initializer if t.name == "y_scale")))
    before = _run(qop_path, feeds)
    # The rewritten model runs as written (float compute on dequantized
    # values), an independent check of onnxruntime's integer kernels.
    after = _run(result.model, feeds, optimize=False)
    assert np.abs(before - after).max() <= lsb * 1.001
    assert np.mean(np.isclose(before, after, atol=1e-6)) > 0.9
    # And what onnxruntime makes of it with its own fusions.
    assert np.abs(before - _run(result.model, feeds)).max() <= lsb * 1.001


def test_dynamic_quantization_normalizes_exactly(tmp_path) -> None:
    fp32, feeds = _fp32_model(tmp_path)
    dyn_path = str(tmp_path / "dyn.onnx")
    # reduce_range keeps onnxruntime's x86 u8s8 kernels from saturating 16-bit
    # sums (they otherwise differ from the exact result on AVX2 machines).
    quantize_dynamic(fp32, dyn_path, op_types_to_quantize=["Conv", "MatMul"], reduce_range=True)
    dyn = onnx.load(dyn_path)
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= _ops(dyn)
    result = normalize_qoperator(dyn)
    assert not _ops(result.model) & _QOP_OPS
    assert result.rewritten["ConvInteger"] == 3 and result.rewritten["MatMulInteger"] == 1
    before = _run(dyn_path, feeds)
    after = _run(result.model, feeds, optimize=False)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * np.abs(before).max())
    # The ConvInteger -> Cast -> Mul(scale) pattern became plain QDQ: no Cast to int32 is left.
    assert not any(n.op_type == "Cast" and n.attribute[0].i == TensorProto.INT32 for n in result.model.graph.node)


def test_unsupported_ops_are_all_listed() -> None:
    nodes = [
        helper.make_node("QLinearReduceMean", ["a", "s", "z", "s", "z"], ["b"], domain="com.microsoft"),
        helper.make_node("QAttention", ["b", "w", "bias", "s", "s"], ["d"], domain="com.microsoft"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [2])],
                              [helper.make_tensor_value_info("d", TensorProto.UINT8, [2])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpsError) as info:
        normalize_qoperator(model)
    assert "com.microsoft.QLinearReduceMean (x1)" in str(info.value) and "com.microsoft.QAttention (x1)" in str(info.value)
    assert "--quantize int8" in info.value.hint


def test_float_model_is_left_alone(tmp_path) -> None:
    fp32, _ = _fp32_model(tmp_path)
    model = onnx.load(fp32)
    result = normalize_qoperator(model)
    assert not result.modified and result.rewritten == {}
    assert [n.op_type for n in result.model.graph.node] == [n.op_type for n in model.graph.node]

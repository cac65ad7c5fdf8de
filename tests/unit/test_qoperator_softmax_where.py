"""QLinearSoftmax and QLinearWhere (what onnxruntime's QOperator quantizer writes for Softmax and Where)
normalized to DequantizeLinear -> op -> QuantizeLinear, equal to onnxruntime's contrib kernels."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from edgekit.compress.calibration import FeedsReader
from edgekit.frontend.qoperator import normalize_qoperator

_SHAPE = [2, 3, 5]


def _quantized(tmp_path: Path, opset: int, activations: QuantType) -> tuple[onnx.ModelProto, list[dict]]:
    """``Where(c, Softmax(x @ w, axis=1), x @ w)`` quantized by onnxruntime in QOperator form."""
    rng = np.random.default_rng(opset)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Softmax", ["y"], ["s"], axis=1),
             helper.make_node("Where", ["c", "s", "y"], ["o"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "softmax_where",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, _SHAPE), helper.make_tensor_value_info("c", TensorProto.BOOL, _SHAPE)],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, _SHAPE)],
        [numpy_helper.from_array(rng.standard_normal((5, 5)).astype(np.float32), "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "fp32.onnx"))
    feeds = [{"x": rng.standard_normal(_SHAPE).astype(np.float32), "c": rng.random(_SHAPE) > 0.5} for _ in range(12)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs pre-processing advice on the root logger
    try:
        quantize_static(str(tmp_path / "fp32.onnx"), str(tmp_path / "q.onnx"), FeedsReader(feeds[:8]),
                        quant_format=QuantFormat.QOperator, activation_type=activations, weight_type=QuantType.QInt8,
                        extra_options={"ForceQuantizeNoInputCheck": True})  # fmt: skip
    finally:
        root.setLevel(level)
    return onnx.load(str(tmp_path / "q.onnx")), feeds[8:]


def _run(model: onnx.ModelProto, feeds: list[dict], *, as_written: bool) -> np.ndarray:
    opts = ort.SessionOptions()
    if as_written:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


@pytest.mark.parametrize("activations", [QuantType.QUInt8, QuantType.QInt8], ids=["uint8", "int8"])
@pytest.mark.parametrize("opset", [12, 17])
def test_softmax_and_where_normalize_to_qdq(tmp_path: Path, opset: int, activations: QuantType) -> None:
    """Opset 12's QLinearSoftmax normalizes over everything from ``axis`` on (the input coerced to 2-D),
    opset 13's over ``axis`` alone: on this 3-D input the two differ by far more than a step (3 elements
    against 15), so matching the contrib kernel within one step checks the semantics."""
    model, feeds = _quantized(tmp_path, opset, activations)
    softmax = next(n for n in model.graph.node if n.op_type == "QLinearSoftmax")
    assert helper.get_attribute_value(next(a for a in softmax.attribute if a.name == "opset")) == opset
    assert any(n.op_type == "QLinearWhere" for n in model.graph.node)
    result = normalize_qoperator(model)
    assert result.rewritten == {"QLinearMatMul": 1, "QLinearSoftmax": 1, "QLinearWhere": 1}
    assert all(n.domain in ("", "ai.onnx") for n in result.model.graph.node)
    ops = {n.op_type for n in result.model.graph.node}
    assert {"Softmax", "Where"} <= ops and ("Flatten" in ops) == (opset < 13)
    want = _run(model, feeds, as_written=False)  # onnxruntime's QLinearSoftmax / QLinearWhere kernels
    got = _run(result.model, feeds, as_written=True)
    lsb = 1 / 256  # the output scale onnxruntime fixes for a quantized softmax
    assert np.abs(got - want).max() <= lsb * 1.001 and np.mean(got == want) >= 0.95

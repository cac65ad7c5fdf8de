"""uint8 activations (onnxruntime's default) rewritten to int8: bit-exact in onnxruntime, lowered to integer kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

pytest.importorskip("tvm")

import tvm  # noqa: E402
from _int8_checks import assert_within_one_lsb_of_onnxruntime, run_built  # noqa: E402

from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.compress.calibration import FeedsReader  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.frontend.qdq_graph import _clip_range  # noqa: E402
from edgekit.frontend.qoperator import normalize_qoperator  # noqa: E402
from edgekit.frontend.uint8_activations import int8_activations  # noqa: E402

_SHAPE = (1, 3, 12, 12)


def _fp32_model() -> onnx.ModelProto:
    rng = np.random.default_rng(7)

    def init(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], "add"),
        helper.make_node("MaxPool", ["s"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w3", "b3"], ["c3"], "conv3"),
        helper.make_node("Reshape", ["c3", "shape"], ["f"], "flatten"),
        helper.make_node("MatMul", ["f", "wm"], ["y"], "matmul"),
    ]
    graph = helper.make_graph(
        nodes, "u8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(_SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[init("w1", 8, 3, 3, 3), init("b1", 8), init("w2", 8, 8, 3, 3), init("b2", 8),
                     init("w3", 4, 8, 1, 1), init("b3", 4), init("wm", 144, 5),
                     numpy_helper.from_array(np.array([1, -1], np.int64), "shape")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(_SHAPE).astype(np.float32)} for _ in range(n)]


@pytest.fixture(scope="module", params=["qdq", "qoperator", "qdq-uint8-weights"])
def u8_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    """The test CNN quantized by onnxruntime with uint8 activations (QUInt8, as many published int8 models
    are), in QDQ form (a QOperator model normalized: its MaxPool and Reshape read the uint8 tensors themselves)."""
    d = tmp_path_factory.mktemp("u8")
    onnx.save(_fp32_model(), str(d / "fp32.onnx"))
    fmt = QuantFormat.QOperator if request.param == "qoperator" else QuantFormat.QDQ
    weights = QuantType.QUInt8 if request.param == "qdq-uint8-weights" else QuantType.QInt8
    quantize_static(str(d / "fp32.onnx"), str(d / "q.onnx"), FeedsReader(_feeds(16, 0)), quant_format=fmt,
                    activation_type=QuantType.QUInt8, weight_type=weights, per_channel=True)  # fmt: skip
    model = onnx.load(str(d / "q.onnx"))
    return normalize_qoperator(model).model if request.param == "qoperator" else model


def _uint8_weights(model: onnx.ModelProto) -> int:
    inits = {t.name: t for t in model.graph.initializer}
    return sum(n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.UINT8
               for n in model.graph.node)  # fmt: skip


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def _activation_zp_types(model: onnx.ModelProto) -> set[int]:
    inits = {t.name: t for t in model.graph.initializer}
    return {inits[n.input[2]].data_type for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] not in inits}  # fmt: skip


def test_rewrite_is_bit_exact_in_onnxruntime(u8_model: onnx.ModelProto) -> None:
    assert _activation_zp_types(u8_model) == {TensorProto.UINT8}
    result = int8_activations(u8_model)
    assert result.modified and result.kept == 0 and result.activations >= 4
    assert _activation_zp_types(result.model) == {TensorProto.INT8}
    # onnxruntime's uint8 weights have zero point 128: they become symmetric int8.
    assert result.weights == _uint8_weights(u8_model) and _uint8_weights(result.model) == 0
    onnx.checker.check_model(result.model, full_check=True)
    feeds = _feeds(4, 1)
    np.testing.assert_array_equal(_run(result.model, feeds), _run(u8_model, feeds))


def test_folded_relu_keeps_its_zero_lower_bound(u8_model: onnx.ModelProto) -> None:
    """The quantizer folds relu1 into conv1's output range (zero point 0): after the rewrite the zero point is
    -128, still the type's minimum, and the float range qdq_graph reads is the same."""

    def ranges(model: onnx.ModelProto) -> list[tuple[float, float] | None]:
        inits = {t.name: t for t in model.graph.initializer}
        return [_clip_range(n, inits) for n in model.graph.node if n.op_type == "QuantizeLinear"]

    before, after = ranges(u8_model), ranges(int8_activations(u8_model).model)
    assert before == after and any(r is not None and r[0] == 0.0 for r in after)


def test_rewritten_model_lowers_to_integer_and_matches_onnxruntime(u8_model: onnx.ModelProto, tmp_path: Path) -> None:
    def lowering(model: onnx.ModelProto) -> dict:
        return import_onnx(load_model(model))[2]

    before = lowering(u8_model)
    assert any("uint8" in c["detail"] for c in before["kept_float"]), before
    rewritten = int8_activations(u8_model).model
    after = lowering(rewritten)
    assert after["kept_float"] == [] and sum(c["kind"] == "conv2d" for c in after["rewritten"]) == 3, after
    path = str(tmp_path / "int8.onnx")
    onnx.save(rewritten, path)
    x = _feeds(1, 2)[0]["x"]
    got = run_built(path, tvm.target.Target("llvm"), x)
    # Within one step of onnxruntime running the original uint8 graph (identical to the rewritten one).
    onnx.save(u8_model, str(tmp_path / "u8.onnx"))
    assert_within_one_lsb_of_onnxruntime(str(tmp_path / "u8.onnx"), {"x": x}, got)


class _Int8Fastest:
    """A cost model that keeps every layer int8, so the test times nothing."""

    source, timing = "modeled", "injected by the test"

    def layer_times(self, probe):
        return (1.0, 2.0)

    def model_times(self, builds, prepared):
        return {"int8": 1.0, "mixed": 2.0, "fp32": 2.0}


def test_compile_for_host_lowers_every_chain(u8_model: onnx.ModelProto, tmp_path: Path) -> None:
    """``compile_model`` (what ``edgekit compile`` runs) applies the rewrite: no chain of the uint8 model stays float."""
    from edgekit.compiler.driver import compile_model

    result = compile_model(u8_model, "host", tmp_path / "m.ekpkg", int8_cost=_Int8Fastest())
    lowering = result.manifest.section("integer_lowering")
    assert lowering["kept_float"] == [] and len(lowering["rewritten"]) >= 4, lowering


def _uint8_interface(u8_model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its input's QuantizeLinear and its output's DequantizeLinear cut off: it takes and
    returns the uint8 tensors themselves, as QOperator and many published int8 models do."""
    model = onnx.ModelProto()
    model.CopyFrom(u8_model)
    graph = model.graph
    q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == graph.output[0].name)
    graph.node.remove(q)
    graph.node.remove(dq)
    graph.input[0].CopyFrom(helper.make_tensor_value_info(q.output[0], TensorProto.UINT8, list(_SHAPE)))
    graph.output[0].CopyFrom(helper.make_tensor_value_info(dq.input[0], TensorProto.UINT8, None))
    return onnx.shape_inference.infer_shapes(model)


def test_uint8_model_input_and_output_convert_at_the_edge(u8_model: onnx.ModelProto, tmp_path: Path) -> None:
    """A uint8 model input and output keep their type (the model's interface does not change); inside, the
    top bit is flipped to int8 and back, exactly: bit-identical in onnxruntime, every chain lowered, the
    compiled model within one step of onnxruntime on the uint8 output."""
    model = _uint8_interface(u8_model)
    result = int8_activations(model)
    assert result.kept == 0 and result.activations >= 4
    types = [v.type.tensor_type.elem_type for v in (*result.model.graph.input, *result.model.graph.output)]
    assert types == [TensorProto.UINT8, TensorProto.UINT8]
    onnx.checker.check_model(result.model, full_check=True)
    name = model.graph.input[0].name
    rng = np.random.default_rng(3)
    feeds = [{name: rng.integers(0, 256, _SHAPE, dtype=np.uint8)} for _ in range(3)]
    want = _run(model, feeds)
    np.testing.assert_array_equal(_run(result.model, feeds), want)

    assert any("uint8" in c["detail"] for c in import_onnx(load_model(model))[2]["kept_float"])
    lowering = import_onnx(load_model(result.model))[2]
    assert lowering["kept_float"] == [] and sum(c["kind"] == "conv2d" for c in lowering["rewritten"]) == 3, lowering
    path = str(tmp_path / "edges.onnx")
    onnx.save(result.model, path)
    got = run_built(path, tvm.target.Target("llvm"), feeds[0][name])
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - want[:1].astype(int)).max() <= 1


def test_compile_keeps_a_uint8_interface(u8_model: onnx.ModelProto, tmp_path: Path) -> None:
    """``compile_model`` on the uint8-in, uint8-out model: the package's interface is uint8, no chain float."""
    from edgekit.compiler.driver import compile_model

    result = compile_model(_uint8_interface(u8_model), "host", tmp_path / "m.ekpkg", int8_cost=_Int8Fastest())
    lowering = result.manifest.section("integer_lowering")
    assert lowering["kept_float"] == [] and len(lowering["rewritten"]) >= 4, lowering
    assert [s.dtype for s in (*result.manifest.inputs, *result.manifest.outputs)] == ["uint8", "uint8"]

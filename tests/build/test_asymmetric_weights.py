"""Asymmetric weights (a zero point per output channel) lowered to integer kernels, exactly.

``sum_k (x_k - z_x)(w_k - z_w)`` is computed as ``sum x w - z_w sum x`` plus a
per-channel constant (edgekit.compiler.integer.linear): checked bit for bit
against a numpy integer reference (``core.fixedpoint.requantize``) on the
generic ``llvm`` target (the int64 requantization every non-x86 CPU runs),
within one step of it on this host's x86 kernels (the float32
requantization), and within one step of onnxruntime's QDQ graph; then on a
model onnxruntime quantized itself (``weight_type=QUInt8``, asymmetric, per
tensor and per channel, QDQ and QOperator), every chain lowered.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

pytest.importorskip("tvm")

import tvm  # noqa: E402
from _host_cpu import host_target  # noqa: E402
from _int8_checks import assert_within_one_lsb_of_onnxruntime, normal_feeds, run_built, small_cnn  # noqa: E402

from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.compress.calibration import FeedsReader  # noqa: E402
from edgekit.core.fixedpoint import quantize_multiplier, requantize  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.frontend.qoperator import normalize_qoperator  # noqa: E402
from edgekit.frontend.uint8_activations import int8_activations  # noqa: E402

GENERIC = tvm.target.Target({"kind": "llvm"})


# --------------------------------------------------------------------------
# One layer against the integer reference
# --------------------------------------------------------------------------


def _layer(kind: str, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict, np.ndarray]:
    """An int8-in, int8-out QDQ layer with asymmetric per-channel int8 weights; its parameters; an input.

    ``conv-fits``: weights and zero points small enough that ``w - z_w`` fits int8 on every channel."""
    sx, zx, sy, zy = 0.05, 11, 0.09, -7
    if kind == "matmul":  # Gemm with transB: the weight is read transposed
        shape, w = (4, 40), rng.integers(-128, 128, (6, 40), dtype=np.int8)
        channels, attrs, op = 6, {"transB": 1}, "Gemm"
        out_shape = [4, 6]
    else:
        groups = 8 if kind == "depthwise" else 1
        shape, w = (1, 8, 9, 9), rng.integers(-128, 128, (16 if groups == 1 else 8, 8 // groups, 3, 3), dtype=np.int8)
        channels, attrs, op = w.shape[0], {"pads": [1, 1, 1, 1], "strides": [2, 2], "group": groups}, "Conv"
        out_shape = [1, channels, 5, 5]
    zw = rng.integers(-128, 128, channels, dtype=np.int8)
    zw[0] = 0  # one symmetric channel among asymmetric ones
    if kind == "conv-fits":
        w //= 2
        zw //= 2
    sw = (rng.random(channels) * 0.01 + 0.002).astype(np.float32)
    bias = rng.integers(-3000, 3000, channels, dtype=np.int32)
    inits = [numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in (
        ("sx", sx, np.float32), ("zx", zx, np.int8), ("sy", sy, np.float32), ("zy", zy, np.int8))]  # fmt: skip
    inits += [numpy_helper.from_array(w, "w"), numpy_helper.from_array(sw, "sw"), numpy_helper.from_array(zw, "zw"),
              numpy_helper.from_array(bias, "b"), numpy_helper.from_array((np.float32(sx) * sw).astype(np.float32), "sb")]  # fmt: skip
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "sb"], ["bf"], axis=0),
        helper.make_node(op, ["xf", "wf", "bf"], ["yf"], **attrs),
        helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"]),
    ]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.INT8, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, out_shape)], initializer=inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    params = {"w": w, "zw": zw, "b": bias, "sx": sx, "zx": zx, "sw": sw, "sy": sy, "zy": zy, **attrs}
    return model, params, rng.integers(-128, 128, shape, dtype=np.int8)


def _reference(x: np.ndarray, p: dict) -> np.ndarray:
    """``requantize(sum (x - zx)(w - zw) + bias)`` in integers."""
    w = p["w"].astype(np.int64) - p["zw"].astype(np.int64).reshape(-1, *[1] * (p["w"].ndim - 1))
    xc = x.astype(np.int64) - p["zx"]
    if "transB" in p:
        acc = xc @ w.T + p["b"]
    else:
        groups, s = p["group"], p["strides"][0]
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(xc, [(0, 0), (0, 0), (1, 1), (1, 1)]), (3, 3), axis=(2, 3))
        windows = windows[:, :, ::s, ::s]  # [n, c, oh, ow, kh, kw]
        n, c, oh, ow = windows.shape[:4]
        wg = w.reshape(groups, -1, c // groups, 3, 3)
        xg = windows.reshape(n, groups, c // groups, oh, ow, 3, 3)
        acc = np.einsum("ngcyxij,gocij->ngoyx", xg, wg).reshape(n, -1, oh, ow) + p["b"].reshape(-1, 1, 1)
        acc = np.moveaxis(acc, 1, -1)
    fp = quantize_multiplier(np.float64(p["sx"]) * p["sw"].astype(np.float64) / np.float64(p["sy"]))
    out = requantize(acc, fp, p["zy"])
    return out if "transB" in p else np.moveaxis(out, -1, 1)


@pytest.mark.parametrize("kind", ["conv", "conv-fits", "depthwise", "matmul"])
def test_layer_is_bit_exact_with_the_integer_reference(kind: str, tmp_path: Path) -> None:
    model, params, x = _layer(kind, np.random.default_rng(5))
    report = import_onnx(load_model(model))[2]
    detail = report["rewritten"][0]["detail"]
    assert report["kept_float"] == [] and ("weight zero point subtracted" in detail) == (kind != "conv-fits"), report
    assert kind != "conv-fits" or "weight zero point folded where it fits int8" in detail, detail
    path = str(tmp_path / f"{kind}.onnx")
    onnx.save(model, path)
    want = _reference(x, params)
    np.testing.assert_array_equal(run_built(path, GENERIC, x), want)
    # This host's x86 kernels requantize in float32: one step where a value sits within float error of a tie.
    host = run_built(path, host_target(), x).astype(np.int64)
    assert np.abs(host - want).max() <= 1 and np.mean(host == want) >= 0.99
    assert_within_one_lsb_of_onnxruntime(path, {"x": x}, want.astype(np.float32))


# --------------------------------------------------------------------------
# A model onnxruntime quantized
# --------------------------------------------------------------------------

_SHAPE = (1, 3, 10, 10)


def _fp32_model() -> onnx.ModelProto:
    return small_cnn(_SHAPE, seed=11, mean=0.1, stride_on="conv3")


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    return normal_feeds(_SHAPE, n, seed)


_WEIGHTS = {"w1": 0, "wd": 0, "w3": 0, "wg": 0}


@pytest.fixture(scope="module", params=["qdq", "qdq-per-channel", "qoperator", "qoperator-per-channel"])
def asym_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test CNN quantized by onnxruntime with QUInt8 activations and asymmetric QUInt8 weights (the QDQ
    writer makes per-channel weights symmetric unless a tensor override says otherwise), as a QDQ file."""
    d = tmp_path_factory.mktemp("asym")
    onnx.save(_fp32_model(), str(d / "fp32.onnx"))
    per_channel = request.param.endswith("per-channel")
    options: dict = {"WeightSymmetric": False}
    if request.param == "qdq-per-channel":
        options["TensorQuantOverrides"] = {w: [{"symmetric": False, "axis": axis}] for w, axis in _WEIGHTS.items()}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs pre-processing advice on the root logger
    try:
        quantize_static(str(d / "fp32.onnx"), str(d / "q.onnx"), FeedsReader(_feeds(16, 0)),
                        quant_format=QuantFormat.QOperator if request.param.startswith("qoperator") else QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8, per_channel=per_channel,
                        extra_options=options)  # fmt: skip
    finally:
        root.setLevel(level)
    model = onnx.load(str(d / "q.onnx"))
    if request.param.startswith("qoperator"):
        model = normalize_qoperator(model).model
    onnx.save(model, str(d / "qdq.onnx"))
    return str(d / "qdq.onnx")


def _asymmetric_weights(model: onnx.ModelProto) -> int:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero = {"uint8": 128, "int8": 0}
    return sum(
        n.op_type == "DequantizeLinear" and n.input[0] in inits and len(n.input) > 2
        and np.any(inits[n.input[2]] != zero.get(str(inits[n.input[0]].dtype), 0))
        for n in model.graph.node
    )  # fmt: skip


def test_onnxruntime_model_lowers_every_chain_within_one_step(asym_model: str, tmp_path: Path) -> None:
    model = onnx.load(asym_model)
    asymmetric = _asymmetric_weights(model)
    assert asymmetric == 4  # every layer's
    rewritten = int8_activations(model).model
    assert _asymmetric_weights(rewritten) == asymmetric  # uint8 weights: zero point z - 128, exactly
    report = import_onnx(load_model(rewritten))[2]
    assert report["kept_float"] == [], report["kept_float"]
    linear = [c for c in report["rewritten"] if c["kind"] in ("conv2d", "matmul")]
    # the window sum subtracted, or (per tensor: few weights beyond int8) those taps read from the input (test_asymmetric_taps.py)
    corrected = sum("weight zero point subtracted" in c["detail"] or "taps beyond int8" in c["detail"] for c in linear)
    assert len(linear) == 4 and corrected == asymmetric, linear
    path = str(tmp_path / "int8.onnx")
    onnx.save(rewritten, path)
    xs = [f["x"] for f in _feeds(3, 4)]
    for x, got in zip(xs, run_built(path, GENERIC, xs)):  # one build, three inputs
        assert_within_one_lsb_of_onnxruntime(asym_model, {"x": x}, got)

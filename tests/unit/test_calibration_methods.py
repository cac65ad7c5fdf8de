"""Calibration beyond one range method (issue #18 item 2): per-tensor range
choice (``calibration_method="auto"``), bias correction and SmoothQuant, on
small models built here whose flaw each method exists for."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.cli.main import main
from edgekit.compress import QuantConfig, quantize
from edgekit.compress.ranges import quantization_mse
from edgekit.compress.smoothquant import smooth_quant
from edgekit.core.errors import ConfigError


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph as written
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])


def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    return 10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / float(((ref - out).astype(np.float64) ** 2).sum()))


def _model(nodes: list, inits: dict[str, np.ndarray], in_shape: list[int], out_shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_quantization_mse_counts_rounding_inside_and_clipping_outside() -> None:
    edges = np.linspace(-1.0, 1.0, 201)
    hist = np.ones(200)
    full = quantization_mse(hist, edges, -1.0, 1.0, symmetric=False)
    assert full == pytest.approx((2.0 / 255) ** 2 / 12, rel=1e-6)  # nothing clipped: rounding noise only
    clipped = quantization_mse(hist, edges, -0.5, 0.5, symmetric=False)
    assert clipped > full  # a uniform distribution loses more to clipping than it gains in resolution
    # One far outlier among many small values: clipping it pays.
    hist = np.zeros(200)
    hist[95:105] = 100_000  # a million small values...
    hist[-1] = 1  # ...and one near 1
    assert quantization_mse(hist, edges, -0.06, 0.06, symmetric=False) < quantization_mse(hist, edges, -1, 1,
                                                                                           symmetric=False)


def test_auto_ranges_choose_per_tensor_and_reach_the_qdq_model(tmp_path) -> None:
    """Two inputs added: ``u`` uniform (nothing to clip), ``v`` a million
    Gaussian values and two at ±100 (MinMax's step is then 0.8, clipping two
    values in a million costs less). auto keeps ``u``'s full range,
    clips ``v``, keeps MinMax for the graph output, and quantize_static uses
    those ranges (the scales in the QDQ model)."""
    from edgekit.compress.ranges import auto_ranges

    rng = np.random.default_rng(0)
    graph = helper.make_graph([helper.make_node("Add", ["u", "v"], ["s"], name="add"),
                               helper.make_node("Relu", ["s"], ["y"], name="relu")], "m",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4096]) for n in ("u", "v")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    u = rng.uniform(-1, 1, size=(250, 4096)).astype(np.float32)
    v = rng.normal(size=(250, 4096)).astype(np.float32)
    v[3, 5], v[200, 9] = 100.0, -100.0
    feeds = [{"u": u[i : i + 1], "v": v[i : i + 1]} for i in range(len(u))]
    choice = auto_ranges(tmp_path / "m.onnx", feeds, op_types=["Add", "Relu"], percentile=99.99, symmetric=False,
                         keep_minmax=["y"])  # fmt: skip
    assert choice.method["y"] == "minmax"
    assert choice.ranges["u"] == pytest.approx((float(u.min()), float(u.max())), abs=0.01)
    assert choice.method["v"] in ("percentile", "entropy") and choice.mse_gain["v"] > 2
    lo, hi = choice.ranges["v"]
    assert 3.0 < hi < 20.0 and -20.0 < lo < -3.0, (lo, hi)

    def input_scale(m: onnx.ModelProto, name: str) -> float:
        q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == name)
        return float(numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == q.input[1])))

    cal, ev = {"u": u, "v": v}, {"u": u[:8], "v": v[:8]}  # every sample calibrates
    auto = quantize(model, QuantConfig(calibration_method="auto", percentile=99.99), cal, eval_data=ev).model
    minmax = quantize(model, QuantConfig(calibration_method="minmax"), cal, eval_data=ev).model
    assert input_scale(auto, "v") == pytest.approx((hi - lo) / 255, rel=1e-3)
    assert input_scale(minmax, "v") > 5 * input_scale(auto, "v")
    assert input_scale(auto, "u") == pytest.approx(input_scale(minmax, "u"), rel=0.01)


def test_bias_correction_removes_the_mean_shift_of_biased_weight_rounding() -> None:
    """Every weight of a channel but the largest sits at 0.79 of an int8
    step, so rounding raises them all and, with positive inputs, the output
    mean by about 128 x 0.21 steps x mean(x)."""
    rng = np.random.default_rng(0)
    k = 128
    w = np.full((k, 4), 0.79 / 127)
    w[0] = 1.0  # the largest weight sets each channel's scale to 1/127
    model = _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")], {"w": w, "b": np.zeros(4)},
                   [1, k], [1, 4])  # fmt: skip
    x = rng.uniform(0.0, 1.0, size=(128, k)).astype(np.float32)
    ev = rng.uniform(0.0, 1.0, size=(64, k)).astype(np.float32)
    ref = _run(model, ev)
    shift = {}
    for bc in (False, True):
        q = quantize(model, QuantConfig(calibration_method="minmax", bias_correction=bc), {"x": x},
                     eval_data={"x": ev}).model  # fmt: skip
        shift[bc] = float(np.abs((_run(q, ev) - ref).mean(axis=0)).max())
    assert shift[False] > 0.05 and shift[True] < shift[False] / 5, shift


def _outlier_affine_model(rng: np.random.Generator, c: int = 32) -> tuple[onnx.ModelProto, np.ndarray]:
    """x -> Mul(gamma) -> Add(beta) -> MatMul(W): a LayerNorm's affine end
    whose gamma makes channel 3 a hundred times larger than the others."""
    gamma = np.ones(c)
    gamma[3] = 100.0
    model = _model([helper.make_node("Mul", ["x", "gamma"], ["g"], name="ln_scale"),
                    helper.make_node("Add", ["g", "beta"], ["a"], name="ln_bias"),
                    helper.make_node("MatMul", ["a", "w"], ["y"], name="proj")],
                   {"gamma": gamma, "beta": rng.normal(size=c) * 0.1, "w": rng.normal(size=(c, 16)) * 0.1},
                   [1, 8, c], [1, 8, 16])  # fmt: skip
    return model, rng.normal(size=(64, 8, c)).astype(np.float32)


def test_smooth_quant_folds_into_the_layernorm_affine_and_keeps_the_function() -> None:
    rng = np.random.default_rng(0)
    model, x = _outlier_affine_model(rng)
    smoothed, layers = smooth_quant(model, [{"x": x[i : i + 1]} for i in range(16)], alpha=0.5)
    assert [(s.node, s.folded_into) for s in layers] == [("proj", ["ln_scale", "ln_bias"])]
    assert layers[0].outlier_ratio > 50 and layers[0].outlier_ratio_after < layers[0].outlier_ratio / 5
    assert [n.op_type for n in smoothed.graph.node] == ["Mul", "Add", "MatMul"]  # nothing inserted
    np.testing.assert_allclose(_run(smoothed, x), _run(model, x), rtol=1e-4, atol=1e-4)
    # ...and int8 loses less: the other channels are no longer rounded to a step sized for channel 3.
    ref = _run(model, x)
    base = {"calibration_method": "minmax", "bias_correction": False}  # SmoothQuant alone
    plain = quantize(model, QuantConfig(**base), {"x": x}).model
    smooth = quantize(model, QuantConfig(**base, smooth_quant=True), {"x": x}).model
    assert _sqnr(ref, _run(smooth, x)) > _sqnr(ref, _run(plain, x)) + 6.0


def test_smooth_quant_leaves_activations_without_outliers_or_a_fold_alone() -> None:
    rng = np.random.default_rng(1)
    model, x = _outlier_affine_model(rng)
    # The MatMul's input also feeds the output: dividing it would change that output.
    model.graph.node.append(helper.make_node("Identity", ["a"], ["a_out"], name="tap"))
    model.graph.output.append(helper.make_tensor_value_info("a_out", TensorProto.FLOAT, [1, 8, 32]))
    assert smooth_quant(model, [{"x": x[:1]}])[1] == []
    model, x = _outlier_affine_model(rng)
    gamma = next(t for t in model.graph.initializer if t.name == "gamma")
    gamma.CopyFrom(numpy_helper.from_array(np.ones(32, np.float32), "gamma"))
    assert smooth_quant(model, [{"x": x[i : i + 1]} for i in range(4)])[1] == []  # no outlier channel


def test_cli_flags_reach_the_config(tmp_path, capsys) -> None:
    import json

    rng = np.random.default_rng(0)
    model, x = _outlier_affine_model(rng)
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "cal.npz", x=x)
    assert main(["compress", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8",
                 "--calibration", str(tmp_path / "cal.npz"), "--calibration-method", "auto", "--percentile", "99.9",
                 "--bias-correction", "--smooth-quant", "--json"]) == 0  # fmt: skip
    config = json.loads(capsys.readouterr().out)["steps"][0]["config"]
    assert (config["calibration_method"], config["percentile"], config["bias_correction"], config["smooth_quant"]) == (
        "auto", 99.9, True, True)
    with pytest.raises(ConfigError, match="smooth_quant_alpha"):
        QuantConfig(smooth_quant=True, smooth_quant_alpha=1.5)

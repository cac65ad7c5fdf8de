"""Low-rank factorization: SVD for Gemm/MatMul, Tucker-2 for Conv."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compress.lowrank import LowRankConfig, factorize, svd_rank, tucker2
from edgekit.compress.passes import model_stats, run_tensors
from edgekit.core.errors import ConfigError
from edgekit.examples import digits
from edgekit.frontend.loader import load_model


def _lowrank(rng, k, n, rank):
    return (rng.standard_normal((k, rank)) @ rng.standard_normal((rank, n)) / np.sqrt(k * rank)).astype(np.float32)


def _decaying(rng, k, n):
    """A matrix whose spectrum decays roughly like a trained layer's (i^-1):
    random near-orthogonal factors scaled by 1/i."""
    m = min(k, n)
    u = rng.standard_normal((k, m)) / np.sqrt(k)
    v = rng.standard_normal((m, n)) / np.sqrt(n)
    return ((u / np.arange(1, m + 1)) @ v).astype(np.float32)


def gemm_mlp(weights: dict[str, np.ndarray], alpha: float = 1.0, beta: float = 1.0) -> onnx.ModelProto:
    """x[4,256] -> Gemm(transB, alpha, beta) -> Relu -> MatMul -> Relu -> Gemm -> y[4,10]."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inits += [numpy_helper.from_array((rng.standard_normal(512) * 0.1).astype(np.float32), "b1"),
              numpy_helper.from_array((rng.standard_normal((1, 10)) * 0.1).astype(np.float32), "b3")]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], "fc1", transB=1, alpha=alpha, beta=beta),
        helper.make_node("Relu", ["h1"], ["r1"], "relu1"),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"], "mm2"),
        helper.make_node("Relu", ["h2"], ["r2"], "relu2"),
        helper.make_node("Gemm", ["r2", "w3", "b3"], ["y"], "fc3"),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _x(shape, seed=2):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_svd_rank_by_energy():
    s = np.array([3.0, 2.0, 1.0, 0.0])
    assert svd_rank(s, 9 / 14) == 1 and svd_rank(s, 0.9) == 2 and svd_rank(s, 1.0) == 3


def test_exact_low_rank_gemm_is_reproduced():
    rng = np.random.default_rng(0)
    model = gemm_mlp({"w1": _lowrank(rng, 512, 256, 8), "w2": _lowrank(rng, 512, 256, 12),
                      "w3": _lowrank(rng, 256, 10, 10)}, alpha=0.5, beta=2.0)  # fmt: skip
    result = factorize(model, LowRankConfig(method="svd", rank_energy=0.999999))
    by_node = {lay.node: lay for lay in result.layers}
    assert by_node["fc1"].ranks == (8,) and by_node["mm2"].ranks == (12,)
    assert by_node["fc1"].applied and by_node["mm2"].applied
    assert not by_node["fc3"].applied and "more MACs" in by_node["fc3"].reason  # 10 outputs: no gain
    onnx.checker.check_model(result.model, full_check=True)
    x = {"x": _x((4, 256))}
    np.testing.assert_allclose(run_tensors(result.model, x)["y"], run_tensors(model, x)["y"], rtol=1e-4, atol=1e-4)
    assert model_stats(result.model).params < model_stats(model).params / 4


def test_gemm_heavy_model_energy_budget_reduces_params_within_the_error_bound():
    rng = np.random.default_rng(0)
    model = gemm_mlp({"w1": _decaying(rng, 512, 256), "w2": _decaying(rng, 512, 256),
                      "w3": (rng.standard_normal((256, 10)) / 16).astype(np.float32)})  # fmt: skip
    before = model_stats(model)
    result = factorize(model, LowRankConfig(method="svd", rank_energy=0.9))
    after = model_stats(result.model)
    assert after.params < 0.5 * before.params and after.macs < 0.5 * before.macs
    for lay in result.layers:
        if lay.applied:  # energy 0.9 keeps the relative error at most sqrt(0.1)
            assert lay.rel_error <= np.sqrt(0.1) + 1e-6
    x = {"x": _x((4, 256))}
    ref, got = run_tensors(model, x)["y"], run_tensors(result.model, x)["y"]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.5
    # An error budget instead of an energy budget picks larger ranks.
    tight = factorize(model, LowRankConfig(method="svd", max_error=0.05))
    assert {lay.node: lay.ranks[0] for lay in tight.layers}["fc1"] > {lay.node: lay.ranks[0] for lay in result.layers}["fc1"]


def test_random_full_rank_weights_buy_nothing_and_say_so():
    rng = np.random.default_rng(0)
    model = gemm_mlp({"w1": rng.standard_normal((512, 256)).astype(np.float32),
                      "w2": rng.standard_normal((512, 256)).astype(np.float32),
                      "w3": rng.standard_normal((256, 10)).astype(np.float32)})  # fmt: skip
    result = factorize(model, LowRankConfig(method="svd", rank_energy=0.9, min_mac_saving=0.1))
    assert not result.modified and result.model is model
    by_node = {lay.node: lay for lay in result.layers}
    # A random matrix has a flat spectrum: 90% energy needs most of the rank.
    for name in ("fc1", "mm2", "fc3"):
        lay = by_node[name]
        assert lay.macs_after > 0.9 * lay.macs_before and lay.reason, lay


def conv_model(weight: np.ndarray, stride: int = 2) -> onnx.ModelProto:
    o, i, k, _ = weight.shape
    bias = np.linspace(-1, 1, o).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], "conv", kernel_shape=[k, k], pads=[1, 1, 1, 1],
                            strides=[stride, stride])  # fmt: skip
    graph = helper.make_graph([node], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, i, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_tucker2_of_an_exact_multilinear_rank_conv_is_exact():
    rng = np.random.default_rng(0)
    core = rng.standard_normal((6, 5, 3, 3))
    u_out = rng.standard_normal((48, 6))
    u_in = rng.standard_normal((32, 5))
    w = np.einsum("rshw,or,is->oihw", core, u_out, u_in).astype(np.float32)
    _, got_core, _, err = tucker2(w, 0.999999)
    assert got_core.shape == (6, 5, 3, 3) and err < 1e-6
    model = conv_model(w)
    result = factorize(model, LowRankConfig(method="tucker", rank_energy=0.999999))
    (lay,) = result.layers
    assert lay.applied and lay.ranks == (6, 5) and lay.macs_after < lay.macs_before
    assert [n.op_type for n in result.model.graph.node] == ["Conv", "Conv", "Conv"]
    x = {"x": _x((2, 32, 16, 16))}
    ref = run_tensors(model, x)["y"]
    np.testing.assert_allclose(run_tensors(result.model, x)["y"], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_tucker2_on_the_trained_digits_cnn():
    model = load_model(digits.example_model_path()).model
    result = factorize(model, LowRankConfig(method="tucker", rank_energy=0.9))
    by_node = {lay.node: lay for lay in result.layers}
    assert by_node["conv2"].applied and by_node["conv3"].applied
    assert not by_node["conv1"].applied and "more MACs" in by_node["conv1"].reason  # 1 input channel
    assert "fc1" not in by_node  # method="tucker" leaves Gemms alone
    before, after = model_stats(model), model_stats(result.model)
    assert after.params < before.params and after.macs < before.macs
    onnx.checker.check_model(result.model, full_check=True)
    data = digits.load_digits_data()
    x = {"input": data.x_test}
    acc = lambda m: float(np.mean(run_tensors(m, x)["logits"].argmax(1) == data.y_test))  # noqa: E731
    # Truncation costs accuracy; measured here, not assumed (no recovery).
    assert acc(result.model) > 0.8


def test_one_by_one_conv_is_split_by_svd():
    rng = np.random.default_rng(0)
    w = _lowrank(rng, 64, 64, 4).reshape(64, 64, 1, 1)
    model = conv_model(w, stride=1)
    for node in model.graph.node:
        del node.attribute[:]
        node.attribute.extend([helper.make_attribute("kernel_shape", [1, 1])])
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 64
    result = factorize(model, LowRankConfig(method="auto", rank_energy=0.999999))
    assert result.layers[0].method == "svd" and result.layers[0].ranks == (4,)
    x = {"x": _x((1, 64, 16, 16))}
    np.testing.assert_allclose(run_tensors(result.model, x)["y"], run_tensors(model, x)["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs", [{"method": "cp"}, {"rank_energy": 0.0}, {"max_error": 1.5}, {"exclude": "fc1"}])
def test_bad_low_rank_config(kwargs):
    with pytest.raises(ConfigError):
        LowRankConfig(**kwargs)


def test_exclusion():
    model = load_model(digits.example_model_path()).model
    result = factorize(model, LowRankConfig(method="tucker", exclude=("conv2",)))
    assert "conv2" not in {lay.node for lay in result.layers}
    with pytest.raises(ConfigError, match="nope"):
        factorize(model, LowRankConfig(exclude=("nope",)))

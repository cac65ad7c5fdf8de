"""Unstructured magnitude and N:M pruning, the pass contract and recipes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.compress.passes import (
    CompressionPass,
    PassResult,
    model_stats,
    run_pipeline,
    run_tensors,
)
from edgekit.compress.prune import (
    NMConfig,
    PruneConfig,
    prunable_layers,
    prune_nm,
    prune_unstructured,
    sparse_storage_bytes,
    weight_sparsity,
)
from edgekit.compress.recipe import STEP_TYPES, load_recipe, parse_recipe
from edgekit.core.errors import ConfigError
from edgekit.examples import digits
from edgekit.frontend.loader import load_model


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    # The shipped digits CNN: real trained weights, 5 weighted layers.
    return load_model(digits.example_model_path()).model


def _weights(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}


def test_global_50_percent_hits_the_target_and_spares_first_and_last(model):
    result = prune_unstructured(model, PruneConfig(sparsity=0.5))
    targeted = [lay.weight for lay in result.layers if not lay.skipped]
    assert targeted == ["conv2.weight", "conv3.weight", "fc1.weight"]
    assert abs(weight_sparsity(result.model, targeted) - 0.5) <= 0.01
    assert abs(result.sparsity - 0.5) <= 0.01
    w = _weights(result.model)
    assert np.count_nonzero(w["conv1.weight"]) == w["conv1.weight"].size  # first layer untouched
    assert np.count_nonzero(w["fc2.weight"]) == w["fc2.weight"].size  # last layer untouched
    # Global scope: layers differ, the smallest magnitudes went first.
    per_layer = {lay.node: lay.sparsity for lay in result.layers if not lay.skipped}
    assert len({round(s, 2) for s in per_layer.values()}) > 1
    kept = np.concatenate([np.abs(w[n][w[n] != 0]) for n in targeted])
    orig = _weights(model)
    dropped = np.concatenate([np.abs(orig[n][w[n] == 0]) for n in targeted])
    assert dropped.max() <= kept.min()
    # Dense tensors: same MACs and dense bytes; the sparse format would pay.
    assert model_stats(result.model) == model_stats(model)
    assert result.sparse_bytes < result.dense_bytes


def test_layer_scope_and_per_layer_overrides(model):
    result = prune_unstructured(
        model, PruneConfig(sparsity=0.5, scope="layer", per_layer={"fc1": 0.8}, include_first_last=True)
    )
    got = {lay.node: lay.sparsity for lay in result.layers}
    assert set(got) == {"conv1", "conv2", "conv3", "fc1", "fc2"}
    assert abs(got["fc1"] - 0.8) < 0.001
    for name in ("conv1", "conv2", "conv3", "fc2"):
        assert abs(got[name] - 0.5) < 0.01, (name, got[name])


def test_exclusion_by_name_and_op_type(model):
    by_name = prune_unstructured(model, PruneConfig(0.5, exclude=("conv3",)))
    assert {lay.node: lay.skipped for lay in by_name.layers}["conv3"] == "excluded"
    by_op = prune_unstructured(model, PruneConfig(0.5, exclude=("Gemm",)))
    assert [lay.node for lay in by_op.layers if not lay.skipped] == ["conv2", "conv3"]
    with pytest.raises(ConfigError, match="nope"):
        prune_unstructured(model, PruneConfig(0.5, exclude=("nope",)))
    with pytest.raises(ConfigError, match="per_layer"):
        prune_unstructured(model, PruneConfig(0.5, per_layer={"nope": 0.1}))


def test_pruned_model_still_runs_and_predicts(model):
    data = digits.load_digits_data()
    x = {"input": data.x_test[:200]}
    ref = run_tensors(model, x)["logits"].argmax(1)
    out = run_tensors(prune_unstructured(model, PruneConfig(0.5)).model, x)["logits"].argmax(1)
    assert np.mean(ref == out) > 0.9


def test_nm_2_4_along_the_reduction_axis(model):
    result = prune_nm(model, NMConfig.parse("2:4"))
    w = _weights(result.model)
    conv = w["conv2.weight"]  # [O, I, kh, kw]: blocks of 4 input channels
    blocks = np.moveaxis(conv, 1, -1).reshape(-1, 4)
    assert np.all(np.count_nonzero(blocks, axis=1) <= 2)
    assert np.count_nonzero(blocks) == blocks.size // 2
    fc = w["fc1.weight"]  # Gemm transB=1: [N, K], K is axis 1
    assert np.all(np.count_nonzero(fc.reshape(fc.shape[0], -1, 4), axis=2) == 2)
    # The two largest magnitudes of each block survive.
    orig = np.moveaxis(_weights(model)["conv2.weight"], 1, -1).reshape(-1, 4)
    top2 = np.sort(np.argsort(-np.abs(orig), axis=1)[:, :2], axis=1)
    kept = np.sort(np.argsort(-np.abs(blocks), axis=1)[:, :2], axis=1)
    assert np.array_equal(top2, kept)


def test_nm_skips_layers_it_cannot_block(model):
    result = prune_nm(model, NMConfig(n=2, m=4, include_first_last=True))
    reasons = {lay.node: lay.skipped for lay in result.layers}
    assert "not a multiple of 4" in reasons["conv1"]  # a single input channel
    assert reasons["conv2"] == reasons["fc2"] == ""
    nothing = prune_nm(model, NMConfig(n=1, m=3, include_first_last=True))
    assert not nothing.modified and nothing.model is model and nothing.sparsity == 0.0
    assert all("not a multiple of 3" in lay.skipped for lay in nothing.layers)


@pytest.mark.parametrize("text", ["2-4", "4:2", "a:b", "0:4"])
def test_bad_nm_patterns(text):
    with pytest.raises(ConfigError):
        NMConfig.parse(text)


@pytest.mark.parametrize("kwargs", [{"sparsity": 1.0}, {"sparsity": "half"}, {"scope": "net"}, {"exclude": "fc1"}])
def test_bad_prune_config(kwargs):
    with pytest.raises(ConfigError):
        PruneConfig(**kwargs)


def test_sparse_storage_bytes_counts_bitmask_and_values():
    w = np.zeros(64, np.float32)
    w[:10] = 1.0
    assert sparse_storage_bytes(w) == 8 + 10 * 4
    # A dense tensor costs more sparse than dense: the report must show that.
    assert sparse_storage_bytes(np.ones(64, np.float32)) > 64 * 4


def test_prunable_layers_lists_weighted_ops(model):
    assert [n.name for _, n, _ in prunable_layers(model)] == ["conv1", "conv2", "conv3", "fc1", "fc2"]


# --------------------------------------------------------------------------- #
# Pass contract and recipes (no model work beyond the digits CNN)
# --------------------------------------------------------------------------- #


class _Identity(CompressionPass):
    name = "identity"

    def run(self, model, ctx):
        return PassResult(model, False)


def test_pipeline_records_before_and_after(model):
    result = run_pipeline(model, [STEP_TYPES.get("prune")({"sparsity": 0.5}, "t"), _Identity()])
    first, second = result.steps
    assert first.modified and not second.modified
    assert first.before == first.after  # zeros in dense tensors: no fewer params or MACs
    assert first.details["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert first.latency_ms_after is None and first.latency_speedup is None
    first.latency_ms_before, first.latency_ms_after = 2.0, 2.0  # the caller fills these in
    assert first.latency_speedup == 1.0 and first.to_json()["latency_ms_after"] == 2.0
    assert result.to_json()["chain"]["config"]["steps"] == ["prune", "identity"]


def test_recipe_file_parses_into_passes(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        '[[steps]]\ntype = "prune-structured"\nratio = 0.3\n\n'
        '[[steps]]\ntype = "recover"\nmethod = "refit"\nridge = 0.001\n\n'
        '[[steps]]\ntype = "low-rank"\nmethod = "svd"\nrank_energy = 0.9\n\n'
        '[[steps]]\ntype = "prune-nm"\npattern = "2:4"\n'
    )
    recipe = load_recipe(path)
    assert [s.name for s in recipe.steps] == ["prune-structured", "recover", "low-rank", "prune-nm"]
    assert recipe.steps[0].config.ratio == 0.3 and recipe.steps[3].config.m == 4
    assert recipe.to_json()["steps"][1]["method"] == "refit"


def test_recipe_yaml(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "r.yaml"
    path.write_text("steps:\n  - type: prune\n    sparsity: 0.4\n    exclude: [fc1]\n")
    step = load_recipe(path).steps[0]
    assert step.config.sparsity == 0.4 and step.config.exclude == ("fc1",)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"steps": [{"type": "prune", "sparsity": 0.5, "sparsty": 1}]}, r"steps\[0\]: unknown key\(s\) sparsty"),
        ({"steps": [{"type": "prune-structured", "ratio": 2}]}, r"steps\[0\]: structured pruning ratio"),
        ({"steps": [{"type": "prune"}, {"type": "prunee"}]}, r"steps\[1\]: unknown compression_step 'prunee'"),
        ({"steps": [{"ratio": 0.1}]}, r"needs a 'type'"),
        ({"steps": []}, "no steps"),
        ({"steps": [{"type": "recover", "method": "magic"}]}, "unknown recovery method"),
        ({"stepz": []}, "unknown top-level"),
    ],
)
def test_recipe_errors_name_the_step_and_key(data, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse_recipe(data, "r.toml")
    assert "r.toml" in str(info.value) and info.value.hint


def test_missing_or_broken_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[steps]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(bad)

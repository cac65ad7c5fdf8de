"""Structured channel pruning: dependency analysis, valid smaller models, and
exact equivalence with the unpruned model whose removed channels are zeroed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compress.channel_groups import analyze_channel_groups
from edgekit.compress.passes import model_stats, run_tensors, tensor_shapes
from edgekit.compress.structured import StructuredConfig, prune_channels
from edgekit.core.errors import ConfigError
from edgekit.frontend.loader import load_model


def _check_valid(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _masked_reference(model: onnx.ModelProto, maps: dict) -> onnx.ModelProto:
    """The unpruned model with every removed channel forced to zero after each
    node that produces it: a pruned model must compute exactly this."""
    shapes = tensor_shapes(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, rename = [], {}
    for node in out.graph.node:
        for k, name in enumerate(node.input):
            node.input[k] = rename.get(name, name)
        nodes.append(node)
        for name in node.output:
            if name not in maps:
                continue
            axis, kept = maps[name]
            shape = shapes[name]
            mask = np.zeros(shape[axis], np.float32)
            mask[kept] = 1.0
            mshape = [1] * len(shape)
            mshape[axis] = shape[axis]
            const = f"{name}__mask_c"
            out.graph.initializer.append(numpy_helper.from_array(mask.reshape(mshape), const))
            nodes.append(helper.make_node("Mul", [name, const], [f"{name}__masked"]))
            rename[name] = f"{name}__masked"
    assert not any(o.name in rename for o in out.graph.output)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    del out.graph.value_info[:]
    return out


def _randomize(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Light models carry constant placeholder weights; channel ranking and
    numeric checks need distinct ones."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 1:
            scale = 1.0 / np.sqrt(max(1, arr[0].size)) if arr.ndim > 1 else 0.1
            init.CopyFrom(numpy_helper.from_array((rng.standard_normal(arr.shape) * scale).astype(np.float32), init.name))
    return out


def _conv(name, x, cin, cout, k, rng, inits, group=1, stride=1, bias=True):
    w = f"{name}.w"
    inits.append(numpy_helper.from_array((rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin * k * k / group)).astype(np.float32), w))
    ins = [x, w]
    if bias:
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"{name}.b"))
        ins.append(f"{name}.b")
    return helper.make_node("Conv", ins, [name], name, kernel_shape=[k, k], pads=[k // 2] * 4,
                            strides=[stride, stride], group=group)


def coupled_cnn(seed: int = 0) -> onnx.ModelProto:
    """A CNN with every coupling the analysis must handle: Conv->BN->Relu,
    depthwise conv, residual Add, squeeze-excitation Mul, Concat, a
    per-channel constant, Reshape->Gemm, MatMul."""
    rng = np.random.default_rng(seed)
    inits: list = []
    c = _conv
    n = [
        c("conv_a", "x", 3, 16, 3, rng, inits),
        helper.make_node("BatchNormalization", ["conv_a", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn"], "bn"),
        helper.make_node("Relu", ["bn"], ["a"], "relu_a"),
        c("dw", "a", 16, 16, 3, rng, inits, group=16),
        helper.make_node("Relu", ["dw"], ["b"], "relu_b"),
        c("conv_b", "b", 16, 16, 1, rng, inits),
        helper.make_node("Add", ["a", "conv_b"], ["r1"], "res"),
        helper.make_node("GlobalAveragePool", ["r1"], ["gap"], "gap"),
        c("se1", "gap", 16, 4, 1, rng, inits),
        helper.make_node("Relu", ["se1"], ["se1r"], "se1_relu"),
        c("se2", "se1r", 4, 16, 1, rng, inits),
        helper.make_node("Sigmoid", ["se2"], ["se"], "se_sig"),
        helper.make_node("Mul", ["r1", "se"], ["r2"], "se_mul"),
        c("conv_c", "r2", 16, 8, 1, rng, inits),
        c("conv_d", "r2", 16, 8, 3, rng, inits),
        helper.make_node("Concat", ["conv_c", "conv_d"], ["cat"], "cat", axis=1),
        c("conv_e", "cat", 16, 12, 3, rng, inits, stride=2),
        helper.make_node("Relu", ["conv_e"], ["e"], "relu_e"),
        helper.make_node("Add", ["e", "chan_bias"], ["f"], "chan_add"),
        helper.make_node("Reshape", ["f", "flat_shape"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "fc1.w", "fc1.b"], ["fc1"], "fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["h1"], "relu_h1"),
        helper.make_node("MatMul", ["h1", "mm.w"], ["mm"], "mm"),
        helper.make_node("Relu", ["mm"], ["h2"], "relu_h2"),
        helper.make_node("Gemm", ["h2", "fc2.w", "fc2.b"], ["y"], "fc2"),
    ]
    f32 = lambda a, name: inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))  # noqa: E731
    f32(rng.uniform(0.5, 1.5, 16), "bn.s")
    f32(rng.standard_normal(16) * 0.1, "bn.b")
    f32(rng.standard_normal(16) * 0.1, "bn.m")
    f32(rng.uniform(0.5, 1.5, 16), "bn.v")
    f32(rng.standard_normal((12, 1, 1)) * 0.1, "chan_bias")
    inits.append(numpy_helper.from_array(np.array([1, 12 * 8 * 8], np.int64), "flat_shape"))
    f32(rng.standard_normal((32, 768)) / np.sqrt(768), "fc1.w")
    f32(rng.standard_normal(32) * 0.1, "fc1.b")
    f32(rng.standard_normal((32, 24)) / np.sqrt(32), "mm.w")
    f32(rng.standard_normal((24, 10)) / np.sqrt(24), "fc2.w")
    f32(rng.standard_normal(10) * 0.1, "fc2.b")
    graph = helper.make_graph(n, "coupled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _inputs(model: onnx.ModelProto, n: int = 4, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return {inp.name: rng.standard_normal([n, *shape[1:]]).astype(np.float32)}


def _assert_equivalent(model, result, n=4):
    data = _inputs(model, n)
    ref = run_tensors(_masked_reference(model, result.channel_maps), data)
    got = run_tensors(result.model, data)
    for name, r in ref.items():
        np.testing.assert_allclose(got[name], r, rtol=1e-4, atol=1e-4 * float(np.abs(r).max()))


def test_coupled_groups_are_found():
    groups = {tuple(g.producers): g for g in analyze_channel_groups(coupled_cnn())}
    # Residual Add and the SE gate tie three producers into one group.
    assert groups[("conv_a", "conv_b", "se2")].prunable
    assert groups[("conv_c",)].prunable and groups[("conv_d",)].prunable
    assert groups[("fc1",)].prunable and groups[("mm",)].prunable
    assert not groups[("fc2",)].prunable and "graph output" in groups[("fc2",)].reason


def test_coupled_cnn_prunes_to_an_equivalent_smaller_model():
    model = coupled_cnn()
    result = prune_channels(model, StructuredConfig(ratio=0.5))
    assert result.modified
    _check_valid(result.model)
    before, after = model_stats(model), model_stats(result.model)
    assert after.macs < 0.5 * before.macs and after.params < before.params
    inits = {i.name: i.dims for i in result.model.graph.initializer}
    assert list(inits["conv_a.w"]) == [8, 3, 3, 3] and list(inits["dw.w"]) == [8, 1, 3, 3]
    assert list(inits["fc1.w"]) == [16, 6 * 64] and list(inits["bn.s"]) == [8]
    dw = next(n for n in result.model.graph.node if n.name == "dw")
    assert helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == 8
    shape = next(i for i in result.model.graph.initializer if i.name == "flat_shape")
    assert numpy_helper.to_array(shape).tolist() == [1, 6 * 64]
    _assert_equivalent(model, result)


def test_exclusion_keeps_a_layer_and_its_group():
    model = coupled_cnn()
    result = prune_channels(model, StructuredConfig(ratio=0.5, exclude=("conv_b",)))
    inits = {i.name: list(i.dims) for i in result.model.graph.initializer}
    assert inits["conv_b.w"] == [16, 16, 1, 1] and inits["conv_a.w"] == [16, 3, 3, 3]
    assert inits["conv_c.w"][0] == 4  # other groups still shrink
    _assert_equivalent(model, result)
    with pytest.raises(ConfigError, match="no_such_node"):
        prune_channels(model, StructuredConfig(ratio=0.5, exclude=("no_such_node",)))


@pytest.mark.parametrize("kwargs", [{"ratio": 1.0}, {"ratio": -0.1}, {"criterion": "random"}, {"round_to": 0}])
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ConfigError):
        StructuredConfig(**kwargs)


def test_round_to_and_bn_criterion():
    result = prune_channels(coupled_cnn(), StructuredConfig(ratio=0.3, round_to=4, criterion="bn"))
    kept = {tuple(g.producers): len(g.kept) for g in result.groups if g.kept is not None}
    assert kept[("conv_a", "conv_b", "se2")] == 12  # 16 - 4 = 12, already a multiple of 4
    assert kept[("fc1",)] == 24  # 32 - 9 = 23 -> 24


def test_ppocr_cls_30_percent_channels_cuts_a_quarter_of_the_macs(ppocr_cls_path: Path):
    prepared = load_model(ppocr_cls_path, {"x": (1, 3, 48, 192)})
    model = prepared.model
    result = prune_channels(model, StructuredConfig(ratio=0.3))
    _check_valid(result.model)
    before, after = model_stats(model), model_stats(result.model)
    reduction = 1 - after.macs / before.macs
    assert reduction >= 0.25, f"MACs {before.macs} -> {after.macs} ({reduction:.1%})"
    assert after.params < before.params
    # Same input and output shapes; the pruned graph runs and computes exactly
    # what the original computes with the removed channels zeroed.
    assert [o.name for o in result.model.graph.output] == [o.name for o in model.graph.output]
    _assert_equivalent(model, result, n=2)


def test_squeezenet_concat_groups(light_models_dir: Path):
    model = _randomize(load_model(light_models_dir / "light_squeezenet.onnx").model)
    result = prune_channels(model, StructuredConfig(ratio=0.3))
    _check_valid(result.model)
    assert model_stats(result.model).macs < 0.75 * model_stats(model).macs
    _assert_equivalent(model, result, n=1)


def test_nothing_prunable_is_reported_honestly():
    # A single conv feeding the output: its channels cannot shrink.
    rng = np.random.default_rng(0)
    inits: list = []
    node = _conv("only", "x", 3, 4, 3, rng, inits)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("only", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = prune_channels(model, StructuredConfig(ratio=0.5))
    assert not result.modified and result.model is model
    assert "graph output" in result.notes[0]

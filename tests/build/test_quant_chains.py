"""Elementwise chains of one tensor are quantized at their ends only (QuantConfig.chain_ends_only).

Hard-swish written as ``Add(+3) -> Clip(0, 6) -> Mul(x) -> Div(6)`` must come
out of the quantizer as ``DequantizeLinear -> float chain -> QuantizeLinear``:
no int8 rounding on ``x + 3`` or on the product, which edgekit's integer
lowering then runs as one 256-entry table, within 1 LSB of onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime")

from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.compress.chains import find_unary_chains  # noqa: E402
from edgekit.core.errors import ConfigError  # noqa: E402

SHAPE = [1, 3, 8, 8]
CHAIN = ("hs_add", "hs_clip", "hs_mul", "hs_div")
INTERIOR = ("x3", "relu6", "prod")  # hard-swish's tensors that only the chain reads


def _c(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def _hard_swish_model(seed: int = 0) -> onnx.ModelProto:
    """Conv -> hard-swish (four ops) -> 1x1 Conv."""
    rng = np.random.default_rng(seed)
    inits = [
        _c("w1", rng.standard_normal((8, 3, 3, 3)) * 0.6),
        _c("b1", rng.standard_normal(8) * 0.5),
        _c("w2", rng.standard_normal((4, 8, 1, 1)) * 0.4),
        _c("b2", rng.standard_normal(4) * 0.1),
        _c("three", 3.0), _c("zero", 0.0), _c("six", 6.0),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["h", "three"], ["x3"], name="hs_add"),
        helper.make_node("Clip", ["x3", "zero", "six"], ["relu6"], name="hs_clip"),
        helper.make_node("Mul", ["h", "relu6"], ["prod"], name="hs_mul"),
        helper.make_node("Div", ["prod", "six"], ["hs"], name="hs_div"),
        helper.make_node("Conv", ["hs", "w2", "b2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes, "hard_swish",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _calibration(n: int = 24, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).uniform(-2, 2, (n, *SHAPE[1:])).astype(np.float32)}


def _quantized(config: QuantConfig) -> onnx.ModelProto:
    return quantize(_hard_swish_model(), config, calibration=_calibration()).model


def _quantize_inputs(model: onnx.ModelProto) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_hard_swish_chain_is_quantized_at_its_ends_only() -> None:
    qmodel = _quantized(QuantConfig())
    quantized = _quantize_inputs(qmodel)
    assert not quantized & set(INTERIOR), f"an int8 rounding inside hard-swish: {sorted(quantized & set(INTERIOR))}"
    assert {"h", "hs"} <= quantized  # the chain's source and output stay int8
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    nodes = {n.name: n for n in qmodel.graph.node}
    assert all(name in nodes for name in CHAIN)
    # Both reads of the source are its dequantized int8 value (one table input).
    for name in ("hs_add", "hs_mul"):
        assert producer[nodes[name].input[0]].op_type == "DequantizeLinear"
    assert [n.op_type for n in qmodel.graph.node if n.op_type == "Clip"] == ["Clip"]  # the Clip is still there


def test_rounding_inside_chains_is_what_the_switch_turns_back_on() -> None:
    """The contrast: onnxruntime's quantizer alone rounds ``x + 3`` and the product."""
    quantized = _quantize_inputs(_quantized(QuantConfig(chain_ends_only=False)))
    assert quantized & set(INTERIOR), sorted(quantized)


def test_chain_ends_only_is_validated() -> None:
    with pytest.raises(ConfigError, match="chain_ends_only"):
        QuantConfig(chain_ends_only="yes")  # type: ignore[arg-type]
    assert QuantConfig().to_json()["chain_ends_only"] is True


def _gelu_silu_se_model() -> onnx.ModelProto:
    """GELU (Div -> Erf -> Add -> Mul -> Mul), SiLU (x * Sigmoid(x)), a
    squeeze-excite gate (a product with a function of another tensor) and a
    per-channel scale."""
    inits = [_c("r2", 1.4142135), _c("one", 1.0), _c("half", 0.5), _c("scale", np.ones((1, 3, 1, 1)))]
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Div", ["a", "r2"], ["g1"], name="g_div"),
        helper.make_node("Erf", ["g1"], ["g2"], name="g_erf"),
        helper.make_node("Add", ["g2", "one"], ["g3"], name="g_add"),
        helper.make_node("Mul", ["a", "g3"], ["g4"], name="g_mul"),
        helper.make_node("Mul", ["g4", "half"], ["gelu"], name="g_half"),
        helper.make_node("Sigmoid", ["gelu"], ["s1"], name="s_sig"),
        helper.make_node("Mul", ["gelu", "s1"], ["silu"], name="s_mul"),
        helper.make_node("Sigmoid", ["z"], ["gate"], name="gate"),
        helper.make_node("Mul", ["silu", "gate"], ["se"], name="se_mul"),
        helper.make_node("Mul", ["se", "scale"], ["y"], name="per_channel"),
    ]
    graph = helper.make_graph(
        nodes, "chains",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, SHAPE) for n in ("x", "z")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_chains_are_functions_of_one_tensor_with_scalar_constants() -> None:
    chains = find_unary_chains(_gelu_silu_se_model())
    # Relu, GELU and SiLU are all functions of x: one chain, read outside only
    # through its SiLU output. The gate is one op (nothing to gain), the SE
    # product reads functions of x and of z, the per-channel scale is no scalar.
    assert len(chains) == 1, chains
    (chain,) = chains
    assert chain.source == "x"
    assert chain.nodes == ("relu", "g_div", "g_erf", "g_add", "g_mul", "g_half", "s_sig", "s_mul")
    assert chain.outputs == ("silu",)


def test_a_tensor_read_outside_the_chain_is_one_of_its_outputs() -> None:
    model = _hard_swish_model()
    model.graph.output.append(helper.make_tensor_value_info("x3", TensorProto.FLOAT, SHAPE[:1] + [8, 8, 8]))
    (chain,) = find_unary_chains(model)
    assert chain.source == "h"
    assert chain.outputs == ("x3", "hs")


def test_ppocr_hard_swishes_have_no_rounding_inside(ppocr_cls_path) -> None:
    """The real model (rapidocr wheel): its 18 hard-swishes, each read as int8 at both ends only."""
    from edgekit.frontend.loader import load_model

    fp32 = load_model(str(ppocr_cls_path), {"x": (1, 3, 48, 192)}).model
    chains = find_unary_chains(fp32)
    ops = {n.name: n.op_type for n in fp32.graph.node}
    assert len(chains) == 18 and all([ops[n] for n in c.nodes] == ["Add", "Clip", "Mul", "Div"] for c in chains)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 48, 192)).astype(np.float32)
    qmodel = quantize(fp32, QuantConfig(), calibration={"x": x}, eval_data={"x": x[:1]}).model
    quantized = _quantize_inputs(qmodel)
    inside = {o for c in chains for n in fp32.graph.node if n.name in c.nodes for o in n.output} - {
        o for c in chains for o in c.outputs
    }
    assert inside and not quantized & inside, sorted(quantized & inside)
    assert all(c.source in quantized for c in chains)
    # The last hard-swish feeds a MaxPool, which onnxruntime quantizes after the
    # pool; the table lowering takes the pool along (max commutes with quantize).
    readers = {i: n.op_type for n in qmodel.graph.node for i in n.input}
    assert all(o in quantized or readers[o] == "MaxPool" for c in chains for o in c.outputs)


tvm = pytest.importorskip("tvm")


def test_hard_swish_chain_runs_as_one_table_within_1_lsb_of_onnxruntime() -> None:
    from edgekit.compiler.backends.llvm.relax_build import build_cpu
    from edgekit.compiler.importer import import_onnx
    from edgekit.frontend.loader import load_model

    qmodel = _quantized(QuantConfig())
    q_out = next(n.output[0] for n in qmodel.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "hs")
    qmodel.graph.output.append(helper.make_tensor_value_info(q_out, TensorProto.INT8, [1, 8, 8, 8]))
    feeds = {"x": np.random.default_rng(7).uniform(-2.5, 2.5, SHAPE).astype(np.float32)}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(qmodel.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        [q_out], feeds
    )[0]
    assert len(np.unique(want)) > 50  # the table is exercised over much of its range

    prepared = load_model(qmodel)
    mod, weights, report = import_onnx(prepared)
    assert report is not None and not report["kept_float"], report["kept_float"]
    tables = [c for c in report["rewritten"] if c["kind"] == "lut"]
    assert len(tables) == 1 and {"add", "maximum", "minimum", "multiply", "divide"} <= set(tables[0]["detail"].split("+")), tables
    built = build_cpu(mod, tvm.target.Target({"kind": "llvm"}), weights)
    out = tvm.relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(feeds["x"]), *built.params)
    names = [s.name for s in prepared.outputs]
    got = out[names.index(q_out)].numpy()
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert diff.max() <= 1, diff.max()


@pytest.mark.parametrize("flag, ends_only", [([], True), (["--no-chain-ends-only"], False),
                                             (["--chain-ends-only"], True)])  # fmt: skip
def test_compress_flag_reaches_the_config(tmp_path, capsys, flag, ends_only) -> None:
    import json

    from edgekit.cli.main import main

    onnx.save(_hard_swish_model(), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "cal.npz", **_calibration())
    assert main(["compress", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8",
                 "--calibration", str(tmp_path / "cal.npz"), *flag, "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["steps"][0]["config"]["chain_ends_only"] is ends_only
    rounded_inside = _quantize_inputs(onnx.load(str(tmp_path / "q.onnx"))) & set(INTERIOR)
    assert bool(rounded_inside) is not ends_only


def test_compress_chain_flag_needs_quantize(tmp_path, capsys) -> None:
    from edgekit.cli.main import main

    onnx.save(_hard_swish_model(), str(tmp_path / "m.onnx"))
    assert main(["compress", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx"), "--no-chain-ends-only"]) == 2
    assert "--chain-ends-only" in capsys.readouterr().err

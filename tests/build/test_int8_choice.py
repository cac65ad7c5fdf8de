"""Per-layer int8/fp32 choice (edgekit.compiler.backends.llvm.int8_choice, edgekit.frontend.qdq_graph).

The decision logic is checked with an injected cost provider (no timing);
the float rewrite against onnxruntime running the same graph; one test
measures for real on this machine and checks only that the choice agrees
with the times it recorded.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _host_cpu import AVX2_FLAGS
from onnx import TensorProto, helper, numpy_helper

from edgekit.cli.main import main
from edgekit.compiler.backend import BuildResult, CompileOptions
from edgekit.compiler.driver import compile_model
from edgekit.compiler.backends.llvm.int8_choice import LAYER_MARGIN, HostTimer, Int8Choice, choose, runs_here
from edgekit.compress import QuantConfig, quantize
from edgekit.core.cpu_features import TEST_FLAGS_ENV
from edgekit.core.errors import ConfigError
from edgekit.core.profiles import load_profiles
from edgekit.frontend.loader import load_model
from edgekit.frontend.qdq_graph import QDQ_OPS, float_layers, float_model, layer_subgraph, quantized_nodes
from edgekit.runtime.runner import run_package

#: Compiled output vs onnxruntime on the same (mixed) graph, in steps of the
#: output's quantization scale: the int8 layers are within 1 LSB of
#: onnxruntime's float QDQ arithmetic, and a float layer's last-bit float
#: differences can move its output quantization by one step (docs/int8-choice.md).
LSB_TOLERANCE = 2


def _fp32_model() -> onnx.ModelProto:
    """conv 3->16 (3x3, relu), conv 16->32 (1x1), depthwise 3x3, Gemm."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [
        numpy_helper.from_array(w(16, 3, 3, 3), "w1"),
        numpy_helper.from_array(w(16, 1)[:, 0], "b1"),
        numpy_helper.from_array(w(32, 16, 1, 1), "w2"),
        numpy_helper.from_array(w(32, 1, 3, 3), "w3"),
        numpy_helper.from_array(w(10, 32 * 4 * 4), "wf"),
        numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Conv", ["c2", "w3"], ["c3"], name="dw3", group=32, pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c3", "shape"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "choice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("choice")
    fp32 = d / "fp32.onnx"
    onnx.save(_fp32_model(), str(fp32))
    cal = {"x": np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32)}
    int8 = quantize(str(fp32), QuantConfig(), calibration=cal).save(d / "int8.onnx")
    return {"fp32": fp32, "int8": Path(int8)}


def _x(seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, 1, 3, 8, 8)).astype(np.float32)


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": s})[0] for s in x])


def _output_scale(model: onnx.ModelProto) -> float:
    inits = {t.name: t for t in model.graph.initializer}
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "y")
    return float(numpy_helper.to_array(inits[dq.input[1]]))


class FakeCost:
    """Injected costs: per-layer (int8_ms, fp32_ms) and whole-build times."""

    source = "modeled"
    timing = "injected by the test"

    def __init__(self, layers: dict[str, tuple[float, float]], model: dict[str, float]) -> None:
        self.layers, self.model, self.asked = layers, model, []

    def layer_times(self, probe):
        self.asked.append(probe.node)
        return self.layers.get(probe.node, (1.0, 2.0))

    def model_times(self, builds, prepared):
        assert set(builds) <= set(self.model), set(builds)
        return {k: self.model[k] for k in builds}


def _package_model(pkg: Path) -> onnx.ModelProto:
    with zipfile.ZipFile(pkg) as z:
        return onnx.load_from_string(z.read("model.onnx"))


def _compiled(pkg: Path, x: np.ndarray) -> np.ndarray:
    outs = run_package(pkg, {"x": x[:, 0]})[0]
    return np.concatenate([o["y"] for o in outs])


# --------------------------------------------------------------------------- #
# The float rewrite of chosen layers (frontend)
# --------------------------------------------------------------------------- #


def test_a_float_layer_reads_float_weights_and_keeps_its_output_quantization(models):
    q = onnx.load(models["int8"])
    assert quantized_nodes(q) == ["conv1", "conv2", "dw3", "fc"]
    mixed = float_layers(q, ["conv2"])
    onnx.checker.check_model(mixed)
    prod = {o: n for n in mixed.graph.node for o in n.output}
    conv2 = next(n for n in mixed.graph.node if n.name == "conv2")
    inits = {t.name for t in mixed.graph.initializer}
    assert conv2.input[1] in inits and mixed.graph.initializer  # the dequantized float weight
    assert prod[conv2.input[0]].op_type == "Mul"  # explicit dequantize of conv1's int8 output
    assert {c.op_type for c in mixed.graph.node if conv2.output[0] in c.input} == {"QuantizeLinear"}
    # Only conv2's two DequantizeLinear nodes (weight, input) are gone, and the graph
    # computes what the QDQ graph does (conv2 in float on the same int8 inputs, its
    # output quantized the same way).
    assert sum(n.op_type == "DequantizeLinear" for n in mixed.graph.node) == sum(
        n.op_type == "DequantizeLinear" for n in q.graph.node) - 2  # fmt: skip
    x = _x()
    lsb = _output_scale(q)
    assert np.abs(_ort(mixed, x) - _ort(q, x)).max() <= lsb * 1.0001


def test_the_fp32_model_of_the_same_graph_has_no_quantization_left(models):
    q = onnx.load(models["int8"])
    f = float_model(q)
    onnx.checker.check_model(f)
    assert not any(n.op_type in QDQ_OPS for n in f.graph.node)
    # Only the int8 rounding is gone (the saturation stays, as Clip): close to the
    # fp32 model, and the QDQ graph's error against it is larger.
    x = _x()
    ref = _ort(onnx.load(models["fp32"]), x)
    err_float = np.abs(_ort(f, x) - ref).max()
    err_int8 = np.abs(_ort(q, x) - ref).max()
    assert err_float < err_int8


def test_adjacent_float_layers_pass_float_values_through_a_clip(models):
    q = onnx.load(models["int8"])
    both = float_layers(q, ["conv1", "conv2"])
    conv2 = next(n for n in both.graph.node if n.name == "conv2")
    prod = {o: n for n in both.graph.node for o in n.output}
    clip = prod[conv2.input[0]]
    assert clip.op_type == "Clip"
    # Bounds are Constant nodes, not initializers: TVM imports initializers as run-time
    # weights, and a Clip with weight bounds did not fuse (the fp32 build of PP-OCR cls
    # ran 2.9x slower than its fp32 model that way).
    lo = prod[clip.input[1]]
    assert lo.op_type == "Constant"
    assert float(numpy_helper.to_array(lo.attribute[0].t)) == pytest.approx(0.0, abs=1e-6)  # the folded Relu


def test_a_layer_cut_out_reads_and_writes_int8(models):
    q = load_model(str(models["int8"])).model
    sub = layer_subgraph(q, "conv2")
    assert sub is not None
    assert [i.type.tensor_type.elem_type for i in sub.graph.input] == [TensorProto.INT8]
    assert [o.type.tensor_type.elem_type for o in sub.graph.output] == [TensorProto.INT8]
    assert [n.op_type for n in sub.graph.node if n.op_type not in QDQ_OPS] == ["Conv"]


def test_a_layer_with_run_time_scales_is_not_cut_out_and_float_layers_leaves_it():
    # ONNX's QLinearMatMul tests feed scales and zero points as graph inputs.
    f, i8 = TensorProto.FLOAT, TensorProto.INT8
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["a", "a_scale", "a_zp"], ["af"], name="dqa"),
         helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zp"], ["bf"], name="dqb"),
         helper.make_node("MatMul", ["af", "bf"], ["y"], name="mm"),
         helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zp"], ["yq"], name="qy")],
        "runtime_scales",
        [helper.make_tensor_value_info("a", i8, [2, 4]), helper.make_tensor_value_info("a_scale", f, []),
         helper.make_tensor_value_info("a_zp", i8, [])],
        [helper.make_tensor_value_info("yq", i8, [2, 3])],
        [numpy_helper.from_array(np.ones((4, 3), np.int8), "b"), numpy_helper.from_array(np.float32(0.1), "b_scale"),
         numpy_helper.from_array(np.int8(0), "b_zp"), numpy_helper.from_array(np.float32(0.2), "y_scale"),
         numpy_helper.from_array(np.int8(0), "y_zp")],
    )  # fmt: skip
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert layer_subgraph(model, "mm") is None
    mixed = float_layers(model, ["mm"])
    onnx.checker.check_model(mixed)
    mm = next(n for n in mixed.graph.node if n.name == "mm")
    assert mm.input[0] == "af"  # a per-tensor scale known only at run time: the DequantizeLinear stays


# --------------------------------------------------------------------------- #
# The decision (injected costs)
# --------------------------------------------------------------------------- #


def test_a_layer_faster_in_fp32_is_kept_in_fp32_and_the_outputs_still_match(models, tmp_path):
    cost = FakeCost({"conv2": (3.0, 1.0)}, {"int8": 2.0, "mixed": 1.5, "fp32": 1.8})
    pkg = tmp_path / "m.ekpkg"
    choice = Int8Choice.of(compile_model(str(models["int8"]), "host", pkg, int8_cost=cost).manifest)
    assert choice.decision == "mixed" and choice.source == "modeled"
    assert [(c.node, c.int8_ms, c.fp32_ms, c.kept) for c in choice.fp32_layers] == [("conv2", 3.0, 1.0, "fp32")]
    assert "fp32 3.00x faster" in choice.fp32_layers[0].reason
    assert choice.model_ms == {"int8": 2.0, "mixed": 1.5, "fp32": 1.8}
    # The package holds (and runs) the mixed graph; compiled vs onnxruntime on it.
    compiled_graph = _package_model(pkg)
    conv2 = next(n for n in compiled_graph.graph.node if n.name == "conv2")
    assert conv2.input[1] in {t.name for t in compiled_graph.graph.initializer}
    x = _x()
    got, want = _compiled(pkg, x), _ort(compiled_graph, x)
    lsb = _output_scale(compiled_graph)
    assert np.abs(got - want).max() <= LSB_TOLERANCE * lsb * 1.0001, np.abs(got - want).max() / lsb


def test_the_whole_model_guard_keeps_fp32_when_its_build_is_faster(models, tmp_path):
    cost = FakeCost({"conv2": (3.0, 1.0)}, {"int8": 2.0, "mixed": 1.5, "fp32": 1.0})
    pkg = tmp_path / "f.ekpkg"
    choice = Int8Choice.of(compile_model(str(models["int8"]), "host", pkg, int8_cost=cost).manifest)
    assert choice.decision == "fp32"
    assert "whole-model guard" in choice.reason
    assert {c.node for c in choice.fp32_layers} == {"conv1", "conv2", "dw3", "fc"}
    compiled_graph = _package_model(pkg)
    assert not any(n.op_type in QDQ_OPS for n in compiled_graph.graph.node)
    x = _x()
    np.testing.assert_allclose(_compiled(pkg, x), _ort(compiled_graph, x), rtol=1e-4, atol=1e-4)


def test_int8_stays_when_it_is_fastest_and_a_slower_mixed_build_is_not_taken(models):
    prepared = load_model(str(models["int8"]))
    built: list[onnx.ModelProto] = []

    def build(p, progress):
        built.append(p.model)
        return BuildResult(members={}, runtime="test")

    cost = FakeCost({"dw3": (2.0, 1.0)}, {"int8": 1.0, "mixed": 1.2, "fp32": 1.5})
    host = load_profiles().board("host")
    final, _, choice = choose(prepared, host, load_profiles().target_of(host), CompileOptions(), build,
                              lambda s, m: None, cost=cost)  # fmt: skip
    assert choice.decision == "int8" and final.model is prepared.model
    assert not choice.fp32_layers
    dw3 = next(c for c in choice.layers if c.node == "dw3")
    assert dw3.kept == "int8" and "mixed build measured slower" in dw3.reason
    assert len(built) == 3  # int8, mixed, fp32
    # Largest layers are timed first; a margin below LAYER_MARGIN is noise, not a reason.
    assert cost.asked[0] in ("conv2", "fc")


def test_no_mixed_build_when_the_layers_gains_are_within_the_models_noise(models):
    prepared = load_model(str(models["int8"]))
    built = []
    cost = FakeCost({"dw3": (0.02, 0.01)}, {"int8": 1.0, "fp32": 2.0})  # saves 1 % of the model
    host = load_profiles().board("host")
    _, _, choice = choose(prepared, host, load_profiles().target_of(host), CompileOptions(),
                          lambda p, prog: built.append(p) or BuildResult({}, "test"), lambda s, m: None,
                          cost=cost)  # fmt: skip
    assert len(built) == 2  # int8 and fp32 only
    assert choice.decision == "int8" and not choice.fp32_layers
    assert "no mixed build" in choice.reason


def test_a_difference_inside_the_noise_margin_keeps_int8(models):
    prepared = load_model(str(models["int8"]))
    near = 1.0 - LAYER_MARGIN / 2
    cost = FakeCost({n: (1.0, near) for n in ("conv1", "conv2", "dw3", "fc")}, {"int8": 1.0, "fp32": 2.0})
    host = load_profiles().board("host")
    _, _, choice = choose(prepared, host, load_profiles().target_of(host), CompileOptions(),
                          lambda p, prog: BuildResult({}, "test"), lambda s, m: None, cost=cost)  # fmt: skip
    assert choice.decision == "int8" and not choice.fp32_layers
    assert all("noise margin" in c.reason for c in choice.layers)


def test_a_variant_that_does_not_build_leaves_the_int8_build(models):
    from edgekit.core.errors import CompileError

    prepared = load_model(str(models["int8"]))

    def build(p, progress):
        if p.model is not prepared.model:
            raise CompileError("no kernel for this", hint="-")
        return BuildResult({}, "test")

    cost = FakeCost({"conv2": (3.0, 1.0)}, {"int8": 1.0})
    host = load_profiles().board("host")
    final, _, choice = choose(prepared, host, load_profiles().target_of(host), CompileOptions(), build,
                              lambda s, m: None, cost=cost)  # fmt: skip
    assert choice.decision == "int8" and final.model is prepared.model
    assert "fp32 build of the same graph failed (no kernel for this)" in choice.reason
    assert "mixed build (1 layers fp32) failed" in choice.reason
    assert choice.model_ms == {}


def test_elementwise_layers_are_not_timed_alone(tmp_path):
    # SiLU: the integer lowering makes x * sigmoid(x) one table, which a Mul cut out alone cannot show.
    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Sigmoid", ["c"], ["s"], name="sig"),
         helper.make_node("Mul", ["c", "s"], ["y"], name="mul")],
        "silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "silu.onnx")
    cal = {"x": np.random.default_rng(4).standard_normal((8, 3, 8, 8)).astype(np.float32)}
    int8 = quantize(str(tmp_path / "silu.onnx"), QuantConfig(), calibration=cal).save(tmp_path / "silu8.onnx")
    prepared = load_model(str(int8))
    assert set(quantized_nodes(prepared.model)) == {"conv", "sig", "mul"}
    cost = FakeCost({}, {"int8": 1.0, "fp32": 2.0})
    host = load_profiles().board("host")
    _, _, choice = choose(prepared, host, load_profiles().target_of(host), CompileOptions(),
                          lambda p, prog: BuildResult({}, "test"), lambda s, m: None, cost=cost)  # fmt: skip
    assert cost.asked == ["conv"]
    assert (choice.elementwise, choice.not_timed, choice.candidates) == (2, 0, 3)


def test_a_board_that_cannot_run_here_stays_int8_unmeasured(models):
    profiles = load_profiles()
    pi = profiles.board("raspberry-pi-4")
    assert not runs_here(profiles.target_of(pi))
    assert runs_here(profiles.target_of(profiles.board("host")))
    prepared = load_model(str(models["int8"]))
    builds = []
    _, _, choice = choose(prepared, pi, profiles.target_of(pi), CompileOptions(),
                          lambda p, prog: builds.append(p) or BuildResult({}, "test"), lambda s, m: None)  # fmt: skip
    assert len(builds) == 1
    assert (choice.source, choice.decision, choice.not_timed) == ("unknown", "int8", 4)
    assert "cannot run on this machine" in choice.reason


def test_an_x86_target_with_features_this_cpu_lacks_is_not_run(monkeypatch):
    import edgekit.compiler.backends.llvm.int8_choice as ic
    from edgekit.core.profiles import load_profiles as lp

    host_target = lp().target_of(lp().board("host"))
    monkeypatch.setenv(TEST_FLAGS_ENV, AVX2_FLAGS)  # a Haswell-class CPU
    skx = dataclasses.replace(host_target, tvm={"kind": "llvm", "mcpu": "skylake-avx512"})
    hsw = dataclasses.replace(host_target, tvm={"kind": "llvm", "mcpu": "haswell"})
    assert not ic.runs_here(skx)
    assert ic.runs_here(hsw)


# --------------------------------------------------------------------------- #
# The option
# --------------------------------------------------------------------------- #


def test_options_are_validated():
    assert CompileOptions().int8_choice == "auto"
    with pytest.raises(ConfigError, match="int8_choice must be one of auto, int8"):
        CompileOptions(int8_choice="fast")
    with pytest.raises(ConfigError, match="int8_choice_budget_s"):
        CompileOptions(int8_choice_budget_s=-1)


def test_cli_option_and_json_shape(models, tmp_path, capsys):
    pkg = tmp_path / "o.ekpkg"
    assert main(["compile", str(models["int8"]), "--board", "host", "-o", str(pkg), "--int8-choice", "int8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    choice = out["int8_choice"]
    assert set(choice) >= {"mode", "source", "decision", "reason", "fp32_layers", "timed_layers", "model_ms",
                           "candidates", "not_timed", "elementwise", "extra_seconds", "timing"}  # fmt: skip
    assert (choice["mode"], choice["source"], choice["decision"], choice["candidates"]) == ("int8", "off", "int8", 4)
    assert out["options"]["int8_choice"] == "int8"
    with pytest.raises(SystemExit) as exc:  # argparse refuses an unknown choice
        main(["compile", str(models["int8"]), "--board", "host", "-o", str(pkg), "--int8-choice", "fp16"])
    assert exc.value.code == 2


def test_a_model_with_only_quantize_dequantize_is_not_timed():
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
        "qdq", [helper.make_tensor_value_info("x", f, [1, 8])], [helper.make_tensor_value_info("y", f, [1, 8])],
        [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(128), "z")])  # fmt: skip
    prepared = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    builds = []
    host = load_profiles().board("host")
    _, _, choice = choose(prepared, host, load_profiles().target_of(host), CompileOptions(),
                          lambda p, prog: builds.append(p) or BuildResult({}, "test"), lambda s, m: None,
                          cost=FakeCost({}, {}))  # fmt: skip
    assert len(builds) == 1 and (choice.decision, choice.source, choice.candidates) == ("int8", "off", 0)


def test_an_fp32_model_gets_no_int8_choice(models, tmp_path):
    assert Int8Choice.of(compile_model(str(models["fp32"]), "host", tmp_path / "p.ekpkg").manifest) is None


# --------------------------------------------------------------------------- #
# Real measurement on this machine
# --------------------------------------------------------------------------- #


def test_measured_choice_agrees_with_its_own_times(models, tmp_path, capsys):
    pkg = tmp_path / "auto.ekpkg"
    assert main(["compile", str(models["int8"]), "--board", "host", "-o", str(pkg), "--json"]) == 0
    choice = json.loads(capsys.readouterr().out)["int8_choice"]
    assert choice["source"] == "measured" and choice["mode"] == "auto"
    assert choice["timed_layers"], choice
    for layer in choice["timed_layers"]:
        assert layer["int8_ms"] > 0 and layer["fp32_ms"] > 0
        if choice["decision"] != "fp32" and "timing unreliable" not in layer["reason"]:
            kept_fp32 = layer["fp32_ms"] < layer["int8_ms"] * (1 - LAYER_MARGIN)
            assert (layer["kept"] == "fp32") == (kept_fp32 and choice["decision"] == "mixed"), layer
    t = choice["model_ms"]
    if choice["noise"]["status"] == "noisy":  # other jobs loaded this machine: int8 unless fp32 won every round
        assert choice["decision"] != "mixed" and choice["noise"]["advice"], choice
    else:
        assert t[choice["decision"]] == min(t.values()), t  # the kept build is never slower than the others
    assert choice["noise"]["measurements"] >= 1 and choice["noise"]["rounds"] >= 5
    assert isinstance(HostTimer.timing, str) and choice["timing"] == HostTimer.timing

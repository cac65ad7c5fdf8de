"""The fp32 build of a QDQ graph has no more ops than the float model it was quantized from (issue #14).

``edgekit compile --int8-choice auto`` compiles a model in fp32 when that is
faster (the whole-model guard); that build must not be slower than the fp32
model. It was: the float graph kept every ``QuantizeLinear``'s range as a
``Clip`` (PP-OCR cls: 146 Clips where the fp32 model has 33 activations,
1.07x its time in AVX2 code). Checked on behaviour: the candidate graph's ops
against the original float model's, and its outputs against onnxruntime
running that model.
"""

from __future__ import annotations

import collections
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.backends.llvm.int8_choice import Int8Choice
from edgekit.compiler.driver import compile_model
from edgekit.compress import QuantConfig, quantize
from edgekit.frontend.qdq_graph import QDQ_OPS, float_layers, float_model

#: Nodes that compute nothing (TVM's importer folds them away).
_NO_KERNEL = {"Constant", "Identity"}


def _fp32_model() -> onnx.ModelProto:
    """conv+relu, a squeeze-excite gate (pool, conv, hard-sigmoid, mul), conv + hard-swish, conv+ReLU6, Gemm."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    consts = {"three": np.float32(3.0), "six": np.float32(6.0), "zero": np.float32(0.0), "shape": np.array([1, -1])}
    inits = [numpy_helper.from_array(w(8, 3, 3, 3), "w1"), numpy_helper.from_array(w(8, 8, 1, 1), "wse"),
             numpy_helper.from_array(w(8, 8, 3, 3) * 3, "w2"), numpy_helper.from_array(w(8, 8, 1, 1) * 4, "w3"),
             numpy_helper.from_array(w(10, 8 * 8 * 8), "wf")]  # fmt: skip
    inits += [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("GlobalAveragePool", ["r1"], ["g"], name="pool"),
        n("Conv", ["g", "wse"], ["s"], name="se"),
        n("HardSigmoid", ["s"], ["hs"], name="gate", alpha=1 / 6),
        n("Mul", ["r1", "hs"], ["m"], name="excite"),
        n("Conv", ["m", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        n("Add", ["c2", "three"], ["a"], name="hswish_add"),
        n("Clip", ["a", "zero", "six"], ["cl"], name="hswish_clip"),
        n("Mul", ["c2", "cl"], ["hm"], name="hswish_mul"),
        n("Div", ["hm", "six"], ["h"], name="hswish_div"),
        n("Conv", ["h", "w3"], ["c3"], name="conv3"),
        n("Clip", ["c3", "zero", "six"], ["r6"], name="relu6"),
        n("Reshape", ["r6", "shape"], ["f"], name="flat"),
        n("Gemm", ["f", "wf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "candidate", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("candidate")
    fp32 = d / "fp32.onnx"
    onnx.save(_fp32_model(), str(fp32))
    cal = {"x": (3 * np.random.default_rng(1).standard_normal((16, 3, 8, 8))).astype(np.float32)}
    int8 = quantize(str(fp32), QuantConfig(), calibration=cal).save(d / "int8.onnx")
    return {"fp32": fp32, "int8": Path(int8)}


def _kernels(model: onnx.ModelProto) -> collections.Counter:
    """Compute ops by type; a Relu counts as the Clip(0, hi) the float graph restores it as."""
    return collections.Counter(
        "Clip" if node.op_type == "Relu" else node.op_type for node in model.graph.node if node.op_type not in _NO_KERNEL
    )


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _clip_bounds(model: onnx.ModelProto, clip: onnx.NodeProto) -> tuple[float, float]:
    consts = {n.output[0]: float(numpy_helper.to_array(n.attribute[0].t)) for n in model.graph.node if n.op_type == "Constant"}
    return consts[clip.input[1]], consts[clip.input[2]]


def test_the_quantizer_folded_the_activations(models):
    # What makes the rewrite necessary: onnxruntime's quantizer removes a Relu or a
    # Clip after a layer; its range lives on in the QuantizeLinear's zero point.
    names = {n.name for n in onnx.load(models["int8"]).graph.node}
    assert not names & {"relu1", "relu6"}


def test_the_fp32_candidate_has_no_op_the_float_model_lacks(models):
    fp32, q = onnx.load(models["fp32"]), onnx.load(models["int8"])
    cand = float_model(q)
    onnx.checker.check_model(cand)
    assert not any(n.op_type in QDQ_OPS for n in cand.graph.node)
    assert _kernels(cand) == _kernels(fp32)


def test_folded_activations_come_back_with_their_bounds(models):
    cand = float_model(onnx.load(models["int8"]))
    prod = {o: n for n in cand.graph.node for o in n.output}
    restored = {prod[n.input[0]].name: _clip_bounds(cand, n) for n in cand.graph.node
                if n.op_type == "Clip" and n.name.endswith("__ek_fp32")}  # fmt: skip
    # conv1's Relu and conv3's ReLU6 (and hard-swish's Clip(0, 6), where the quantizer
    # folded it); nothing after the pool of a Relu output, the hard-sigmoid or the
    # excite Mul (all already >= 0).
    assert {"conv1", "conv3"} <= set(restored) <= {"conv1", "conv3", "hswish_add"}
    assert all(lo == 0.0 for lo, _ in restored.values())
    assert restored["conv3"][1] == pytest.approx(6.0, rel=0.02)  # ReLU6's upper bound (calibration reached it)


def test_the_fp32_candidate_computes_the_float_model(models):
    # Only the weights' quantization is left: the candidate is far closer to the float
    # model than the QDQ graph (with the range clamps it was saturated at calibration).
    fp32, q = onnx.load(models["fp32"]), onnx.load(models["int8"])
    x = (4 * np.random.default_rng(2).standard_normal((1, 3, 8, 8))).astype(np.float32)
    ref = _ort(fp32, x)
    err_cand = np.abs(_ort(float_model(q), x) - ref).max()
    err_int8 = np.abs(_ort(q, x) - ref).max()
    assert err_cand < 0.5 * err_int8, (err_cand, err_int8)


def test_a_float_layer_feeding_an_int8_layer_keeps_its_quantization(models):
    q = onnx.load(models["int8"])
    mixed = float_layers(q, ["conv2"])
    conv2 = next(n for n in mixed.graph.node if n.name == "conv2")
    readers = [n for n in mixed.graph.node if conv2.output[0] in n.input]
    assert {n.op_type for n in readers} == {"QuantizeLinear"}  # its int8 consumers read what they read before


class _Fp32Fastest:
    source, timing = "modeled", "injected by the test"

    def layer_times(self, probe):
        return (1.0, 2.0)

    def model_times(self, builds, prepared):
        return {"int8": 2.0, "mixed": 2.0, "fp32": 1.0}


def test_the_whole_model_guard_compiles_the_candidate(models, tmp_path):
    pkg = tmp_path / "g.ekpkg"
    choice = Int8Choice.of(compile_model(str(models["int8"]), "host", pkg, int8_cost=_Fp32Fastest()).manifest)
    assert choice.decision == "fp32"
    with zipfile.ZipFile(pkg) as z:
        compiled = onnx.load_from_string(z.read("model.onnx"))
    assert _kernels(compiled) == _kernels(onnx.load(models["fp32"]))

"""Integer-only lowering of QDQ models, compiled for the host and checked against onnxruntime.

Reference: onnxruntime with ``ORT_DISABLE_ALL`` — it executes the QDQ graph as
written (DequantizeLinear, float op, QuantizeLinear rounding half to even).
Every QuantizeLinear output of each model is exposed as an extra graph output
so that every int8 activation, not only the logits, is compared.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime")
quant = pytest.importorskip("onnxruntime.quantization")
tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402
from tvm.relax.frontend import detach_params  # noqa: E402
from tvm.relax.frontend.onnx import from_onnx  # noqa: E402

from edgekit.compiler.integer import lower_to_integer_with_report  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.frontend.logits import end_at_logits  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TARGET = {"kind": "llvm"}


# --------------------------------------------------------------------------
# QDQ models
# --------------------------------------------------------------------------


class _Reader(quant.CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _randomize(model: onnx.ModelProto, seed: int) -> None:
    """Replaces placeholder weights by He-normal ones, so activations are meaningful."""
    rng = np.random.default_rng(seed)
    out = []
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.ndim >= 2:
            fan_in = int(np.prod(a.shape[1:])) if a.ndim == 4 else a.shape[0]
            a = (rng.standard_normal(a.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif a.dtype == np.float32 and a.ndim == 1:
            a = (rng.standard_normal(a.shape) * 0.05).astype(np.float32)
        out.append(numpy_helper.from_array(a, init.name))
    del model.graph.initializer[:]
    model.graph.initializer.extend(out)


def _expose_int8(model: onnx.ModelProto, limit: int = 16) -> None:
    """Adds up to ``limit`` QuantizeLinear outputs, evenly spread over the graph, as outputs.

    Each extra output is a tensor the compiled model must materialize, which
    slows the build; a spread sample still covers early, middle and late layers.
    """
    outputs = {o.name for o in model.graph.output}
    names = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.output[0] not in outputs]
    picks = sorted({int(i) for i in np.linspace(0, len(names) - 1, num=min(limit, len(names)))}) if names else []
    for i in picks:
        model.graph.output.append(helper.make_tensor_value_info(names[i], TensorProto.INT8, None))


@dataclass
class QdqModel:
    name: str
    model: onnx.ModelProto
    input_name: str
    shape: tuple[int, ...]
    eval_inputs: list[np.ndarray]


def _quantize(name: str, fp32: onnx.ModelProto, calib: list[np.ndarray], evals: list[np.ndarray],
              tmp: Path, *, per_channel: bool = True) -> QdqModel:  # fmt: skip
    fp32.ir_version = max(fp32.ir_version, 8)  # IR < 4 wants initializers listed as inputs
    src, dst = tmp / f"{name}_f32.onnx", tmp / f"{name}_qdq.onnx"
    onnx.save(fp32, src)
    input_name = fp32.graph.input[0].name
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs "consider pre-processing" advice on the root logger
    try:
        quant.quantize_static(
            str(src), str(dst), _Reader([{input_name: c} for c in calib]), quant_format=quant.QuantFormat.QDQ,
            per_channel=per_channel, activation_type=quant.QuantType.QInt8, weight_type=quant.QuantType.QInt8,
        )  # fmt: skip
    finally:
        root.setLevel(level)
    model = onnx.load(dst)
    _expose_int8(model)
    return QdqModel(name, model, input_name, tuple(calib[0].shape), evals)


def _random_inputs(shape: tuple[int, ...], n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _helper_cnn() -> onnx.ModelProto:
    """conv/relu, a residual Add, Concat, Clip, x * Sigmoid(y), Max/Average/GlobalAverage pool, Gemm."""
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []

    def weight(name: str, *shape: int) -> str:
        fan_in = int(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32), name))
        return name

    def bias(name: str, n: int) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), name))
        return name

    def conv(x: str, out: str, cin: int, cout: int, k: int, pad: int, stride: int = 1) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, weight(out + "_w", cout, cin, k, k), bias(out + "_b", cout)], [out],
                                pads=[pad] * 4, strides=[stride] * 2)  # fmt: skip

    lo = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "clip_lo")
    hi = numpy_helper.from_array(np.array(6.0, dtype=np.float32), "clip_hi")
    inits += [lo, hi]
    nodes = [
        conv("x", "c1", 3, 8, 3, 1), helper.make_node("Relu", ["c1"], ["r1"]),
        conv("r1", "c2", 8, 8, 3, 1), helper.make_node("Add", ["c2", "r1"], ["res"]),
        helper.make_node("Relu", ["res"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        conv("p1", "ca", 8, 4, 1, 0), conv("p1", "cb", 8, 4, 3, 1),
        helper.make_node("Clip", ["cb", "clip_lo", "clip_hi"], ["cb6"]),
        helper.make_node("Concat", ["ca", "cb6"], ["cat"], axis=1),
        # A gate from a second tensor: x * sigmoid(x) alone is one table, not an integer product.
        helper.make_node("Concat", ["cb6", "ca"], ["cat2"], axis=1),
        helper.make_node("Sigmoid", ["cat2"], ["sig"]), helper.make_node("Mul", ["cat", "sig"], ["silu"]),
        helper.make_node("AveragePool", ["silu"], ["ap"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        conv("ap", "c3", 8, 16, 3, 1, stride=1), helper.make_node("GlobalAveragePool", ["c3"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", weight("fc_w", 10, 16), bias("fc_b", 10)], ["y"], transB=1),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "helper_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def tmp_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qdq")


def _build_model(name: str, tmp: Path, light_dir: Path, ppocr: Path | None) -> QdqModel:
    if name.startswith("helper_cnn"):
        shape = (1, 3, 16, 16)
        return _quantize(name, _helper_cnn(), _random_inputs(shape, 8, 1), _random_inputs(shape, 2, 2), tmp,
                         per_channel=name.endswith("per_channel"))  # fmt: skip
    if name == "digits_cnn":
        from edgekit.examples.digits import load_digits_data

        data = load_digits_data()
        pm = load_model(REPO / "edgekit" / "examples" / "digits_cnn.onnx")
        calib = [data.x_train[i : i + 1] for i in range(16)]
        evals = [data.x_test[i : i + 1] for i in range(8)]
        return _quantize(name, pm.model, calib, evals, tmp)
    if name in ("squeezenet", "inception_v1"):
        file, shape = {"squeezenet": ("light_squeezenet.onnx", (1, 3, 64, 64)),
                       "inception_v1": ("light_inception_v1.onnx", (1, 3, 224, 224))}[name]  # fmt: skip
        pm = load_model(light_dir / file, {"data_0": shape})
        _randomize(pm.model, seed=3)
        end_at_logits(pm.model)
        return _quantize(name, pm.model, _random_inputs(shape, 4, 4), _random_inputs(shape, 1, 5), tmp)
    assert name == "ppocr_cls" and ppocr is not None
    shape = (1, 3, 48, 192)
    pm = load_model(ppocr, {"x": shape})
    end_at_logits(pm.model)
    return _quantize(name, pm.model, _random_inputs(shape, 4, 6), _random_inputs(shape, 2, 7), tmp)


# --------------------------------------------------------------------------
# Compile and compare
# --------------------------------------------------------------------------


def _import(qm: QdqModel) -> tvm.IRModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_onnx(qm.model, shape_dict={qm.input_name: list(qm.shape)},
                         dtype_dict={qm.input_name: "float32"}, keep_params_in_input=True)  # fmt: skip


def _compile_and_run(mod: tvm.IRModule, inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    mod, params = detach_params(mod)
    exe = tvm.compile(mod, target=tvm.target.Target(TARGET))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    weights = [tvm.runtime.tensor(p.numpy()) for p in params.get("main", [])]
    results = []
    for x in inputs:
        out = vm["main"](tvm.runtime.tensor(x), *weights)
        items = [out] if hasattr(out, "numpy") else list(out)
        results.append([np.asarray(o.numpy()) for o in items])
    return results


def _run_ort(qm: QdqModel, level: "ort.GraphOptimizationLevel") -> list[list[np.ndarray]]:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(qm.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [sess.run(None, {qm.input_name: x}) for x in qm.eval_inputs]


def _output_scale(model: onnx.ModelProto) -> float:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.output[0] == model.graph.output[0].name and node.op_type == "DequantizeLinear":
            return float(inits[node.input[1]])
    raise AssertionError("graph output is not a DequantizeLinear")


@dataclass
class Agreement:
    output_within_1: float
    output_max_lsb: float
    int8_within_1: float
    int8_max_lsb: int
    int8_elements: int


def _agreement(qm: QdqModel, ours: list[list[np.ndarray]], ref: list[list[np.ndarray]]) -> Agreement:
    scale = _output_scale(qm.model)
    out_lsb = np.concatenate([np.abs(o[0].astype(np.float64) - r[0]).ravel() / scale for o, r in zip(ours, ref)])
    diffs = [np.abs(o.astype(np.int32) - r.astype(np.int32)).ravel()
             for run_o, run_r in zip(ours, ref) for o, r in zip(run_o[1:], run_r[1:])]  # fmt: skip
    int8 = np.concatenate(diffs)
    return Agreement(float(np.mean(out_lsb <= 1 + 1e-3)), float(out_lsb.max()), float(np.mean(int8 <= 1)),
                     int(int8.max()), int8.size)  # fmt: skip


_cache: dict[str, tuple[QdqModel, object, list[list[np.ndarray]]]] = {}


@pytest.fixture(scope="module")
def lowered(tmp_models: Path, light_models_dir: Path, request: pytest.FixtureRequest):
    """name -> (QDQ model, lowering report, outputs of the compiled integer model)."""

    def get(name: str, ppocr: Path | None = None):
        if name not in _cache:
            qm = _build_model(name, tmp_models, light_models_dir, ppocr)
            mod, report = lower_to_integer_with_report(_import(qm))
            _cache[name] = (qm, report, _compile_and_run(mod, qm.eval_inputs))
        return _cache[name]

    yield get
    _cache.clear()


@pytest.mark.parametrize("name", ["helper_cnn_per_channel", "helper_cnn_per_tensor"])
def test_helper_cnn_is_integer_only_and_matches_onnxruntime(lowered, name: str) -> None:
    qm, report, ours = lowered(name)
    kinds = report.counts()
    for kind in ("conv2d", "matmul", "add", "mul", "concat", "max_pool2d", "avg_pool2d", "mean", "lut"):
        assert kinds.get(kind, 0) >= 1, f"{kind} not lowered: {report.summary()} {report.kept_float}"
    assert report.kept_float == []
    # Only the model boundary stays float: quantize of the input, dequantize of the outputs.
    assert set(report.float_ops) <= {"quantize", "dequantize"}
    assert report.float_ops["quantize"] == 1
    agree = _agreement(qm, ours, _run_ort(qm, ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
    assert agree.output_within_1 == 1.0 and agree.int8_within_1 >= 0.999, agree


# Inception v1 at 224x224 takes about a minute to build on two cores: opt in.
_INCEPTION = pytest.mark.skipif(
    os.environ.get("EDGEKIT_TEST_INCEPTION") != "1", reason="set EDGEKIT_TEST_INCEPTION=1 (builds a 224x224 model)"
)
REAL_MODELS = ["digits_cnn", "squeezenet", "ppocr_cls", pytest.param("inception_v1", marks=[pytest.mark.slow, _INCEPTION])]
# Inception's LRN stays float on both sides, and TVM's float LRN differs from
# onnxruntime's by an LSB now and then; deep random-weight layers amplify that
# (the un-lowered float QDQ build shows the same internal differences), so only
# its output, not every internal tensor, is held to the 1-LSB bound.
_FLOAT_LAYERS_INSIDE = {"inception_v1"}


@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_model_matches_onnxruntime_within_one_lsb(lowered, ppocr_cls_path: Path, name: str) -> None:
    qm, report, ours = lowered(name, ppocr_cls_path)
    assert report.counts().get("conv2d", 0) >= 3
    agree = _agreement(qm, ours, _run_ort(qm, ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
    logging.getLogger(__name__).info("%s: %s; %s", name, agree, report.summary())
    assert agree.output_within_1 >= 0.999, agree
    if name not in _FLOAT_LAYERS_INSIDE:
        assert agree.int8_within_1 >= 0.999, agree


def test_lowering_report_names_float_chains_and_why(lowered, ppocr_cls_path: Path) -> None:
    _, report, _ = lowered("ppocr_cls", ppocr_cls_path)
    # HardSwish's "/ 6" is left unquantized by onnxruntime, so the MaxPool reads
    # a float tensor; quantize(max_pool(f(x))) == max_pool(quantize(f(x))), so
    # the chain becomes a table and an int8 max_pool2d: only the model
    # boundary stays float.
    assert report.kept_float == [], report.summary()
    assert any(c.kind == "lut" and "max_pool2d" in c.detail for c in report.rewritten)
    assert set(report.float_ops) <= {"quantize", "dequantize"}

    # A chain with no integer rule (Softmax) stays float and the report says why.
    s, z = np.float32(0.05), np.int8(-3)
    inits = [numpy_helper.from_array(np.array(s), "s"), numpy_helper.from_array(np.array(z), "z")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"]),
        helper.make_node("Softmax", ["xf"], ["p"], axis=-1),
        helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"]),
        helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = from_onnx(model, shape_dict={"x": [1, 8]}, dtype_dict={"x": "float32"}, keep_params_in_input=True)
    _, report = lower_to_integer_with_report(mod)
    assert report.kept_float and all(c.detail for c in report.kept_float)
    assert any("softmax" in c.kind and "no integer" in c.detail for c in report.kept_float), report.kept_float


# --------------------------------------------------------------------------
# The lowered IR itself
# --------------------------------------------------------------------------


def _fused_conv_float_multiplies(mod: tvm.IRModule) -> dict[str, list[str]]:
    """Float multiplies inside every fused PrimFunc that contains a conv2d."""
    import tvm_ffi

    with tvm.target.Target(TARGET):
        lowered_mod = relax.get_pipeline("default")(mod)
    found: dict[str, list[str]] = {}
    for gv, func in lowered_mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or "conv2d" not in gv.name_hint:
            continue
        muls: list[str] = []
        tvm_ffi.structural_walk(func.body, (tvm.tirx.Mul, lambda n: muls.append(str(n.ty))))
        found[gv.name_hint] = [dtype for dtype in muls if "float" in dtype]
    return found


def test_no_float_multiply_remains_inside_a_quantized_conv(lowered) -> None:
    qm, _, _ = lowered("helper_cnn_per_channel")
    imported = _import(qm)
    mod, _ = lower_to_integer_with_report(imported)
    after = _fused_conv_float_multiplies(detach_params(mod)[0])
    assert len(after) >= 4, after.keys()
    offenders = {name: muls for name, muls in after.items() if muls}
    assert not offenders, f"float multiplies left in quantized convs: {offenders}"
    # The scan is not vacuous: the imported (float QDQ) convs do multiply in float.
    before = _fused_conv_float_multiplies(detach_params(imported)[0])
    assert any(before.values())


def test_weights_stay_parameters_and_detach_stays_consistent(lowered) -> None:
    qm, _, _ = lowered("helper_cnn_per_channel")
    imported = _import(qm)
    mod, _ = lower_to_integer_with_report(imported)
    func = mod["main"]
    values = list(func.attrs["params"])
    assert len(func.params) == 1 + len(values)
    assert len(values) < len(imported["main"].attrs["params"])  # float-only params were dropped
    dtypes = {str(v.ty.dtype) for v in func.params[1:]}
    assert "int8" in dtypes  # the int8 weights are still runtime parameters, not constants
    detached, params = detach_params(mod)
    assert "params" not in (detached["main"].attrs or {}) and len(params["main"]) == len(values)

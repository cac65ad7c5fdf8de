"""Small QDQ models for the NPU tests, built with onnx.helper and quantized by onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _conv(name: str, x: str, cin: int, cout: int, k: int, rng: np.random.Generator, *, stride: int = 1, group: int = 1, relu: bool = True):
    w = rng.normal(0, (2.0 / (cin // group * k * k)) ** 0.5, (cout, cin // group, k, k)).astype(np.float32)
    b = rng.normal(0, 0.1, cout).astype(np.float32)
    inits = [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
    nodes = [helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], name=name, kernel_shape=[k, k],
                              pads=[k // 2] * 4, strides=[stride, stride], group=group)]
    out = f"{name}.y"
    if relu:
        nodes.append(helper.make_node("Relu", [out], [f"{name}.r"], name=f"{name}_relu"))
        out = f"{name}.r"
    return nodes, inits, out


def mobile_resnet(channels: int = 16, size: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Conv, strided conv, depthwise conv, residual Add, ReLU, global pool and Gemm."""
    rng = np.random.default_rng(seed)
    c = channels
    nodes, inits = [], []
    for part in [
        _conv("stem", "x", 3, c, 3, rng),
        _conv("down", "stem.r", c, 2 * c, 3, rng, stride=2),
        _conv("dw", "down.r", 2 * c, 2 * c, 3, rng, group=2 * c),
        _conv("pw", "dw.r", 2 * c, 2 * c, 1, rng, relu=False),
    ]:
        nodes += part[0]
        inits += part[1]
    nodes.append(helper.make_node("Add", ["pw.y", "down.r"], ["res"], name="res_add"))
    nodes.append(helper.make_node("Relu", ["res"], ["res.r"], name="res_relu"))
    nodes.append(helper.make_node("GlobalAveragePool", ["res.r"], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat"))
    wf = rng.normal(0, 0.2, (10, 2 * c)).astype(np.float32)
    inits += [numpy_helper.from_array(wf, "fc.w"), numpy_helper.from_array(np.zeros(10, np.float32), "fc.b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "mobile_resnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def single_conv(cin: int, cout: int, size: int, k: int = 3, seed: int = 0, stride: int = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, out = _conv("conv", "x", cin, cout, k, rng, stride=stride)
    oh = (size + 2 * (k // 2) - k) // stride + 1
    graph = helper.make_graph(nodes, "single_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, cout, oh, oh])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def quantize_ort(model: onnx.ModelProto, *, samples: int = 4, seed: int = 0, symmetric: bool = False) -> onnx.ModelProto:
    """int8 QDQ with onnxruntime's quantize_static (int8 activations, per-channel symmetric weights)."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    data = [{inp.name: rng.normal(0, 1, shape).astype(np.float32)} for _ in range(samples)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(data)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
        return onnx.load(str(dst))


def int8_tensors(model: onnx.ModelProto) -> list[str]:
    """Every QuantizeLinear output of ``model`` (its int8 tensors), in graph order."""
    return [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]


def host_integer_outputs(model: onnx.ModelProto, feeds, extra: list[str], workdir):
    """Runs ``model`` compiled for ``host`` (integer-only lowering), with ``extra`` tensors as outputs too.

    ``feeds`` is one input dict (returns one output dict) or a list of them
    (returns a list; one compile).

    Every quantized layer stays int8 (``int8_choice="int8"``) and the
    requantization keeps the lowering's int64 fixed-point form: on x86 the
    host compile otherwise uses float32 scale-and-round
    (:mod:`edgekit.compiler.backends.llvm.requant`), which may round a value within
    ~2^-20 of a half-way point the other way -- the form Arm and RISC-V
    hosts, the MCUs and the NPU all share is the reference.
    """
    from pathlib import Path
    from unittest import mock

    import edgekit.compiler.backends.llvm.requant as cpu_requant
    from edgekit.compiler.backend import CompileOptions
    from edgekit.compiler.driver import compile_model
    from edgekit.package import open_package
    from edgekit.core.profiles import get_board
    from edgekit.runtime.runner import open_runner

    m = onnx.ModelProto()
    m.CopyFrom(model)
    infos = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(infos[name] for name in extra if name not in have)
    pkg = Path(workdir) / "host_integer.ekpkg"
    with mock.patch.object(cpu_requant, "uses_float_requant", lambda target: False):
        compile_model(m, "host", pkg, options=CompileOptions(int8_choice="int8"))
    board, _ = get_board("host")
    runner = open_runner(open_package(pkg), board)
    try:
        return [runner.run(f) for f in feeds] if isinstance(feeds, list) else runner.run(feeds)
    finally:
        runner.close()


def ppocr_det_trunk(size: int = 64, seed: int = 4) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """PP-OCRv6 det small from the ``rapidocr`` wheel (real weights) up to its head's
    transposed convolutions, int8 QDQ by onnxruntime, and one seeded input.

    The two 2x2 stride-2 ConvTranspose layers and the sigmoid at the end are
    cut off: ConvTranspose has no integer lowering, so both the NPU package
    and the host compile would run it in float32, each engine with its own
    summation order, and their quantized outputs then differ by a step where
    a value lands near a half-way point. What remains -- 83 convolutions
    (stem, depthwise-separable blocks with squeeze-excitation, the FPN neck
    with its upsampling and concatenation, the head's first conv) and what
    lies between them -- is all integer in the host compile.
    """
    from pathlib import Path

    import rapidocr

    from edgekit.frontend.loader import load_model

    path = Path(rapidocr.__file__).parent / "models" / "PP-OCRv6_det_small.onnx"
    full = load_model(str(path), {"x": (1, 3, size, size)}).model
    first_up = next(n for n in full.graph.node if n.op_type == "ConvTranspose")
    cut = first_up.input[0]
    infos = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(full).graph.value_info}
    trunk = onnx.utils.Extractor(full).extract_model([full.graph.input[0].name], [cut])
    del trunk.graph.output[:]
    trunk.graph.output.append(infos[cut])
    x = np.random.default_rng(seed).normal(0, 1, (1, 3, size, size)).astype(np.float32)
    return quantize_ort(trunk, samples=2, symmetric=True), {"x": x}


def ppocr_cls(seed: int = 4) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The PP-OCR text-angle classifier from the ``rapidocr`` wheel, int8 QDQ by onnxruntime, and one seeded input."""
    from pathlib import Path

    import rapidocr

    from edgekit.frontend.loader import load_model

    path = Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    fp32 = load_model(str(path), {"x": (1, 3, 48, 192)}).model
    x = np.random.default_rng(seed).normal(0, 1, (1, 3, 48, 192)).astype(np.float32)
    return quantize_ort(fp32, samples=2, symmetric=True), {"x": x}

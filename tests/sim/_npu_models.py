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

"""The four int8 layers of issue #15, as one-layer ONNX models with int8 I/O.

Each layer is written as onnxruntime's QDQ format writes it: an int8 input,
``DequantizeLinear``, the float op with per-channel symmetric int8 weights
(``DequantizeLinear`` of an int8 initializer) and an int32 bias of scale
``s_x * s_w``, ``Relu``, ``QuantizeLinear`` to an int8 output. The fp32 twin
of each layer has the same shapes and the dequantized weights. Seeded, so
instruction counts are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Layer", "LAYERS", "layer_model", "empty_model"]


@dataclass(frozen=True)
class Layer:
    """One benchmark layer: a Conv (``kernel``/``group``) or a Gemm (``kernel == 0``)."""

    name: str
    in_ch: int
    out_ch: int
    size: int  # input height = width (Conv); unused for Gemm
    kernel: int
    pad: int = 0
    stride: int = 1
    group: int = 1

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def macs(self) -> int:
        if self.kernel == 0:
            return self.in_ch * self.out_ch
        return self.out_ch * self.out_size**2 * (self.in_ch // self.group) * self.kernel**2

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.in_ch) if self.kernel == 0 else (1, self.in_ch, self.size, self.size)


LAYERS = (
    Layer("conv 3x3 16->32, 24x24, s1 p1", 16, 32, 24, 3, pad=1),
    Layer("conv 1x1 32->64, 12x12", 32, 64, 12, 1),
    Layer("depthwise 3x3, 32 ch, 24x24", 32, 32, 24, 3, pad=1, group=32),
    Layer("fully connected 576->128", 576, 128, 0, 0),
)


def _float_model(layer: Layer, x_name: str, y_name: str) -> list[onnx.NodeProto]:
    if layer.kernel == 0:
        core = helper.make_node("Gemm", [x_name, "w", "b"], ["acc"], transB=1)
    else:
        p = layer.pad
        core = helper.make_node("Conv", [x_name, "w", "b"], ["acc"], pads=[p, p, p, p],
                                strides=[layer.stride] * 2, group=layer.group)  # fmt: skip
    return [core, helper.make_node("Relu", ["acc"], [y_name])]


def _weights(layer: Layer, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int8 weights, per-channel scales, int32 bias (in units of the accumulator)."""
    if layer.kernel == 0:
        shape: tuple[int, ...] = (layer.out_ch, layer.in_ch)
    else:
        shape = (layer.out_ch, layer.in_ch // layer.group, layer.kernel, layer.kernel)
    wq = rng.integers(-127, 128, size=shape).astype(np.int8)
    fan_in = int(np.prod(shape[1:]))
    sw = (rng.uniform(0.5, 1.5, layer.out_ch) / (127 * np.sqrt(fan_in))).astype(np.float32)
    bq = rng.integers(-2000, 2000, size=layer.out_ch).astype(np.int32)
    return wq, sw, bq


_SX, _ZX, _ZY = np.float32(0.02), -3, -128


def _out_scale(fp32: onnx.ModelProto, layer: Layer, rng: np.random.Generator) -> np.float32:
    """An output scale that spreads the Relu'd outputs of a random input over the int8 range."""
    import onnxruntime as ort

    xq = rng.integers(-128, 128, size=layer.input_shape)
    x = ((xq - _ZX) * _SX).astype(np.float32)
    y = ort.InferenceSession(fp32.SerializeToString()).run(None, {"x": x})[0]
    return np.float32(max(float(y.max()), 1e-3) / 255.0)


def layer_model(layer: Layer, *, int8: bool, seed: int = 0) -> onnx.ModelProto:
    """The layer as an ONNX model: int8 QDQ with int8 I/O, or its fp32 twin."""
    rng = np.random.default_rng(seed)
    wq, sw, bq = _weights(layer, rng)
    axis_shape = (-1,) + (1,) * (wq.ndim - 1)
    if not int8:
        w = wq.astype(np.float32) * sw.reshape(axis_shape)
        b = bq.astype(np.float32) * _SX * sw
        nodes = _float_model(layer, "x", "y")
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b.astype(np.float32), "b")]
        dtype = TensorProto.FLOAT
    else:
        sy = _out_scale(layer_model(layer, int8=False, seed=seed), layer, rng)
        inits = [
            numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(sw, "sw"),
            numpy_helper.from_array(np.zeros(layer.out_ch, np.int8), "zw"),
            numpy_helper.from_array(bq, "bq"), numpy_helper.from_array((_SX * sw).astype(np.float32), "sb"),
            numpy_helper.from_array(np.zeros(layer.out_ch, np.int32), "zb"),
            numpy_helper.from_array(np.array(_SX, np.float32), "sx"), numpy_helper.from_array(np.array(_ZX, np.int8), "zx"),
            numpy_helper.from_array(np.array(sy, np.float32), "sy"), numpy_helper.from_array(np.array(_ZY, np.int8), "zy"),
        ]  # fmt: skip
        nodes = [
            helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
            helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["w"], axis=0),
            helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["b"], axis=0),
            *_float_model(layer, "xf", "yf"),
            helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"]),
        ]
        dtype = TensorProto.INT8
    out_shape = (1, layer.out_ch) if layer.kernel == 0 else (1, layer.out_ch, layer.out_size, layer.out_size)
    graph = helper.make_graph(
        nodes, "layer",
        [helper.make_tensor_value_info("x", dtype, list(layer.input_shape))],
        [helper.make_tensor_value_info("y", dtype, list(out_shape))],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def empty_model(*, int8: bool) -> onnx.ModelProto:
    """The smallest model with the same interface: a Relu over 4 elements."""
    dtype = TensorProto.INT8 if int8 else TensorProto.FLOAT
    if int8:
        inits = [numpy_helper.from_array(np.array(_SX, np.float32), "s"), numpy_helper.from_array(np.array(_ZX, np.int8), "z")]
        nodes = [
            helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]),
            helper.make_node("Relu", ["xf"], ["yf"]),
            helper.make_node("QuantizeLinear", ["yf", "s", "z"], ["y"]),
        ]
    else:
        inits, nodes = [], [helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(
        nodes, "empty", [helper.make_tensor_value_info("x", dtype, [1, 4])],
        [helper.make_tensor_value_info("y", dtype, [1, 4])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model

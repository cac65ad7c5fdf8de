"""Seeded generator of small, valid random ONNX graphs (issue 16, differential fuzzing).

NNSmith's idea, much reduced: grow a graph one operator at a time from a pool
of tensors whose shapes are known, choosing only operators whose shape
constraints the chosen inputs satisfy, so every graph is valid by
construction (checked with ``onnx.checker`` and ONNX shape inference).

Operators: Conv (incl. depthwise and strided/padded), MaxPool, AveragePool,
Add/Mul (tensor or broadcast constant), Relu, Clip, Concat (channels),
Reshape (4-D to 4-D, or flatten) and Gemm. Tensors stay small (at most 2,048
elements) so each graph fits a microcontroller's arena. ``int8=True``
quantizes the float graph to QDQ with edgekit's own quantizer (random
calibration data from the same seed).

Hand-written: NNSmith itself builds PyTorch/TensorFlow models with an SMT
solver and does not emit these ONNX graphs directly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["FuzzGraph", "random_graph", "MAX_ELEMENTS"]

#: Largest tensor a generated graph holds (elements).
MAX_ELEMENTS = 2048


@dataclass
class FuzzGraph:
    """One generated model.

    Attributes:
        seed: The seed it came from.
        model: The ONNX model (float32, or QDQ int8).
        int8: Whether it was quantized.
        ops: Op types in graph order (for the report).
        inputs: One input array per model input (seeded).
    """

    seed: int
    model: onnx.ModelProto
    int8: bool
    ops: list[str] = field(default_factory=list)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)


class _Builder:
    def __init__(self, rng: random.Random, nprng: np.random.Generator) -> None:
        self.rng = rng
        self.nprng = nprng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.consumed: set[str] = set()
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, prefix: str, shape: tuple[int, ...], scale: float = 0.5) -> str:
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array((self.nprng.standard_normal(shape) * scale).astype(np.float32), n))
        return n

    def add(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.shapes[out] = shape
        self.consumed.update(i for i in inputs if i in self.shapes)
        return out

    # -- operators: each returns the new tensor, or None when ``x`` does not fit it

    def conv(self, x: str, depthwise: bool) -> str | None:
        _, c, h, w = self.shapes[x]
        k = self.rng.choice([1, 3, 5] if min(h, w) >= 5 else [1, 3] if min(h, w) >= 3 else [1])
        stride = self.rng.choice([1, 1, 2])
        pads = [self.rng.randint(0, k // 2) for _ in range(4)]  # asymmetric padding too
        oh = (h + pads[0] + pads[2] - k) // stride + 1
        ow = (w + pads[1] + pads[3] - k) // stride + 1
        co = c if depthwise else self.rng.randint(1, 8)
        if oh < 1 or ow < 1 or co * oh * ow > MAX_ELEMENTS:
            return None
        group = c if depthwise else 1
        inputs = [x, self.const("w", (co, c // group, k, k), 1.0 / math.sqrt(k * k * c // group))]
        if self.rng.random() < 0.7:
            inputs.append(self.const("b", (co,)))
        return self.add("Conv", inputs, (1, co, oh, ow), kernel_shape=[k, k], strides=[stride, stride], pads=pads,
                        group=group)  # fmt: skip

    def pool(self, x: str) -> str | None:
        _, c, h, w = self.shapes[x]
        k = self.rng.choice([2, 3])
        if min(h, w) < k:
            return None
        stride = self.rng.choice([1, 2])
        pads = [self.rng.randint(0, k - 1) for _ in range(4)] if self.rng.random() < 0.4 else [0, 0, 0, 0]
        oh = (h + pads[0] + pads[2] - k) // stride + 1
        ow = (w + pads[1] + pads[3] - k) // stride + 1
        if self.rng.random() < 0.5:
            return self.add("MaxPool", [x], (1, c, oh, ow), kernel_shape=[k, k], strides=[stride, stride], pads=pads)
        return self.add("AveragePool", [x], (1, c, oh, ow), kernel_shape=[k, k], strides=[stride, stride], pads=pads,
                        count_include_pad=self.rng.choice([0, 1]))  # fmt: skip

    def binary(self, x: str) -> str:
        shape = self.shapes[x]
        same = [t for t, s in self.shapes.items() if s == shape and t != x]
        if same and self.rng.random() < 0.6:
            other = self.rng.choice(same)
        else:  # a broadcast constant: per channel for 4-D, per feature for 2-D
            other = self.const("k", (1, shape[1], 1, 1) if len(shape) == 4 else (1, shape[1]))
        return self.add(self.rng.choice(["Add", "Mul"]), [x, other], shape)

    def unary(self, x: str) -> str:
        if self.rng.random() < 0.6:
            return self.add("Relu", [x], self.shapes[x])
        lo = self.const("lo", (), 0.3)
        hi = self.name("hi")
        self.inits.append(numpy_helper.from_array(np.array(abs(self.nprng.standard_normal()) + 0.5, np.float32), hi))
        return self.add("Clip", [x, lo, hi], self.shapes[x])

    def concat(self, x: str) -> str | None:
        _, c, h, w = self.shapes[x]
        others = [t for t, s in self.shapes.items() if len(s) == 4 and s[2:] == (h, w)]
        other = self.rng.choice(others)
        co = c + self.shapes[other][1]
        if co * h * w > MAX_ELEMENTS:
            return None
        return self.add("Concat", [x, other], (1, co, h, w), axis=1)

    def reshape(self, x: str) -> str:
        _, c, h, w = self.shapes[x]
        n = c * h * w
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        a = self.rng.choice(divisors)
        b = self.rng.choice([d for d in divisors if (n // a) % d == 0])
        shape = (1, a, b, n // a // b)
        target = self.name("shape")
        self.inits.append(numpy_helper.from_array(np.array(shape, np.int64), target))
        return self.add("Reshape", [x, target], shape)

    def gemm(self, x: str) -> str:
        shape = self.shapes[x]
        if len(shape) == 4:
            target = self.name("flat")
            self.inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), target))
            x = self.add("Reshape", [x, target], (1, math.prod(shape)))
        k = self.shapes[x][1]
        n = self.rng.randint(1, 16)
        w = self.const("fc", (n, k), 1.0 / math.sqrt(k))
        return self.add("Gemm", [x, w, self.const("fb", (n,))], (1, n), transB=1)


def random_graph(seed: int, *, int8: bool = False, max_ops: int = 6) -> FuzzGraph:
    """A valid random model for ``seed`` (same seed, same model).

    Args:
        seed: Seed of the structure, the weights and the input.
        int8: Quantize it to QDQ int8 (edgekit's quantizer, random calibration).
        max_ops: Most operators to grow (at least 1).
    """
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    b = _Builder(rng, nprng)
    c, h, w = rng.randint(1, 4), rng.randint(3, 14), rng.randint(3, 14)
    b.shapes["x"] = (1, c, h, w)
    x = "x"
    ops: list[str] = []
    for _ in range(rng.randint(1, max_ops)):
        if len(b.shapes[x]) == 4:
            choice = rng.choices(["conv", "dw", "pool", "binary", "unary", "concat", "reshape", "gemm"],
                                 weights=[5, 2, 2, 2, 2, 1, 1, 1])[0]  # fmt: skip
        else:
            choice = rng.choice(["binary", "unary", "gemm"])
        make = {"conv": lambda: b.conv(x, False), "dw": lambda: b.conv(x, True), "pool": lambda: b.pool(x),
                "binary": lambda: b.binary(x), "unary": lambda: b.unary(x), "concat": lambda: b.concat(x),
                "reshape": lambda: b.reshape(x), "gemm": lambda: b.gemm(x)}[choice]  # fmt: skip
        y = make()
        if y is not None:
            x = y
            ops.append("Conv(depthwise)" if choice == "dw" else b.nodes[-1].op_type)
    if not ops:  # nothing fitted: one ReLU keeps the graph non-empty
        x = b.unary(x)
        ops.append(b.nodes[-1].op_type)
    outputs = [x]
    # Sometimes a second output: an earlier tensor nothing else reads.
    dangling = [t for t in b.shapes if t not in b.consumed and t not in ("x", x)]
    if dangling and rng.random() < 0.3:
        outputs.append(rng.choice(dangling))
    graph = helper.make_graph(
        b.nodes, f"fuzz_{seed}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, b.shapes["x"])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, b.shapes[o]) for o in outputs],
        b.inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    inputs = {"x": nprng.standard_normal(b.shapes["x"]).astype(np.float32)}
    if int8:
        model = _quantize(model, nprng)
    return FuzzGraph(seed, model, int8, ops, inputs)


def _quantize(model: onnx.ModelProto, nprng: np.random.Generator) -> onnx.ModelProto:
    from edgekit.compress.config import QuantConfig
    from edgekit.compress.quantize import quantize

    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    calibration = {"x": nprng.standard_normal((8, *shape[1:])).astype(np.float32)}
    return quantize(model, QuantConfig(eval_fraction=0.25), calibration).model

"""YOLO detector idioms in the integer lowering: SiLU, nearest upsampling, SPPF max pools, C2f split, slices.

Each test builds a small fp32 graph with the idiom between convolutions,
quantizes it with edgekit's quantizer (default ``QuantConfig``), checks that
the integer lowering rewrote every quantized chain (none kept in float), and
runs the host build: every output element within one step of onnxruntime's
QDQ graph as written. Kernel names of a ``znver4`` build (compile only)
show that the data movement stays on the int8 tensor (repeats, slices of the
NHWC conv output, no float resize or split).
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import onnx
import pytest
import tvm
from _host_cpu import host_target
from _int8_checks import kernel_calls, quantized, run_built
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.importer import import_onnx
from edgekit.compiler.integer.indexing import split_bounds
from edgekit.frontend.loader import load_model

ZNVER4 = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})
SIDE = 8


class _Graph:
    """An fp32 ONNX graph under construction: convs with SiLU, named tensors."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def tensor(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def conv(self, x: str, cin: int, cout: int, out: str, *, k: int = 1, silu: bool = True) -> str:
        w = (self.rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        b = (0.1 * self.rng.standard_normal(cout)).astype(np.float32)
        y = out + "_conv" if silu else out
        self.nodes.append(helper.make_node("Conv", [x, self.tensor(out + "_w", w), self.tensor(out + "_b", b)], [y],
                                           pads=[k // 2] * 4))  # fmt: skip
        if silu:  # YOLO's SiLU as exported: x * Sigmoid(x)
            self.nodes.append(helper.make_node("Sigmoid", [y], [out + "_sig"]))
            self.nodes.append(helper.make_node("Mul", [y, out + "_sig"], [out]))
        return out

    def node(self, op: str, inputs: list[str], out: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def model(self, out: str, channels: int, shape: list[int] | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "detector_ops",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, SIDE, SIDE])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape or [1, channels, SIDE, SIDE])],
            self.inits,
        )  # fmt: skip
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _silu() -> onnx.ModelProto:
    g = _Graph(1)
    g.conv(g.conv("x", 4, 16, "a", k=3), 16, 8, "y", silu=False)
    return g.model("y", 8)


def _upsample() -> onnx.ModelProto:
    """A half-resolution branch upsampled by 2 (asymmetric, floor: PyTorch's nearest) and concatenated."""
    g = _Graph(2)
    g.nodes.append(helper.make_node("Conv", ["x", g.tensor("s_w", np.ones((4, 1, 2, 2), np.float32) / 4)], ["half"],
                                    strides=[2, 2], group=4))  # fmt: skip
    low = g.conv("half", 4, 16, "low", k=3)
    up = g.node("Resize", [low, "", g.tensor("scales", np.array([1, 1, 2, 2], np.float32))], "up", mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip
    cat = g.node("Concat", [up, g.conv("x", 4, 8, "full")], "cat", axis=1)
    g.conv(cat, 24, 8, "y", k=3, silu=False)
    return g.model("y", 8)


def _csp() -> onnx.ModelProto:
    """YOLOX's neck: an upsampled map concatenated with a lateral one, the concat read by two 1x1 convs."""
    g = _Graph(7)
    g.nodes.append(helper.make_node("MaxPool", ["x"], ["half"], kernel_shape=[2, 2], strides=[2, 2]))
    low = g.conv("half", 4, 16, "low")
    up = g.node("Resize", [low, "", g.tensor("scales", np.array([1, 1, 2, 2], np.float32))], "up", mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip
    cat = g.node("Concat", [up, g.conv("x", 4, 16, "lateral")], "cat", axis=1)
    g.node("Add", [g.conv(cat, 32, 8, "left"), g.conv(cat, 32, 8, "right")], "y")
    return g.model("y", 8)


def _sppf() -> onnx.ModelProto:
    """YOLOv8's SPPF: three chained 5x5 stride-1 max pools, all four maps concatenated."""
    g = _Graph(3)
    x = g.conv("x", 4, 16, "a")
    pools = [x]
    for i in range(3):
        pools.append(g.node("MaxPool", [pools[-1]], f"p{i}", kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
    cat = g.node("Concat", pools, "cat", axis=1)
    g.conv(cat, 64, 8, "y", silu=False)
    return g.model("y", 8)


def _c2f() -> onnx.ModelProto:
    """YOLOv8's C2f: a conv split in two halves on channels, a bottleneck on the second, all concatenated."""
    g = _Graph(4)
    x = g.conv("x", 4, 16, "a")
    g.nodes.append(helper.make_node("Split", [x, g.tensor("halves", np.array([8, 8], np.int64))], ["h0", "h1"], axis=1))
    b = g.conv(g.conv("h1", 8, 8, "b0", k=3), 8, 8, "b1", k=3)
    res = g.node("Add", ["h1", b], "res")
    cat = g.node("Concat", ["h0", "h1", res], "cat", axis=1)
    g.conv(cat, 24, 8, "y", silu=False)
    return g.model("y", 8)


def _slices() -> onnx.ModelProto:
    """Slices of an int8 tensor: two channel ranges (the DFL head's box halves) and a stride-2 Focus-style pick."""
    g = _Graph(5)
    x = g.conv("x", 4, 16, "a")

    def ints(*v: int) -> np.ndarray:
        return np.array(v, np.int64)

    lo = g.node("Slice", [x, g.tensor("lo_s", ints(0)), g.tensor("lo_e", ints(8)), g.tensor("ax1", ints(1))], "lo")
    hi = g.node("Slice", [x, g.tensor("hi_s", ints(8)), g.tensor("hi_e", ints(16)), "ax1"], "hi")
    even = g.node("Slice", [x, g.tensor("ev_s", ints(0, 0)), g.tensor("ev_e", ints(SIDE, SIDE)),
                            g.tensor("ax23", ints(2, 3)), g.tensor("st2", ints(2, 2))], "even")  # fmt: skip
    back = g.node("Resize", [even, "", g.tensor("scales", np.array([1, 1, 2, 2], np.float32))], "back", mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip
    cat = g.node("Concat", [hi, lo, back], "cat", axis=1)
    g.conv(cat, 32, 8, "y", silu=False)
    return g.model("y", 8)


def _dfl_rows() -> onnx.ModelProto:
    """A YOLOv8 head's DFL input: two scales' 64-channel box maps flattened to (1, 64, pixels), concatenated over
    the anchors, reshaped to (1, 4, 16, anchors) and transposed to (1, anchors, 4, 16) (the softmax's input)."""
    g = _Graph(6)
    g.nodes.append(helper.make_node("MaxPool", ["x"], ["half"], kernel_shape=[2, 2], strides=[2, 2]))
    flat = []
    for name, src, pixels in (("p3", "x", SIDE * SIDE), ("p4", "half", SIDE * SIDE // 4)):
        box = g.conv(src, 4, 64, name, silu=False)
        flat.append(g.node("Reshape", [box, g.tensor(name + "_shape", np.array([1, 64, pixels], np.int64))], name + "_flat"))
    anchors = SIDE * SIDE * 5 // 4
    cat = g.node("Concat", flat, "cat", axis=2)
    bins = g.node("Reshape", [cat, g.tensor("bins_shape", np.array([1, 4, 16, anchors], np.int64))], "bins")
    g.node("Transpose", [bins], "y", perm=[0, 3, 1, 2])
    return g.model("y", 0, [1, anchors, 4, 16])


MODELS: dict[str, tuple[Callable[[], onnx.ModelProto], set[str]]] = {
    "silu": (_silu, {"lut"}),
    "upsample": (_upsample, {"resize2d", "concat"}),
    "sppf": (_sppf, {"max_pool2d", "concat"}),
    "c2f": (_c2f, {"split", "concat", "add"}),
    "slices": (_slices, {"strided_slice", "resize2d", "concat"}),
    "dfl_rows": (_dfl_rows, {"concat", "reshape", "permute_dims"}),
    "csp": (_csp, {"resize2d", "concat", "add"}),
}


@pytest.fixture(scope="module", params=list(MODELS))
def case(request, tmp_path_factory) -> tuple[str, str]:
    name = request.param
    cal = {"x": np.random.default_rng(9).standard_normal((16, 4, SIDE, SIDE)).astype(np.float32)}
    return name, quantized(tmp_path_factory.mktemp(name), MODELS[name][0](), cal)


def test_every_chain_is_lowered(case):
    name, path = case
    report = import_onnx(load_model(path))[2]
    assert report["kept_float"] == [], report["kept_float"]
    # A table's detail names the ops it took in (a SiLU and the nearest resize after it: "multiply+sigmoid+resize2d").
    kinds = {c["kind"] for c in report["rewritten"]} | {
        op for c in report["rewritten"] if c["kind"] == "lut" for op in c["detail"].split("+")}
    assert MODELS[name][1] <= kinds, kinds
    assert set(report["float_ops"]) <= {"quantize", "dequantize"}, report["float_ops"]  # the model's boundary only


def test_within_one_lsb_of_onnxruntime(case):
    import onnxruntime as ort

    _, path = case
    x = np.random.default_rng(11).standard_normal((1, 4, SIDE, SIDE)).astype(np.float32)
    got = run_built(path, host_target(), x)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    model = onnx.load(path)
    last = [n for n in model.graph.node if n.op_type == "DequantizeLinear"][-1]
    step = float(next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == last.input[1]))
    assert np.max(np.abs(got - want)) <= step * 1.001, np.max(np.abs(got - want)) / step


def test_data_movement_stays_int8(case):
    name, path = case
    calls = kernel_calls(path, ZNVER4)
    names = [n for n, _, _ in calls]
    assert not any(k in n for n in names for k in ("resize", "split", "dequantize_", "sigmoid")), names
    if name in ("upsample", "slices"):
        assert any("repeat" in n for n in names), names
    if name == "dfl_rows":
        # The (1, anchors, 4, 16) tensor is the NHWC conv outputs' rows, concatenated: no (1, 64, pixels) copy.
        assert not any(len(out) == 4 and out[:2] == (1, 64) for _, _, out in calls), calls  # (1, 64, pixels, dtype)
        assert any("concatenate" in n and ins[:2] == [(1, SIDE * SIDE, 4, 16, "int8"), (1, SIDE * SIDE // 4, 4, 16, "int8")]
                   for n, ins, _ in calls), calls  # fmt: skip
    if name == "csp":
        # One NHWC concat for both readers: no NCHW (1, 32, H, W) copy, each conv's operand written row by row.
        assert not any(out[:2] == (1, 32) for _, _, out in calls), calls
        assert [n for n, _, out in calls if out == (1, SIDE, SIDE, 32, "uint8")] == ["pad_rows"] * 2, calls
    if name == "sppf":
        # The concat feeding the 1x1 conv is written as its uint8 operand, row by row, in one kernel.
        part = (1, SIDE, SIDE, 16, "int8")
        assert ("pad_rows", [part] * 4, (1, SIDE, SIDE, 64, "uint8")) in calls, calls
        # The pools run on the NHWC tensors, between NHWC convs: no transpose to NCHW and back.
        pools = [ins for n, ins, _ in calls if n.startswith("max_pool2d")]
        assert len(pools) == 3 and all(ins == [part] for ins in pools), calls
    if name in ("c2f", "slices"):
        # The slices read the NHWC conv output (16 channels last), not a transposed copy of it.
        slices = [ins for n, ins, _ in calls if n.startswith("strided_slice")]
        assert slices and all(ins == [(1, SIDE, SIDE, 16, "int8")] for ins in slices), calls
        assert not any(re.fullmatch(r"(fused_)?transpose\d*", n) for n in names), names


@pytest.mark.parametrize("size, parts, want", [
    (16, [8, 8], [(0, 8), (8, 16)]),
    (10, 3, [(0, 4), (4, 8), (8, 10)]),
    (64, 2, [(0, 32), (32, 64)]),
])  # fmt: skip
def test_split_bounds(size, parts, want):
    points = parts if isinstance(parts, int) else np.cumsum(parts)[:-1].tolist()
    assert split_bounds(size, points) == want

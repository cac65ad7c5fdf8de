"""AVX2 int8 depthwise convolutions pair their taps along the kernel's height where that builds fewer pairs.

On AVX2-only targets (Haswell, Zen 2) a depthwise conv takes two taps per
``vpmaddwd`` lane, the two inputs interleaved and widened once per pair
(``vpunpcklbw`` + ``vpmovsxbw``) and shared by the register tile's pixels
(:mod:`edgekit.compiler.backends.llvm.int8`). Pairs of two kernel rows of one
column are shared along the row by every tap of the kernel's width; pairs of
two neighbouring columns only by every other tap. The assembly is read for
explicit ``-mcpu`` targets, whatever CPU runs the test; the numerics run where
this CPU can execute the code: bit-exact against the generic integer kernels
(both pairings, -128 weights, strides, odd sizes) and within one step of
onnxruntime's QDQ graph.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import tvm
from _host_cpu import needs_cpu
from _int8_checks import assert_within_one_lsb_of_onnxruntime, kernels_asm, quantized, run_built
from onnx import TensorProto, helper, numpy_helper

import edgekit.compiler.backends.llvm.int8 as cpu_int8
import edgekit.compiler.backends.llvm.depthwise_pairs as pairs
from edgekit.compiler.backends.llvm.depthwise_pairs import vertical_pairs

HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
SHAPE = (1, 32, 11, 24)


def test_pairing_rule():
    """Fewer ``vpmaddwd`` first, then fewer pair builds: stride-1 kernels pair rows (5x5,
    8 pixels: 3 x 12 builds, not 5 x 12; 3x3: 2 x 10, not 3 x 10); a horizontal stride of 2
    keeps column pairs (7x7, 6 pixels: 63 builds against 68); a kernel one row high has no
    row pair."""
    assert vertical_pairs((5, 5), (1, 1), 8)
    assert vertical_pairs((3, 3), (1, 1), 8)
    assert vertical_pairs((3, 3), (2, 1), 8)
    assert not vertical_pairs((7, 7), (1, 2), 6)
    assert not vertical_pairs((1, 3), (1, 1), 8)
    assert vertical_pairs((5, 1), (1, 1), 8)  # 3 vpmaddwd per pixel against 5
    assert not vertical_pairs((5, 2), (1, 1), 8)  # 6 against 5


def _fp32_model() -> onnx.ModelProto:
    """32 channels: 5x5 padded (row pairs), 3x3 at stride (2, 1) unpadded (row pairs, an odd
    input height), 3x3 at stride (1, 2) padded (column pairs), 5x5 unpadded (row pairs)."""
    rng = np.random.default_rng(4)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    c = SHAPE[1]
    inits = [numpy_helper.from_array(w(c, 1, 5, 5), "d1"), numpy_helper.from_array(w(c, 1)[:, 0], "b1"),
             numpy_helper.from_array(w(c, 1, 3, 3), "d2"), numpy_helper.from_array(w(c, 1, 3, 3), "d3"),
             numpy_helper.from_array(w(c, 1, 5, 5), "d4")]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "d1", "b1"], ["y1"], group=c, pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["y1"], ["r1"]),
        helper.make_node("Conv", ["r1", "d2"], ["y2"], group=c, strides=[2, 1]),
        helper.make_node("Conv", ["y2", "d3"], ["y3"], group=c, strides=[1, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["y3", "d4"], ["y"], group=c, pads=[2, 0, 2, 0]),
    ]
    out = [1, c, 5, 7]
    graph = helper.make_graph(nodes, "dw_rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> str:
    cal = {"x": np.random.default_rng(5).standard_normal((16, *SHAPE[1:])).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("dw_rows"), _fp32_model(), cal)


def _pair_model(channels: int, width: int) -> onnx.ModelProto:
    """One 5x5 stride-1 padded depthwise layer (PP-OCR cls's shape), rows of ``width`` pixels."""
    rng = np.random.default_rng(6)
    wd = (rng.standard_normal((channels, 1, 5, 5)) / 5).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=channels, pads=[2, 2, 2, 2])], "dw5",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 2, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 2, width])],
        [numpy_helper.from_array(wd, "w")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _tap_loop(asm: str) -> str:
    """The innermost loop of ``asm`` with the most ``vpmaddwd`` (a block jumping back to its own label)."""
    best = ""
    for label in re.findall(r"^(\.LBB\w+):", asm, re.M):
        m = re.search(rf"^{re.escape(label)}:\n(.*?)^\s+j\w+\s+{re.escape(label)}\n", asm, re.M | re.S)
        if m and "\n.LBB" not in m.group(1) and m.group(1).count("vpmaddwd") > best.count("vpmaddwd"):
            best = m.group(1)
    return best


@pytest.mark.parametrize("mcpu", ["haswell", "znver2"])
def test_5x5_tap_loop_shares_row_pairs(tmp_path, mcpu):
    """The 5x5 layer's tap loop (one pair of kernel rows, 8 pixels): 40 ``vpmaddwd`` on 12
    widened pairs, each input row loaded once per column; column pairs took 24 on 12."""
    cal = {"x": np.random.default_rng(7).standard_normal((8, 48, 2, 96)).astype(np.float32)}
    model = quantized(tmp_path, _pair_model(48, 96), cal)
    kernels = {n: a for n, a in kernels_asm(model, mcpu).items() if "depthwise" in n}
    assert len(kernels) == 1, sorted(kernels)
    loop = _tap_loop(next(iter(kernels.values())))
    assert loop.count("vpmaddwd") == 40, loop
    assert loop.count("vpmovsxbw") == 12 and loop.count("vpunpcklbw") == 12, loop


@needs_cpu(HASWELL)
@pytest.mark.parametrize("weights", ["calibrated", "minus_128"])
def test_row_pairs_are_bit_exact_with_the_generic_kernel(int8_model, tmp_path, monkeypatch, weights):
    model, x = int8_model, np.random.default_rng(8).standard_normal(SHAPE).astype(np.float32)
    if weights == "minus_128":
        m = onnx.load(int8_model)
        for init in m.graph.initializer:
            if init.data_type == TensorProto.INT8 and len(init.dims) == 4 and init.dims[1] == 1:
                init.CopyFrom(numpy_helper.from_array(np.full(tuple(init.dims), -128, np.int8), init.name))
        model = str(tmp_path / "w.onnx")
        onnx.save(m, model)
        x = np.full(SHAPE, -50.0, np.float32)
        x[..., ::3] = 50.0
    got = run_built(model, HASWELL, x)
    monkeypatch.setattr(cpu_int8, "dot_isa", lambda t: None)
    np.testing.assert_array_equal(got, run_built(model, HASWELL, x))


@needs_cpu(HASWELL)
def test_row_pairs_match_column_pairs_and_onnxruntime(int8_model, monkeypatch):
    x = np.random.default_rng(9).standard_normal(SHAPE).astype(np.float32)
    got = run_built(int8_model, HASWELL, x)
    assert_within_one_lsb_of_onnxruntime(int8_model, {"x": x}, got)
    monkeypatch.setattr(pairs, "vertical_pairs", lambda *a: False)
    np.testing.assert_array_equal(got, run_built(int8_model, HASWELL, x))

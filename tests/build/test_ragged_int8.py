"""int8 convolutions with the ragged channel counts structured pruning leaves (issue #14 item 6).

A layer pruned from 32 to 23 channels must not pay for 32: its dot-product
kernel takes as many reduction steps as 24 input channels need (``vpdpbusd``
reads 4 per step) and as many vectors as 23 output channels need, its
requantization is written straight from the register tile (no padded int32
result through memory and a second loop), and its input costs no more
kernels than a layer of 24 channels. Structure is checked for an explicit
AVX-512 VNNI target whatever CPU runs the test; numerics where this CPU runs
that code, against the generic integer kernels (bit-exact) and onnxruntime's
QDQ graph as written (1 LSB).

The digits CNN pruned 30 % with round_to 1 (12/23 channels) also has a
zero-point pad of 12 channels (fewer than the 16-byte row copy) and a max
pool of 23: both are vector kernels too (``pad.row_step``/``_flat_pad_func``,
``channel_sum._masked_max_pool`` on AVX-512BW targets, 16-channel steps on
AVX2 ones), checked on a model of the same shapes for a znver4 and a haswell
target, and kernel by kernel against numpy.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")

import edgekit.compiler.backends.llvm.int8 as cpu_int8  # noqa: E402
from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.compiler.backends.llvm.channel_sum import _masked_max_pool, masked_pool_lanes  # noqa: E402
from edgekit.compiler.backends.llvm.pad import _flat_pad_func, _pad_func, row_step  # noqa: E402
from _host_cpu import first_runnable, needs_cpu, runs_here  # noqa: E402
from _int8_checks import (  # noqa: E402
    assert_within_one_lsb_of_onnxruntime,
    kernel_calls,
    kernels_asm,
    mnemonics,
    quantized,
    run_built,
)

VNNI512 = {"kind": "llvm", "mcpu": "znver4"}
#: An AVX512-VNNI CPU whose code this machine runs, for the numerics (Intel CPUs have no sse4a).
RUN_VNNI512 = first_runnable("znver4", "icelake-server", "cascadelake")


def _model(channels: int) -> onnx.ModelProto:
    """Two padded 3x3 convs of ``channels`` outputs after a 24-channel input, each followed by Relu."""
    rng = np.random.default_rng(channels)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(w(channels, 24, 3, 3), "w1"), numpy_helper.from_array(w(channels, 1)[:, 0], "b1"),
             numpy_helper.from_array(w(channels, channels, 3, 3), "w2"),
             numpy_helper.from_array(w(channels, 1)[:, 0], "b2")]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "ragged", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory) -> dict[int, str]:
    """The QDQ model with 23 channels (pruned from 32 with ratio 0.3) and with 24."""
    cal = {"x": np.random.default_rng(1).standard_normal((16, 24, 8, 8)).astype(np.float32)}
    return {channels: quantized(tmp_path_factory.mktemp(f"ragged{channels}"), _model(channels), cal)
            for channels in (23, 24)}  # fmt: skip


def _scheduled(path: str, target: dict) -> tuple[list[str], dict[str, str]]:
    """The kernels ``main`` calls, in order, and the scheduled TIR of every kernel by name."""
    mod, _ = import_onnx(load_model(path))[:2]
    t = tvm.target.Target(target)
    prepared, _ = prepare_cpu_module(mod, t)
    with t, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(t))(prepared)
    calls = re.findall(r"R\.call_tir\(([A-Za-z0-9_]+),", scheduled["main"].script())
    tir = {gv.name_hint: f.script() for gv, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    return calls, tir


def test_ragged_conv_takes_the_steps_its_channels_need(int8_models):
    calls, tir = _scheduled(int8_models[23], VNNI512)
    convs = [n for n in calls if "conv2d_vnni512" in n]
    assert len(convs) == 2, calls
    second = tir[convs[1]]
    # Blocked weights [O/16, KH, KW, I/4, 16, 4]: 2 vectors for 23 output channels
    # (the fewest), 6 steps of 4 for 23 input channels (24, not 32).
    assert re.search(r"T\.Buffer\(\(T\.int64\(2\), T\.int64\(3\), T\.int64\(3\), T\.int64\(6\), T\.int64\(16\), "
                     r"T\.int64\(4\)\), \"int8\"\)", second), second[:600]  # fmt: skip
    # The requantization is in the tile's write-back, bounded to the 23 channels:
    # the only int32 buffer is the accumulator tile, and nothing past channel 23 is stored.
    buffers = re.findall(r"(\w+) = T\.sblock_alloc_buffer\(.*\"int32\"\)", second)
    assert len(buffers) == 1 and buffers[0].endswith("_global"), buffers
    assert re.search(r"T\.where\(.* < T\.int64\(23\)\)", second), second


def test_ragged_input_costs_no_more_kernels_than_a_round_one(int8_models):
    """Padding 23 channels to 24 for the dot product is one pad kernel with the
    zero-point pad, as for 24 channels (it was a third kernel)."""
    ragged, _ = _scheduled(int8_models[23], VNNI512)
    round_, _ = _scheduled(int8_models[24], VNNI512)
    assert len(ragged) == len(round_), (ragged, round_)


@needs_cpu(RUN_VNNI512)
def test_ragged_conv_is_exact(int8_models, monkeypatch):
    path, target = int8_models[23], tvm.target.Target({"kind": "llvm", "mcpu": RUN_VNNI512})
    x = np.random.default_rng(7).standard_normal((1, 24, 8, 8)).astype(np.float32)
    got = run_built(path, target, x)
    assert got.shape == (1, 23, 8, 8)
    monkeypatch.setattr(cpu_int8, "dot_isa", lambda t: None)
    np.testing.assert_array_equal(got, run_built(path, target, x))  # the generic integer kernels
    assert_within_one_lsb_of_onnxruntime(path, {"x": x}, got)


# --------------------------------------------------------------------------- #
# The digits CNN's ragged pad and pool (pruned 30 %, round_to 1: 12 and 23 channels)
# --------------------------------------------------------------------------- #

#: The kinds of x86 target the ragged pad and pool are chosen for: AVX-512BW (masked pool) and AVX2 only.
TARGETS = ("znver4", "haswell")


def _digits_like(c1: int, c2: int) -> onnx.ModelProto:
    """The pruned digits CNN's shapes: conv 3x3 to ``c1`` -> conv 3x3 to ``c2`` -> MaxPool 2x2 -> conv 3x3 to ``c1``,
    each conv padded and followed by Relu, on a 4-channel 8x8 input."""
    rng = np.random.default_rng(c1 * 100 + c2)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    nodes, inits, x = [], [], "x"
    for i, (cin, cout) in enumerate(((4, c1), (c1, c2), (c2, c1))):
        if i == 2:
            nodes.append(helper.make_node("MaxPool", [x], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
            x = "p"
        inits += [w(f"w{i}", cout, cin, 3, 3), w(f"b{i}", cout)]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]  # fmt: skip
        x = f"r{i}"
    graph = helper.make_graph(nodes, "digits_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, c1, 4, 4])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def digits_like(tmp_path_factory) -> dict[str, str]:
    """The QDQ models pruned (12/23 channels) and round (16/32)."""
    cal = {"x": np.random.default_rng(2).standard_normal((16, 4, 8, 8)).astype(np.float32)}
    return {name: quantized(tmp_path_factory.mktemp(f"digits_{name}"), _digits_like(*channels), cal)
            for name, channels in (("pruned", (12, 23)), ("round", (16, 32)))}  # fmt: skip


def _kinds(calls: list[tuple]) -> list[str]:
    """Kernel names without TVM's numbering and fused-op suffixes: what each kernel is."""
    return [re.sub(r"\d+", "", "_".join(name.split("_")[:3])) for name, _ins, _out in calls]


@pytest.mark.parametrize("mcpu", TARGETS)
def test_ragged_pad_and_pool_are_the_kernels_a_round_model_has(digits_like, mcpu):
    """The 12-channel zero-point pad with the u8 conversion is the row-copy kernel (TVM fused it into one
    lane-guarded loop LLVM left scalar: 0.29 us against 0.02 for 16 channels, one Zen 4 core), and the
    23-channel pool is a hand-written kernel: the same kernels, in the same order, as 16/32 channels."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    ragged, round_ = kernel_calls(digits_like["pruned"], target), kernel_calls(digits_like["round"], target)
    names = [name for name, _ins, _out in ragged]
    assert not [n for n in names if n.startswith("fused_pad")], names
    pads = [(ins[0], out) for name, ins, out in ragged if name.startswith("pad_rows")]
    # The pads write the dot product's operand: uint8 for vpdpbusd (znver4), int16 on an AVX2-only
    # target, whose widening was a cast kernel of its own after every padded input.
    operand = "uint8" if mcpu == "znver4" else "int16"
    assert pads == [((1, 8, 8, 12, "int8"), (1, 10, 10, 12, operand)),
                    ((1, 4, 4, 23, "int8"), (1, 6, 6, 24, operand))], pads  # fmt: skip
    assert not [n for n in names if re.fullmatch(r"cast\d*", n)], names
    assert any(name.startswith("max_pool2d") for name in names), names
    assert _kinds(ragged) == _kinds(round_), (names, [n for n, _i, _o in round_])


def test_the_ragged_pool_is_one_masked_vector_per_pixel_on_avx512bw():
    """On an AVX-512BW target the 23-channel pool reads and writes each pixel's channels as one
    32-lane vector with the lanes past 23 masked off (was two overlapping 16-lane steps);
    an AVX2 target has no byte-masked loads and keeps the 16-lane steps."""
    assert masked_pool_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}), 23) == 32
    assert masked_pool_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}), 12) == 16
    assert masked_pool_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}), 32) is None  # whole vectors: TVM's
    assert masked_pool_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}), 23) is None


@pytest.mark.parametrize("mcpu", TARGETS)
def test_ragged_pad_and_pool_kernels_are_vector_code(digits_like, mcpu):
    asm = kernels_asm(digits_like["pruned"], mcpu)
    pool = next(body for name, body in asm.items() if name.startswith("max_pool2d"))
    pads = {name: body for name, body in asm.items() if name.startswith("pad_rows")}
    assert len(pads) == 2, list(asm)
    # No byte or lane-by-lane moves: every copy is a whole vector (TVM's 12-channel pad
    # inserted and extracted 4-byte lanes per pixel under a per-pixel guard).
    for name, body in pads.items():
        ops = mnemonics(body)
        assert not ops & {"movb", "vpinsrb", "vpextrb", "vpinsrd", "vpextrd", "pinsrb", "pextrb"}, (name, sorted(ops))
        if mcpu == "znver4":
            assert ops & {"vpxor", "vxorps", "vpxord", "vpternlogd", "vpternlogq"}, (name, sorted(ops))  # x ^ 0x80
        else:
            assert "vpmovsxbw" in ops, (name, sorted(ops))  # int8 -> int16, 16 values a step
    ops = mnemonics(pool)
    assert ops & {"vpmaxsb"}, sorted(ops)
    assert not ops & {"movb", "vpinsrb", "vpextrb"}, sorted(ops)
    if mcpu == "znver4":
        assert re.search(r"vmovdqu8\s+\d*\(%\w+\), %ymm\d+ \{%k\d\} \{z\}", pool), pool[:2000]
        assert re.search(r"vmovdqu8\s+%ymm\d+, \d*\(%\w+\) \{%k\d\}", pool), pool[:2000]
    else:
        assert "%k" not in pool and "%ymm" not in pool and "%xmm" in pool, pool[:2000]


@pytest.mark.parametrize("mcpu", TARGETS)
def test_ragged_pad_and_pool_are_exact(digits_like, mcpu, monkeypatch):
    """Bit-identical with the generic integer kernels, within 1 LSB of onnxruntime's QDQ graph."""
    if not runs_here(mcpu):
        pytest.skip(f"this CPU cannot run {mcpu} code")
    path, target = digits_like["pruned"], tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    xs = [np.random.default_rng(s).standard_normal((1, 4, 8, 8)).astype(np.float32) * 2 for s in range(3)]
    got = run_built(path, target, xs)
    assert got[0].shape == (1, 12, 4, 4)
    monkeypatch.setattr(cpu_int8, "dot_isa", lambda t: None)
    for g, want in zip(got, run_built(path, target, xs)):
        np.testing.assert_array_equal(g, want)  # the generic integer kernels
    for x, g in zip(xs, got):
        assert_within_one_lsb_of_onnxruntime(path, {"x": x}, g)


def _run_prim(func, target: str, *arrays: np.ndarray, out: tuple, dtype: str) -> np.ndarray:
    t = tvm.target.Target({"kind": "llvm", "mcpu": target} if target else {"kind": "llvm"})
    lib = tvm.tirx.build(tvm.IRModule({"k": func.with_attr("global_symbol", "k")}), t)
    y = tvm.runtime.tensor(np.full(out, 77, dtype))  # any byte not written stays 77
    lib["k"](*[tvm.runtime.tensor(a) for a in arrays], y)
    return y.numpy()


@pytest.mark.parametrize("c", [4, 5, 8, 12, 13, 15])
@pytest.mark.parametrize(("top", "left", "hw"), [(1, 1, (8, 8)), (2, 0, (3, 5)), (0, 3, (4, 1))])
def test_narrow_pads_are_exact(c, top, left, hw):
    """Rows of fewer than 16 channels: 8- or 4-byte steps, or whole image rows; every output byte
    written, as numpy's pad (int8 -> uint8 with the + 128, and plain int8 with a channel fill)."""
    h, w = hw
    x = np.random.default_rng(c).integers(-128, 128, (2, h, w, c)).astype(np.int8)
    out = (2, h + top + 1, w + left + 2, c)
    pad = ((0, 0), (top, 1), (left, 2), (0, 0))
    want = (np.pad(x.astype(np.int16), pad, constant_values=-3) + 128).astype(np.uint8)
    if w * c >= 16:
        got = _run_prim(_flat_pad_func(x.shape, top, left, out, 125, "int8", "uint8"), "", x, out=out, dtype="uint8")
        np.testing.assert_array_equal(got, want)
    step = row_step(c, 0)
    got = _run_prim(_pad_func([x.shape], top, left, out, 125, 128, "int8", "uint8", step), "", x, out=out, dtype="uint8")
    np.testing.assert_array_equal(got, want)
    # Widened to int16 (an AVX2-only target's operand), row by row and pixel by pixel.
    want16 = np.pad(x.astype(np.int16), pad, constant_values=-3)
    if w * c >= 16:
        got = _run_prim(_flat_pad_func(x.shape, top, left, out, -3, "int8", "int16"), "", x, out=out, dtype="int16")
        np.testing.assert_array_equal(got, want16)
    got = _run_prim(_pad_func([x.shape], top, left, out, -3, 0, "int8", "int16", step), "", x, out=out, dtype="int16")
    np.testing.assert_array_equal(got, want16)
    cp = -(-c // 4) * 4
    if cp > c and row_step(c, cp - c) is not None:
        out = (*out[:3], cp)
        want = np.pad(x, (*pad[:3], (0, cp - c)), constant_values=0)
        want[:, :top], want[:, top + h:], want[:, :, :left], want[:, :, left + w:] = -3, -3, -3, -3
        want[..., c:] = 0
        got = _run_prim(_pad_func([x.shape], top, left, out, -3, 0, "int8", "int8", row_step(c, cp - c)), "", x,
                        out=out, dtype="int8")  # fmt: skip
        np.testing.assert_array_equal(got, want)


@needs_cpu("znver4")
@pytest.mark.parametrize("c", [5, 12, 23, 40, 63])
@pytest.mark.parametrize(("shape", "pool", "strides"), [((2, 8, 8), (2, 2), (2, 2)), ((1, 7, 9), (3, 3), (2, 2)),
                                                         ((1, 5, 6), (2, 3), (1, 3))])  # fmt: skip
def test_masked_max_pools_are_exact(c, shape, pool, strides):
    """One masked vector per pixel (16, 32 or 64 lanes): the same int8 maxima as numpy, and no
    byte outside the output written (the masked store keeps the lanes past ``c`` out of the row)."""
    n, h, w = shape
    lanes = masked_pool_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}), c)
    x = np.random.default_rng(c).integers(-128, 128, (n, h, w, c)).astype(np.int8)
    oh, ow = (h - pool[0]) // strides[0] + 1, (w - pool[1]) // strides[1] + 1
    want = np.full((n, oh, ow, c), -128, np.int8)
    for ky in range(pool[0]):
        for kx in range(pool[1]):
            want = np.maximum(want, x[:, ky : ky + strides[0] * oh : strides[0], kx : kx + strides[1] * ow : strides[1]][:, :oh, :ow])
    got = _run_prim(_masked_max_pool(x.shape, pool, strides, lanes), "znver4", x, out=want.shape, dtype="int8")
    np.testing.assert_array_equal(got, want)

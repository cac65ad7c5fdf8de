"""edgekit's int8 MCU kernels (firmware_stubs/nn, edgekit/compiler/backends/aot_c/nn.py).

Outputs are bit-exact with the integer lowering as TVM compiles it (the
kernels off) and within one output step of onnxruntime running the QDQ graph
as written; on the host (the generic kernel) and in the simulators of both
boards (the SMLAD kernel on stm32h7, the float-accumulating one on rv32).
The stm32h7 kernels' machine code is checked for SMLAD and for calls.
Also: the float <-> int64 runtime helpers that tiny float I/O needs.
"""

from __future__ import annotations

import importlib.util
import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler import firmware
from edgekit.compiler.backends.aot_c.pipeline import compile_aot
from edgekit.compiler.backends.aot_c.host import run_on_host
from edgekit.compiler.backends.aot_c.section import AotSection
from edgekit.compiler.backend import CompileOptions
from edgekit.compiler.driver import compile_model
from edgekit.core.profiles import get_board
from edgekit.core.resources import data_dir
from edgekit.frontend.loader import load_model
from edgekit.runtime.runner import run_package

needs_zig = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang not installed")
needs_sim = pytest.mark.skipif(importlib.util.find_spec("unicorn") is None, reason="unicorn not installed")

SX, ZX = 0.03, -5


def _qdq_layer(kind: str, cin: int, cout: int, size: int, k: int, pad: int, stride: int, seed: int) -> onnx.ModelProto:
    """One int8 layer as onnxruntime writes QDQ (int8 I/O, per-channel weights, int32 bias, Relu)."""
    rng = np.random.default_rng(seed)
    if kind == "fc":
        wshape, xshape, yshape = (cout, cin), [1, cin], [1, cout]
        core = helper.make_node("Gemm", ["xf", "w", "b"], ["acc"], transB=1)
        fan_in = cin
    else:
        group = cin if kind == "dw" else 1
        wshape = (cout, cin // group, k, k)
        osz = (size + 2 * pad - k) // stride + 1
        xshape, yshape = [1, cin, size, size], [1, cout, osz, osz]
        core = helper.make_node("Conv", ["xf", "w", "b"], ["acc"], pads=[pad] * 4, strides=[stride] * 2, group=group)
        fan_in = cin // group * k * k
    wq = rng.integers(-127, 128, size=wshape).astype(np.int8)
    sw = rng.uniform(0.5, 1.5, cout).astype(np.float32) / np.float32(127 * np.sqrt(fan_in))
    bq = rng.integers(-3000, 3000, size=cout).astype(np.int32)
    sy = np.float32(SX * 128 * float(sw.mean()) * np.sqrt(fan_in) * 0.4)
    inits = [
        numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(sw, "sw"),
        numpy_helper.from_array(np.zeros(cout, np.int8), "zw"),
        numpy_helper.from_array(bq, "bq"), numpy_helper.from_array((np.float32(SX) * sw).astype(np.float32), "sb"),
        numpy_helper.from_array(np.zeros(cout, np.int32), "zb"),
        numpy_helper.from_array(np.array(SX, np.float32), "sx"), numpy_helper.from_array(np.array(ZX, np.int8), "zx"),
        numpy_helper.from_array(np.array(sy, np.float32), "sy"), numpy_helper.from_array(np.array(-128, np.int8), "zy"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["b"], axis=0),
        core,
        helper.make_node("Relu", ["acc"], ["yf"]),
        helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.INT8, xshape)],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, yshape)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# Padding with the zero point, strides, channel counts that are not multiples
# of the register blocks (2 and 4), odd pixel counts, K not a multiple of 4.
LAYERS = {
    "conv3x3_pad_odd": ("conv", 5, 7, 9, 3, 1, 1),
    "conv3x3_stride2": ("conv", 6, 9, 11, 3, 1, 2),
    "conv5x5": ("conv", 3, 4, 8, 5, 2, 1),
    "conv1x1": ("conv", 12, 10, 5, 1, 0, 1),
    "depthwise_s1": ("dw", 6, 6, 7, 3, 1, 1),
    "depthwise_s2": ("dw", 5, 5, 9, 3, 1, 2),
    "depthwise_5x5": ("dw", 4, 4, 9, 5, 2, 1),
    "depthwise_5x5_s2": ("dw", 3, 3, 10, 5, 2, 2),
    "fc": ("fc", 37, 13, 0, 0, 0, 1),
}


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _feeds(model: onnx.ModelProto, seed: int = 3) -> dict[str, np.ndarray]:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(seed).integers(-128, 128, size=shape).astype(np.int8)}


@needs_zig
@pytest.mark.parametrize("columns", ["int8", "fast"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_host_kernels_bit_exact_with_the_integer_lowering(name: str, columns: str, monkeypatch) -> None:
    import tvm

    from edgekit.compiler.backends.aot_c import nn as aot_nn

    # int8 im2col columns wherever they shrink the arena, or the fast ones always
    monkeypatch.setattr(aot_nn, "MAX_SCRATCH_SHARE", 0.0 if columns == "int8" else 1e9)
    model = _qdq_layer(*LAYERS[name], seed=len(name))
    prepared = load_model(model)
    feeds = _feeds(model)
    host = tvm.target.Target({"kind": "llvm"})
    outs = {}
    for on in (True, False):
        art = compile_aot(prepared, host, int8_kernels=on)
        assert any(c.extern for c in art.graph.calls) == on
        outs[on] = run_on_host(art.members(), prepared.inputs, prepared.outputs, feeds)[0]
    np.testing.assert_array_equal(outs[True], outs[False])
    want = _ort(model, feeds)
    assert np.abs(outs[True].astype(np.int32) - want.astype(np.int32)).max() <= 1
    assert (want > -128).mean() > 0.2 and len(np.unique(want)) > 4  # not all clamped to one value


def _chain_model() -> onnx.ModelProto:
    """conv 3x3 (pad, odd channels) -> depthwise -> conv 1x1 -> flatten -> FC, int8 QDQ with int8 I/O."""
    parts = [
        _qdq_layer("conv", 3, 7, 8, 3, 1, 1, seed=1),
        _qdq_layer("dw", 7, 7, 8, 3, 1, 2, seed=2),
        _qdq_layer("conv", 7, 6, 4, 1, 0, 1, seed=3),
        _qdq_layer("fc", 96, 10, 0, 0, 0, 1, seed=4),
    ]
    nodes, inits = [], []
    prev = "x"
    for i, part in enumerate(parts):
        rename = {n: f"l{i}_{n}" for n in ["x", "xf", "w", "b", "acc", "yf", "y", "wq", "sw", "zw", "bq", "sb", "zb",
                                           "sx", "zx", "sy", "zy"]}  # fmt: skip
        rename["x"] = prev
        for node in part.graph.node:
            node.input[:] = [rename.get(n, n) for n in node.input]
            node.output[:] = [rename.get(n, n) for n in node.output]
            nodes.append(node)
        for init in part.graph.initializer:
            init.name = rename[init.name]
            inits.append(init)
        prev = f"l{i}_y"
        if i == 2:  # the next layer's input scale/zero point must be this layer's output's
            nodes.append(helper.make_node("Flatten", [prev], ["flat"]))
            prev = "flat"
    # Chain the quantization parameters: each layer dequantizes with the previous layer's output scale.
    by_name = {i.name: i for i in inits}
    for i in range(1, 4):
        by_name[f"l{i}_sx"].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(by_name[f"l{i - 1}_sy"]), f"l{i}_sx"))
        by_name[f"l{i}_zx"].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(by_name[f"l{i - 1}_zy"]), f"l{i}_zx"))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(prev, TensorProto.INT8, [1, 10])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@needs_zig
@needs_sim
@pytest.mark.parametrize("board", ["stm32h7", "rv32-mcu-sim"])
def test_board_kernels_bit_exact_in_the_simulator(board: str, tmp_path: Path) -> None:
    model = _chain_model()
    path = tmp_path / "chain.onnx"
    onnx.save(model, path)
    feeds = {"x": np.random.default_rng(7).integers(-128, 128, size=(2, 1, 3, 8, 8)).astype(np.int8)}
    outs = {}
    for on in (True, False):
        pkg = tmp_path / f"{on}.ekpkg"
        result = compile_model(str(path), board, str(pkg), options=CompileOptions(mcu_int8_kernels=on))
        aot = AotSection.of(result.manifest)
        assert aot is not None and aot.int8_c_kernel_calls == (4 if on else 0)
        results, _, _ = run_package(str(pkg), feeds, sim=True)
        outs[on] = np.stack([r[model.graph.output[0].name] for r in results])
    np.testing.assert_array_equal(outs[True], outs[False])
    for i in range(2):
        want = _ort(model, {"x": feeds["x"][i]})
        assert np.abs(outs[True][i].astype(np.int32) - want.astype(np.int32)).max() <= 1


# -- exact ties --------------------------------------------------------------- #
# Power-of-two scales: every fixed-point multiplier is exact and onnxruntime's
# float32 arithmetic is exact, so a requantized value that is half-way between
# two steps is a real tie and QuantizeLinear rounds it to even. Per channel,
# M = s_x * s_w / s_y is 2^-4 and 2^-2 (shift > 32: the kernels' high-word
# path) and 1.5 (shift 30: the 64-bit path).
TIE_LAYERS = {"conv3x3": ("conv", 3, 6, 7, 3, 1, 1), "depthwise_s1": ("dw", 6, 6, 8, 3, 1, 1), "fc": ("fc", 24, 48, 0, 0, 0, 1)}


def _tie_layer(kind: str, cin: int, cout: int, size: int, k: int, pad: int, stride: int,
               sw_cycle: tuple[float, ...] = (2.0**-7, 2.0**-5, 1.5 * 2.0**-2), sy: float = 2.0**-6) -> onnx.ModelProto:  # fmt: skip
    """One layer with weights in [-2, 2], bias in [-20, 20] and power-of-two scales
    (``s_w`` cycles through ``sw_cycle`` over the output channels)."""
    model = _qdq_layer(kind, cin, cout, size, k, pad, stride, seed=5)
    rng = np.random.default_rng(6)
    sx, sy = np.float32(2.0**-3), np.float32(sy)
    sw = np.resize(np.array(sw_cycle, np.float32), cout)
    inits = {i.name: i for i in model.graph.initializer}
    shape = numpy_helper.to_array(inits["wq"]).shape
    new = {"wq": rng.integers(-2, 3, size=shape).astype(np.int8), "sw": sw, "sb": (sx * sw).astype(np.float32),
           "bq": rng.integers(-20, 21, size=cout).astype(np.int32), "sx": np.array(sx), "sy": np.array(sy),
           "zx": np.array(0, np.int8)}  # fmt: skip
    for name, value in new.items():
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    return model


def _tie_feeds(model: onnx.ModelProto, n: int, seed: int = 9) -> np.ndarray:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(seed).integers(-8, 9, size=(n, *shape)).astype(np.int8)


def _exact_ties(model: onnx.ModelProto, x: np.ndarray) -> int:
    """How many of the layer's outputs (ReLU'd, in output steps) are exactly half-way."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("yf", TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    yf = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(["yf"], {"x": x})[0]
    sy = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "sy"))
    return int(np.sum((yf / sy) % 1 == 0.5))


@needs_zig
@pytest.mark.parametrize("name", sorted(TIE_LAYERS))
def test_host_kernels_round_exact_ties_to_even_like_quantize_linear(name: str) -> None:
    import tvm

    model = _tie_layer(*TIE_LAYERS[name])
    prepared = load_model(model)
    x = _tie_feeds(model, 1)[0]
    assert _exact_ties(model, x) >= 4  # not vacuous: half up misses every tie below an odd step
    want = _ort(model, {"x": x})
    for on in (True, False):
        art = compile_aot(prepared, tvm.target.Target({"kind": "llvm"}), int8_kernels=on)
        assert any(c.extern for c in art.graph.calls) == on
        np.testing.assert_array_equal(run_on_host(art.members(), prepared.inputs, prepared.outputs, {"x": x})[0], want)


@needs_zig
@needs_sim
@pytest.mark.parametrize("board", ["stm32h7", "rv32-mcu-sim"])
def test_board_kernels_round_exact_ties_to_even_in_the_simulator(board: str, tmp_path: Path) -> None:
    model = _tie_layer(*TIE_LAYERS["conv3x3"])
    path = tmp_path / "ties.onnx"
    onnx.save(model, path)
    x = _tie_feeds(model, 2)
    assert sum(_exact_ties(model, xi) for xi in x) >= 16
    pkg = tmp_path / "ties.ekpkg"
    result = compile_model(str(path), board, str(pkg), options=CompileOptions(mcu_int8_kernels=True))
    aot = AotSection.of(result.manifest)
    assert aot is not None and aot.int8_c_kernel_calls == 1
    results, _, _ = run_package(str(pkg), {"x": x}, sim=True)
    for xi, r in zip(x, results):
        np.testing.assert_array_equal(r["y"], _ort(model, {"x": xi}))


# -- the short form where the layer's bound rules ties out ------------------- #
# s_x = s_y = 2^-3, so M = s_w per channel: 2^-6 (1 + 2^-8) has m = 2^30 + 2^22
# (22 trailing zeros), n = 36: a * m ties only for |a| a multiple of 2^13, which
# an int32 reaches but this layer's accumulators (27 weights in [-2, 2] times
# |x| <= 128, plus the bias: 6,932 at most) do not. 2^-6 (m = 2^30) ties from
# |a| = 32 on. Float32 is exact here too (|acc| * 257 < 2^24), so onnxruntime
# rounds every exact tie to even.
BOUNDED = ((2.0**-6) * (1 + 2.0**-8), 2.0**-6)


def _kernel_layer(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The layer on the host build of the C kernels: (output, shifts in its parameter block)."""
    import tvm

    prepared = load_model(model)
    art = compile_aot(prepared, tvm.target.Target({"kind": "llvm"}), int8_kernels=True)
    (call,) = [c for c in art.graph.calls if c.extern]
    params = art.graph.tensors[call.args[2]].value.reshape(-1)
    oc = int(params[4])  # EK_NN_OC
    shifts = params[22 + 2 * oc : 22 + 3 * oc]  # after the EK_NN_HDR header, offsets and multipliers
    return run_on_host(art.members(), prepared.inputs, prepared.outputs, {"x": x})[0], shifts


@needs_zig
def test_host_kernels_round_half_up_where_the_layers_bound_rules_ties_out() -> None:
    from edgekit.core.fixedpoint import dot_bound, quantize_multiplier, ties_possible

    model = _tie_layer("conv", 3, 6, 16, 3, 1, 1, sw_cycle=BOUNDED, sy=2.0**-3)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    fp = quantize_multiplier(np.resize(np.array(BOUNDED), 6))
    bound = dot_bound(inits["wq"], (1, 2, 3), 128, inits["bq"])
    assert np.all(ties_possible(fp.multiplier, fp.shift))  # an int32 accumulator could tie on every channel
    assert ties_possible(fp.multiplier, fp.shift, bound).tolist() == [False, True] * 3
    x = np.random.default_rng(4).integers(-128, 128, size=(1, 3, 16, 16)).astype(np.int8)
    got, shifts = _kernel_layer(model, x)
    assert shifts.tolist() == [36, 36 + 64] * 3  # short form (high word, half up) / words, half to even
    want = _ort(model, {"x": x})
    assert _exact_ties(model, x) >= 4 and len(np.unique(want)) > 15  # ties on the tying channels; not all clamped
    np.testing.assert_array_equal(got, want)


@needs_zig
def test_host_kernels_keep_half_even_where_a_tie_is_within_the_bound(monkeypatch) -> None:
    from edgekit.compiler.backends.aot_c import nn as aot_nn

    model = _tie_layer("conv", 3, 6, 16, 3, 1, 1, sw_cycle=(2.0**-6,), sy=2.0**-3)
    x = np.random.default_rng(4).integers(-128, 128, size=(1, 3, 16, 16)).astype(np.int8)
    want = _ort(model, {"x": x})
    got, shifts = _kernel_layer(model, x)
    assert shifts.tolist() == [36 + 64] * 6
    np.testing.assert_array_equal(got, want)
    # Forced to the short form, the kernel rounds the ties below an odd step up: not onnxruntime's value.
    monkeypatch.setattr(aot_nn, "ties_possible", lambda m, n, bound=None: np.zeros(np.shape(m), bool))
    got, shifts = _kernel_layer(model, x)
    assert shifts.tolist() == [36] * 6
    assert np.sum(got != want) >= 2 and np.abs(got.astype(np.int32) - want).max() == 1


# -- stm32h7 machine code --------------------------------------------------- #


def _thumb_instructions(code: bytes) -> list[tuple[int, int | None]]:
    """Splits Thumb-2 code into (first halfword, second halfword or None)."""
    out, i = [], 0
    while i + 2 <= len(code):
        hw = struct.unpack_from("<H", code, i)[0]
        if hw >> 11 in (0b11101, 0b11110, 0b11111) and i + 4 <= len(code):
            out.append((hw, struct.unpack_from("<H", code, i + 2)[0]))
            i += 4
        else:
            out.append((hw, None))
            i += 2
    return out


def _is_call(hw: int, hw2: int | None) -> bool:
    if hw2 is None:
        return hw & 0xFF87 == 0x4780  # BLX register
    return hw & 0xF800 == 0xF000 and (hw2 & 0xD000 == 0xD000 or hw2 & 0xD001 == 0xC000)  # BL, BLX immediate


def _is_smlad(hw: int, hw2: int | None) -> bool:
    return hw2 is not None and hw & 0xFFF0 == 0xFB20 and hw2 & 0x00E0 == 0 and hw2 >> 12 != 0xF


def _functions(obj: Path) -> dict[str, bytes]:
    from elftools.elf.elffile import ELFFile

    with open(obj, "rb") as fh:
        elf = ELFFile(fh)
        sections = {i: s for i, s in enumerate(elf.iter_sections())}
        out = {}
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            if sym["st_info"]["type"] != "STT_FUNC" or not sym["st_size"]:
                continue
            data = sections[sym["st_shndx"]].data()
            start = sym["st_value"] & ~1
            out[sym.name] = data[start : start + sym["st_size"]]
    return out


@needs_zig
def test_stm32h7_int8_inner_loops_use_smlad_and_call_nothing(tmp_path: Path) -> None:
    board, target = get_board("stm32h7")
    prepared = load_model(_qdq_layer(*LAYERS["conv3x3_pad_odd"], seed=1))
    art = compile_aot(prepared, target.tvm_target())
    assert "ek_nn_s8" in art.graph.extern_names()
    (tmp_path / "model.c").write_text(art.model_c)
    (tmp_path / "model.h").write_text(art.model_h)
    spec = firmware.firmware_spec(board.name)
    (obj,) = firmware.compile_c(firmware.find_toolchain(cross=True), [tmp_path / "model.c"], tmp_path / "obj",
                                [*firmware.cc_flags(target), *spec.flags], [tmp_path])  # fmt: skip
    funcs = _functions(obj)
    for name in ("ek_nn_dot_2x2", "ek_nn_dot_2x1", "ek_nn_dw3_row"):
        insns = _thumb_instructions(funcs[name])
        assert not [i for i in insns if _is_call(*i)], f"{name} calls a function"
        assert any(_is_smlad(*i) for i in insns), f"{name} has no SMLAD"
    # The decoder itself: a BL to memcpy and an SMLAD are recognised.
    assert _is_call(0xF7FF, 0xFFFE) and _is_smlad(0xFB29, 0x5506) and not _is_smlad(0xFB29, 0xF506)


# -- tiny float I/O: float <-> int64 helpers ----------------------------------- #


def test_compiler_rt_conversions_match_c_casts(tmp_path: Path) -> None:
    """ek_compiler_rt.c, built for the host under other names, against the host compiler's casts."""
    src = data_dir("firmware_stubs") / "runtime" / "ek_compiler_rt.c"
    driver = tmp_path / "driver.c"
    driver.write_text(r"""
#include <stdint.h>
#include <stdio.h>
int64_t t_fixsfdi(float); uint64_t t_fixunssfdi(float); float t_floatdisf(int64_t); float t_floatundisf(uint64_t);
int main(void) {
  uint32_t s = 12345u; int bad = 0, i;
  for (i = 0; i < 200000; ++i) {
    uint64_t r; float f; uint32_t u;
    s = s * 1664525u + 1013904223u; r = ((uint64_t)s << 32);
    s = s * 1664525u + 1013904223u; r |= s;
    u = (uint32_t)(r >> 7);
    u = (u & 0x807FFFFFu) | ((uint32_t)(100u + (u >> 23) % 90u) << 23); /* |f| in [2^-27, 2^63) */
    __builtin_memcpy(&f, &u, 4);
    if (f > -9.2e18f && f < 9.2e18f && t_fixsfdi(f) != (int64_t)f) bad++;
    if (f >= 0.0f && f < 1.8e19f && t_fixunssfdi(f) != (uint64_t)f) bad++;
    if (t_floatdisf((int64_t)(r >> (i % 64))) != (float)(int64_t)(r >> (i % 64))) bad++;
    if (t_floatdisf(-(int64_t)(r >> (1 + i % 63))) != (float)(-(int64_t)(r >> (1 + i % 63)))) bad++;
    if (t_floatundisf(r >> (i % 64)) != (float)(r >> (i % 64))) bad++;
  }
  printf("%d\n", bad);
  return 0;
}
""")
    names = {"__fixsfdi": "t_fixsfdi", "__fixunssfdi": "t_fixunssfdi", "__floatdisf": "t_floatdisf",
             "__floatundisf": "t_floatundisf"}  # fmt: skip
    toolchain = firmware.find_toolchain(cross=False)
    exe = tmp_path / "rt"
    defs = [f"-D{k}={v}" for k, v in names.items()]
    subprocess.run([*toolchain.command, "-O2", *defs, str(src), str(driver), "-o", str(exe)], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "0"


def _tiny_qdq_gemm(n_in: int, n_out: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A float-I/O Gemm quantized by edgekit (QuantizeLinear at the input, DequantizeLinear at the output)."""
    from edgekit.compress import QuantConfig, quantize

    rng = np.random.default_rng(n_in * 10 + n_out)
    w = numpy_helper.from_array(rng.standard_normal((n_out, n_in)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), "b")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])], [w, b])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    q = quantize(model, QuantConfig(), calibration={"x": rng.standard_normal((32, n_in)).astype(np.float32)})
    return q.model, {"x": rng.standard_normal((1, n_in)).astype(np.float32)}


@needs_zig
@needs_sim
@pytest.mark.parametrize(("board", "n_in", "n_out"), [("rv32-mcu-sim", 1, 1), ("stm32h7", 1, 1), ("stm32h7", 4, 2)])
def test_tiny_float_io_links_and_runs(board: str, n_in: int, n_out: int, tmp_path: Path) -> None:
    """TVM's kernels for a layer this small convert float <-> int64 through __fixsfdi (it failed to link)."""
    model, feeds = _tiny_qdq_gemm(n_in, n_out)
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    pkg = tmp_path / "tiny.ekpkg"
    compile_model(str(path), board, str(pkg), options=CompileOptions(mcu_int8_kernels=False))
    results, _, _ = run_package(str(pkg), {"x": feeds["x"][None]}, sim=True)
    got = results[0][model.graph.output[0].name]
    want = _ort(model, feeds)
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "y")
    out_scale = float(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == dq.input[1])))
    assert got.shape == want.shape and np.abs(got - want).max() <= 1.01 * out_scale

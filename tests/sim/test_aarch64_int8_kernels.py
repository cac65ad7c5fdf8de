"""edgekit's int8 conv/matmul kernels on aarch64 Linux boards (raspberry-pi-4,
Cortex-A72: NEON, no SDOT) — firmware_stubs/nn/ek_nn_s8.c's NEON inner kernels.

The board's static runner (the AOT C that zig builds for ``-mcpu=cortex_a72``)
runs under qemu-aarch64 with the C kernels and without them (every layer on
TVM's integer lowering): outputs bit-exact, and within one step of
onnxruntime running the QDQ graph. The shipped object's inner loops are
disassembled: NEON widening multiplies, no float multiply-adds.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler import firmware
from edgekit.compiler.backends.aot_c import nn
from edgekit.compiler.backends.aot_c.pipeline import compile_aot
from edgekit.compiler.backends.llvm.linux_cross import link_runner, zig_flags
from edgekit.core.profiles import get_board
from edgekit.frontend.loader import load_model

from test_mcu_int8_blocks import _feeds as _block_feeds, _ort as _block_ort, _output_step, block_int8  # noqa: F401
from test_mcu_int8_kernels import LAYERS as MCU_LAYERS, _functions, _ort, _qdq_layer, _tie_feeds, _tie_layer

BOARD = "raspberry-pi-4"

needs_zig = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang not installed")
needs_qemu = pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-aarch64 not installed: apt-get install qemu-user")

# Channels not a multiple of the 4-channel block, 8-channel blocks and a 4-channel rest, odd K
# (a lone last k) and even K, padding, stride 2, 1x1 (the pointwise gather) with a pixel tail
# (25 = 4 blocks of 6 + 1), a lone pixel (fc: the 4x1 kernel); depthwise rows longer than the
# vectorized 8 and shorter, stride 1 and 2, 3x3 and 5x5.
LAYERS = {
    **{n: MCU_LAYERS[n] for n in ("conv3x3_pad_odd", "conv3x3_stride2", "conv1x1", "depthwise_s2", "fc")},
    "conv3x3_odd_k_12ch": ("conv", 3, 12, 9, 3, 1, 1),  # 8 + 4 channels, K = 27
    "depthwise_s1_wide": ("dw", 4, 4, 20, 3, 1, 1),
    "depthwise_5x5_s2_wide": ("dw", 3, 3, 21, 5, 2, 2),
    "depthwise_3x3_s2_wide": ("dw", 2, 2, 35, 3, 0, 2),
    "depthwise_5x5_s1_19": ("dw", 3, 3, 19, 5, 2, 1),  # 5x5 rows of 19: 8, 8 and an overlapping last 8
    "depthwise_5x5_s1_short": ("dw", 2, 2, 6, 5, 2, 1),  # rows of 6 (< 8): acc + ek_nn_requant_row
    # rows requantized in registers take 16 outputs per step (20 and 19 above: 0 and an overlapping 4 / 3)
    "depthwise_3x3_s1_12": ("dw", 3, 3, 12, 3, 1, 1),  # rows of 8-15: two steps of 8, at 0 and 4
    "depthwise_5x5_s1_40": ("dw", 2, 2, 40, 5, 2, 1),  # 16 at 0, 16 and an overlapping 24
    # Reductions over MAX_FLOAT_K (1024), which the float-accumulating generic kernel
    # may not take: on NEON they stay on the C kernels (int32 accumulators).
    "conv3x3_k1152": ("conv", 128, 12, 4, 3, 1, 1),
    "fc_k1100": ("fc", 1100, 10, 0, 0, 0, 1),
}


def matmul_rows_layer(rows: int, cin: int, cout: int, seed: int) -> onnx.ModelProto:
    """_qdq_layer's fully connected layer on ``rows`` input rows (a matmul of several pixels: output
    rows of ``cout`` channels, the tiles' other store)."""
    model = _qdq_layer("fc", cin, cout, 0, 0, 0, 1, seed=seed)
    for value, n in ((model.graph.input[0], cin), (model.graph.output[0], cout)):
        value.type.tensor_type.shape.dim[0].dim_value = rows
        value.type.tensor_type.shape.dim[1].dim_value = n
    return model


# Layers the tiles must leave to ek_nn_requant, and the matmul tiles' stores: 16 channels of
# which every third has a multiplier of 1.5 (shift 30, the 64-bit form) and the others exact
# ties (flagged shifts); matmuls of 13 rows (2 blocks of 6 + 1) x 13 channels (8 + 4 + 1) and
# 8 rows x 12 channels.
EXTRA_LAYERS = {
    "conv3x3_mixed_forms_16ch": lambda: _tie_layer("conv", 3, 16, 7, 3, 1, 1),
    "matmul_13rows_oc13": lambda: matmul_rows_layer(13, 21, 13, seed=7),
    "matmul_8rows_oc12": lambda: matmul_rows_layer(8, 40, 12, seed=8),
}


def _runner(model, int8_kernels: bool, tmp: Path, board: str = BOARD, strip: bool = True) -> Path:
    _board, target = get_board(board)
    tvm_target = target.tvm_target()
    art = compile_aot(load_model(model), tvm_target, fast_math=False, int8_kernels=int8_kernels)
    assert any(c.extern for c in art.graph.calls) == int8_kernels
    members = art.members()
    tmp.mkdir()
    runner = tmp / "runner"
    runner.write_bytes(link_runner(members, zig_flags(target, tvm_target), tmp, strip=strip))
    runner.chmod(0o755)
    (tmp / "weights.bin").write_bytes(members["weights.bin"])
    return runner


def _run(runner: Path, x: np.ndarray, out_shape: list[int], dtype: type = np.int8, qemu: str = "qemu-aarch64",
         log: Path | None = None) -> np.ndarray:  # fmt: skip
    """Runs the runner on x; with ``log``, qemu writes there the code it translates (``-d in_asm``)."""
    x.tofile(runner.parent / "in.bin")
    trace = ["-d", "in_asm", "-D", str(log)] if log else []
    subprocess.run([qemu, *trace, str(runner), str(runner.parent / "weights.bin"), "0", "1",
                    str(runner.parent / "in.bin"), str(runner.parent / "out.bin")], check=True, timeout=60)  # fmt: skip
    return np.fromfile(runner.parent / "out.bin", dtype).reshape(out_shape)


def _ran(log: Path) -> set[str]:
    """The functions whose code qemu translated, i.e. ran (an ``-d in_asm`` log of an unstripped runner)."""
    return {line.split()[1] for line in log.read_text().splitlines() if line.startswith("IN: ") and len(line.split()) > 1}


def check_layer(model: onnx.ModelProto, board: str, qemu: str, tmp_path: Path) -> set[str]:
    """The board's runner of one int8 layer, C kernels on and off: bit-exact, within 1 of onnxruntime.
    Returns the C kernels' functions (``ek_nn_*``) that ran."""
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    out_shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(5).integers(-128, 128, size=shape).astype(np.int8)
    log = tmp_path / "in_asm.log"
    outs = {on: _run(_runner(model, on, tmp_path / str(on), board, strip=not on), x, out_shape, qemu=qemu,
                     log=log if on else None) for on in (True, False)}  # fmt: skip
    np.testing.assert_array_equal(outs[True], outs[False])
    want = _ort(model, {"x": x})
    assert np.abs(outs[True].astype(np.int32) - want.astype(np.int32)).max() <= 1
    assert (want > -128).mean() > 0.2 and len(np.unique(want)) > 4  # not all clamped to one value
    return {name for name in _ran(log) if name.startswith("ek_nn_")}


def fused_tiles_expected(model: onnx.ModelProto) -> bool:
    """Whether a layer of LAYERS has a full 6-pixel block of 4 or more channels (a conv/matmul tile
    the kernels requantize in registers: every channel of these layers takes the high-word form)."""
    out = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    pixels = out[0] if len(out) == 2 else out[2] * out[3]
    group = next(a.i for n in model.graph.node for a in n.attribute if a.name == "group") if len(out) == 4 else 1
    return pixels >= 6 and out[1] >= 4 and group == 1


def dw_rows_expected(model: onnx.ModelProto) -> bool:
    """Whether a layer of LAYERS is a depthwise conv whose rows requantize in registers
    (ek_nn_dw_row_rq: 3x3 or 5x5, stride 1, rows of 8 or more outputs)."""
    conv = next(n for n in model.graph.node if n.op_type in ("Conv", "Gemm"))
    attrs = {a.name: list(a.ints) or a.i for a in conv.attribute}
    out = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    k = [d.dims for d in model.graph.initializer if d.name == "wq"][0][-1]
    return (conv.op_type == "Conv" and attrs["group"] == out[1] > 1 and attrs["strides"] == [1, 1] and k in (3, 5)
            and out[3] >= 8)  # fmt: skip


def check_block(block: tuple[Path, onnx.ModelProto], board: str, qemu: str, tmp_path: Path) -> None:
    """The board's runner of the MobileNetV3 block, C kernels on and off: bit-exact, within a step of onnxruntime."""
    path, model = block
    x = _block_feeds(4)["x"]
    out_shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    outs = {on: _run(_runner(onnx.load(path), on, tmp_path / str(on), board), x, out_shape, np.float32, qemu)
            for on in (True, False)}  # fmt: skip
    np.testing.assert_array_equal(outs[True], outs[False])
    want = _block_ort(model, {"x": x})
    assert np.abs(outs[True] - want).max() <= 1.01 * _output_step(model)
    assert np.abs(want).max() > 4 * _output_step(model)  # not a constant output


@needs_zig
@needs_qemu
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_neon_kernels_bit_exact_with_the_integer_lowering_under_qemu(name: str, tmp_path: Path) -> None:
    model = _qdq_layer(*LAYERS[name], seed=len(name))
    ran = check_layer(model, BOARD, "qemu-aarch64", tmp_path)
    # the tiles of 4 channels requantize in registers, a last 1-3 channels through ek_nn_requant
    assert ("ek_nn_dot_4xn_s8_rq" in ran) == fused_tiles_expected(model), ran
    assert ("ek_nn_dw_row_rq" in ran) == dw_rows_expected(model), ran


@needs_zig
@needs_qemu
@pytest.mark.parametrize("name", ["conv1x1", "conv3x3_k1152", "conv3x3_odd_k_12ch", "conv3x3_stride2"])
def test_neon_kernels_on_int16_columns_bit_exact_under_qemu(name: str, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """The int16-column kernels of larger models (8- and 4-channel tiles), forced on these layers."""
    monkeypatch.setattr(nn, "MAX_SCRATCH_SHARE", float("inf"))
    ran = check_layer(_qdq_layer(*LAYERS[name], seed=len(name)), BOARD, "qemu-aarch64", tmp_path)
    assert "ek_nn_dot_4xn_rq" in ran or "ek_nn_dot_8xn_rq" in ran, ran
    assert not {"ek_nn_dot_4xn_s8", "ek_nn_dot_4xn_s8_rq"} & ran, ran


def check_extra_layer(name: str, board: str, tmp_path: Path, tiles: set[str]) -> None:
    """An EXTRA_LAYERS layer bit-exact, and through the path it should take (tiles: the tile kernels
    that requantize in registers, as they should run on the matmuls)."""
    ran = check_layer(EXTRA_LAYERS[name](), board, "qemu-aarch64", tmp_path)
    if name.startswith("matmul"):
        assert tiles <= ran and "ek_nn_requant" in ran, ran  # the last channel of 13 or the tail row
    else:
        assert not [n for n in ran if n.endswith("_rq")] and "ek_nn_requant" in ran, ran


@pytest.fixture(params=["int8", "int16"])
def columns(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The A72 kernels' column layouts: int8 (EK_NN_COLS = 1, which the compiler picks for these small
    layers: their scratch would dominate the arena) and int16 (the layout of larger models, forced)."""
    if request.param == "int16":
        monkeypatch.setattr(nn, "MAX_SCRATCH_SHARE", float("inf"))
    return request.param


@needs_zig
@needs_qemu
@pytest.mark.parametrize("name", sorted(EXTRA_LAYERS))
def test_neon_tiles_requantize_in_registers_only_where_every_channel_can(name: str, columns: str,
                                                                        tmp_path: Path) -> None:
    tiles = {"ek_nn_dot_4xn_s8_rq"} if columns == "int8" else {"ek_nn_dot_8xn_rq", "ek_nn_dot_4xn_rq"}
    check_extra_layer(name, BOARD, tmp_path, tiles)


@needs_zig
@needs_qemu
def test_neon_kernels_bit_exact_on_a_mobilenetv3_block_under_qemu(block_int8: tuple[Path, onnx.ModelProto],
                                                                   tmp_path: Path) -> None:
    """HardSwish tables fused into the outputs, 5x5 and 3x3 depthwise, squeeze-excite, a residual add."""
    check_block(block_int8, BOARD, "qemu-aarch64", tmp_path)


def squeeze_excite_layer(channels: int, side: int) -> onnx.ModelProto:
    """An int8 QDQ squeeze-excite multiply: x * HardSigmoid(GlobalAveragePool(x)), ``channels`` planes of
    ``side`` x ``side`` (the multiply runs on ek_nn_mul_row: 16, then 8 values per step, then scalar)."""
    f32 = lambda v, n: numpy_helper.from_array(np.array(v, np.float32), n)  # noqa: E731
    s8 = lambda v, n: numpy_helper.from_array(np.array(v, np.int8), n)  # noqa: E731
    inits = [f32(0.03, "sx"), s8(-5, "zx"), f32(0.02, "sg"), s8(3, "zg"), f32(1 / 255, "sh"), s8(-128, "zh"),
             f32(0.025, "sy"), s8(2, "zy")]  # fmt: skip
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
        helper.make_node("GlobalAveragePool", ["xf"], ["g"]),
        helper.make_node("QuantizeLinear", ["g", "sg", "zg"], ["gq"]),
        helper.make_node("DequantizeLinear", ["gq", "sg", "zg"], ["gf"]),
        helper.make_node("HardSigmoid", ["gf"], ["h"], alpha=0.2, beta=0.5),
        helper.make_node("QuantizeLinear", ["h", "sh", "zh"], ["hq"]),
        helper.make_node("DequantizeLinear", ["hq", "sh", "zh"], ["hf"]),
        helper.make_node("Mul", ["xf", "hf"], ["m"]),
        helper.make_node("QuantizeLinear", ["m", "sy", "zy"], ["y"]),
    ]
    shape = [1, channels, side, side]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.INT8, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, shape)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@needs_zig
@needs_qemu
@pytest.mark.parametrize("board", ["raspberry-pi-4", "raspberry-pi-5"])
def test_neon_squeeze_excite_multiply_bit_exact_under_qemu(board: str, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """Planes of 25 values: one step of 16, one of 8 and a scalar last value of ek_nn_mul_row."""
    if board == "raspberry-pi-5":
        monkeypatch.setenv("QEMU_CPU", "cortex-a76")
    ran = check_layer(squeeze_excite_layer(4, 5), board, "qemu-aarch64", tmp_path)
    assert "ek_nn_mul_row" in ran, ran


needs_objdump = pytest.mark.skipif(shutil.which("llvm-objdump") is None, reason="llvm-objdump not installed")


def aarch64_disassembly(obj: Path, symbol: str | None = None) -> str:
    """llvm-objdump's disassembly of an aarch64 object (one function, or all), with the dot-product
    extension known (so an ``sdot`` reads as one)."""
    args = ["llvm-objdump", "-d", "--mattr=+dotprod", str(obj)]
    if symbol:
        args.insert(2, f"--disassemble-symbols={symbol}")
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def aarch64_mnemonics(obj: Path, symbol: str | None = None) -> list[str]:
    """The instruction mnemonics of an aarch64 object (one function, or all): aarch64_disassembly's."""
    text = aarch64_disassembly(obj, symbol)
    return [m.group(1) for m in re.finditer(r"^\s+[0-9a-f]+:(?:\s[0-9a-f]{2}){4}\s+(\S+)", text, re.M)]


def _shipped_object(board: str, tmp_path: Path, layer: str = "conv3x3_pad_odd") -> Path:
    """model.o of an int8 layer of LAYERS (a padded 3x3 conv) as link_runner compiles it for ``board`` (zig,
    the board's -mcpu)."""
    _board, target = get_board(board)
    tvm_target = target.tvm_target()
    art = compile_aot(load_model(_qdq_layer(*LAYERS[layer], seed=1)), tvm_target, fast_math=False)
    assert "ek_nn_s8" in art.graph.extern_names()
    (tmp_path / layer).mkdir()
    (tmp_path / layer / "model.c").write_text(art.model_c)
    (tmp_path / layer / "model.h").write_text(art.model_h)
    (obj,) = firmware.compile_c(firmware.find_toolchain(cross=True), [tmp_path / layer / "model.c"],
                                tmp_path / layer / "obj", [*zig_flags(target, tvm_target)], [tmp_path / layer])  # fmt: skip
    return obj


@needs_zig
@needs_objdump
def test_shipped_aarch64_int8_conv_uses_neon_widening_multiplies(tmp_path: Path) -> None:
    obj = _shipped_object(BOARD, tmp_path)
    kernels = [n for n in _functions(obj) if n.startswith("ek_nn_dot_")]
    assert sorted(kernels) == ["ek_nn_dot_4x1", "ek_nn_dot_4x1_s8", "ek_nn_dot_4xn", "ek_nn_dot_4xn_rq",
                               "ek_nn_dot_4xn_s8", "ek_nn_dot_4xn_s8_rq", "ek_nn_dot_8xn", "ek_nn_dot_8xn_rq"]
    for name in kernels:
        ops = aarch64_mnemonics(obj, name)
        assert any(op in ("smlal", "smlal2", "smull", "sadalp", "sdot") for op in ops), f"{name}: no NEON widening multiply"
        assert not [op for op in ops if op.startswith(("fmadd", "fmla", "fmul", "scvtf"))], f"{name} accumulates in float"
        assert not [op for op in ops if op in ("bl", "blr")], f"{name} calls a function"
    # the requantization of a 6-pixel block and of a depthwise row: 4 lanes at a time; the *_rq
    # tiles requantize their accumulator registers (no int32 store, no call of ek_nn_requant)
    for name in ("ek_nn_requant", "ek_nn_requant_row", "ek_nn_dot_8xn_rq", "ek_nn_dot_4xn_rq", "ek_nn_dot_4xn_s8_rq",
                 "ek_nn_dw_row_rq"):
        assert "sqdmulh" in aarch64_mnemonics(obj, name), f"{name} is scalar"
    # depthwise rows: plain C on the int16 plane, vectorized by clang (int16 x int16 -> int32)
    for name in ("ek_nn_dw_row", "ek_nn_dw_row_rq"):
        ops = aarch64_mnemonics(obj, name)
        assert "smlal" in ops and not [op for op in ops if op.startswith(("fmadd", "fmla"))], name

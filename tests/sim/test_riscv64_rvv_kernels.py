"""edgekit's int8 conv/matmul kernels on a riscv64 board with the V extension
(bpi-f3: SpacemiT X60, RVV 1.0, VLEN 256) — firmware_stubs/nn/ek_nn_s8.c's RVV
inner kernels (EK_NN_RVV: 32 channels' int8 weights per vector, widened to
int16, one ``vwmacc.vx`` per pixel into int32 lanes; nn_rv64.pack_rvv).

The board's static runner (zig ``-mcpu=spacemit_x60+v-zicond``) runs under
qemu-riscv64 with the board's vector unit (``QEMU_CPU``, from its profile)
with the C kernels and without them (every layer on TVM's integer lowering):
outputs bit-exact, and within one step of onnxruntime running the QDQ graph.
Depthwise runs on RVV too (int16 plane rows, one ``vwmacc.vx`` per tap). The
shipped object's conv and depthwise kernels are disassembled: vector widening MACs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.cli.main import main
from edgekit.compiler.backends.aot_c.nn import uses_rv64, uses_rvv
from edgekit.compiler.backends.aot_c.nn_rv64 import RVV_BLOCK, pack_rvv
from edgekit.core.profiles import get_board, load_profiles

from test_aarch64_int8_kernels import (
    _ran,
    _run,
    _runner,
    _shipped_object,
    check_layer,
    matmul_rows_layer,
    squeeze_excite_layer,
)
from test_mcu_int8_blocks import _feeds as _block_feeds, _ort as _block_ort, _output_step, block_int8  # noqa: F401
from test_mcu_int8_kernels import _exact_ties, _functions, _ort, _qdq_layer, _tie_feeds, _tie_layer

BOARD = "bpi-f3"
QEMU = "qemu-riscv64"

needs_zig = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang not installed")
needs_qemu = pytest.mark.skipif(shutil.which(QEMU) is None, reason="qemu-riscv64 not installed: apt-get install qemu-user")
needs_objdump = pytest.mark.skipif(shutil.which("llvm-objdump") is None, reason="llvm-objdump not installed")

# Channel counts around the 32-channel vectors (40: 32 + 8; 33: 32 + a lone one), padding and
# stride 2 (gathered columns), a 1x1 layer read in place with a pixel tail (25 = 4 blocks of 6
# + 1), a lone pixel (fc: the 32x1 kernel) and a reduction over 1024 (int32 sums, exact).
LAYERS = {
    "conv3x3_pad_40ch": ("conv", 5, 40, 9, 3, 1, 1),
    "conv3x3_stride2_33ch": ("conv", 6, 33, 11, 3, 1, 2),
    "conv1x1_tail_12ch": ("conv", 12, 10, 5, 1, 0, 1),
    "fc_37x13": ("fc", 37, 13, 0, 0, 0, 1),
    "fc_k1100": ("fc", 1100, 10, 0, 0, 0, 1),
    # depthwise rows of up to 32 outputs per vector: 40 = 32 + 8, stride 2 (strided loads), 5x5, 7x7
    "depthwise_3x3_s1_40": ("dw", 3, 3, 40, 3, 1, 1),
    "depthwise_3x3_s2": ("dw", 4, 4, 11, 3, 1, 2),
    "depthwise_5x5_s1": ("dw", 4, 4, 14, 5, 2, 1),
    "depthwise_7x7_s1": ("dw", 2, 2, 11, 7, 3, 1),
}


@pytest.fixture
def board_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu-user runs the board's CPU (``-cpu rv64,v=true,vlen=256,...`` of its simulator) in this test."""
    machine = shlex.split(get_board(BOARD)[0].simulator.machine)
    monkeypatch.setenv("QEMU_CPU", machine[machine.index("-cpu") + 1])


def test_the_board_and_its_target_take_the_rvv_kernels() -> None:
    board, target = get_board(BOARD)
    assert board.name in load_profiles().boards.available() and board.cores == 8
    assert target.isa == "riscv64" and "v" in target.vector_extensions
    assert uses_rv64(target.tvm_target()) and uses_rvv(target.tvm_target())
    u74 = get_board("visionfive2")[1].tvm_target()
    assert uses_rv64(u74) and not uses_rvv(u74)  # RV64GC: the packed-int64 kernels


def test_edgekit_boards_lists_the_board(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "boards", "--json"]) == 0
    (board,) = [b for b in json.loads(capsys.readouterr().out)["boards"] if b["name"] == BOARD]
    assert (board["target"], board["simulator"], board["cores"], board["clock_hz"]) == ("riscv64-x60", "qemu-user", 8, 1_600_000_000)


@needs_zig
@needs_qemu
def test_bench_sim_runs_the_package_on_the_profiles_vector_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``edgekit bench --sim`` takes qemu's CPU from the profile (``-cpu rv64,v=true,...``; no QEMU_CPU
    here): the digits CNN's package, whose TVM kernels LLVM vectorized for the X60, matches onnxruntime."""
    from edgekit.compiler.driver import compile_model
    from edgekit.examples import __file__ as examples_init

    monkeypatch.delenv("QEMU_CPU", raising=False)
    examples = Path(examples_init).parent
    pkg = tmp_path / "digits-bpi-f3.ekpkg"
    compile_model(examples / "digits_cnn.onnx", BOARD, pkg)
    assert main(["bench", str(pkg), "--sim", "--runs", "1", "--warmup", "0", "--input",
                 str(examples / "digits_input.npz"), "--compare-ort", "--json", "-"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["simulated"] is True and report["outputs_agree"] is True
    assert report["ort_max_rel_error"]["max"] <= 1e-4


def test_rvv_weights_are_32_channel_vectors_per_k() -> None:
    rows = np.arange(-60, 60, dtype=np.int8).reshape(40, 3)  # OC 40, K 3
    packed = pack_rvv(rows).reshape(2, 3, RVV_BLOCK)  # [OC/32][K][32]
    np.testing.assert_array_equal(packed[0], rows[:32].T)
    np.testing.assert_array_equal(packed[1, :, :8], rows[32:].T)
    assert not packed[1, :, 8:].any()  # channels past OC are zero


@needs_zig
@needs_qemu
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_rvv_kernels_bit_exact_with_the_integer_lowering_under_qemu(name: str, board_cpu: None, tmp_path: Path) -> None:
    model = _qdq_layer(*LAYERS[name], seed=len(name))
    ran = check_layer(model, BOARD, QEMU, tmp_path)
    out = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    pixels = out[0] if len(out) == 2 else out[2] * out[3]
    if name.startswith("depthwise"):
        assert "ek_nn_rvv_depthwise" in ran and not [f for f in ran if f.startswith("ek_nn_rv_dw")], ran
        return
    expected = {"ek_nn_rvv_dot_32xn"} if pixels >= 6 else set()  # blocks of 6 pixels, then lone ones
    expected |= {"ek_nn_rvv_dot_32x1"} if pixels % 6 else set()
    assert {f for f in ran if "_dot_" in f} == expected, ran  # not the packed-int64 kernels (ek_nn_dot_*)


@needs_zig
@needs_qemu
@pytest.mark.parametrize("name", ["conv3x3_pad_40ch", "depthwise_3x3_s1_40"])
def test_rvv_kernels_bit_exact_on_a_512_bit_vector_unit(name: str, monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """The same code on VLEN 512 (zvl256b is a minimum): blocks stay 32 channels / outputs wide."""
    machine = shlex.split(get_board(BOARD)[0].simulator.machine)
    monkeypatch.setenv("QEMU_CPU", machine[machine.index("-cpu") + 1].replace("vlen=256", "vlen=512"))
    assert "vlen=512" in os.environ["QEMU_CPU"]
    check_layer(_qdq_layer(*LAYERS[name], seed=len(name)), BOARD, QEMU, tmp_path)


@needs_zig
@needs_qemu
@pytest.mark.parametrize("side", [5, 24])
def test_rvv_squeeze_excite_bit_exact_under_qemu(side: int, board_cpu: None, tmp_path: Path) -> None:
    """The squeeze-excite multiply (ek_nn_mul_row, riscv64's 64-bit form as LLVM vectorizes it for the
    X60; 576 values per plane: the 256-entry table of products). (ek_nn_sum_s8 runs in the MobileNetV3 block.)"""
    ran = check_layer(squeeze_excite_layer(4, side), BOARD, QEMU, tmp_path)
    assert "ek_nn_mul_row" in ran, ran


@needs_zig
@needs_qemu
def test_rvv_matmul_over_several_rows_bit_exact_under_qemu(board_cpu: None, tmp_path: Path) -> None:
    """A Gemm of 13 rows x 40 channels: two gathered 6-row blocks (contiguous stores of 32 + 8 channels) and a tail row."""
    ran = check_layer(matmul_rows_layer(13, 21, 40, seed=7), BOARD, QEMU, tmp_path)
    assert {"ek_nn_rvv_dot_32xn", "ek_nn_rvv_dot_32x1"} <= ran


@needs_zig
@needs_qemu
@pytest.mark.parametrize("layer", [("conv", 3, 36, 7, 3, 1, 1), ("dw", 6, 6, 8, 3, 1, 1)], ids=["conv", "depthwise"])
def test_rvv_kernels_round_exact_ties_to_even_under_qemu(layer: tuple, board_cpu: None, tmp_path: Path) -> None:
    """Power-of-two scales (test_mcu_int8_kernels): tie-flagged and 64-bit-form channels, so the
    layer's sums go through ek_nn_requant(_row); every exact tie rounded to even as onnxruntime does."""
    model = _tie_layer(*layer)
    out_shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    x = _tie_feeds(model, 1)[0]
    assert _exact_ties(model, x) >= 4  # not vacuous
    want = _ort(model, {"x": x})
    for on in (True, False):
        np.testing.assert_array_equal(_run(_runner(model, on, tmp_path / str(on), BOARD), x, out_shape, qemu=QEMU), want)


@needs_zig
@needs_qemu
def test_rvv_kernels_bit_exact_on_a_mobilenetv3_block_under_qemu(block_int8: tuple[Path, onnx.ModelProto],
                                                                 board_cpu: None, tmp_path: Path) -> None:
    """HardSwish tables fused into the outputs (indexed loads), 5x5 and 3x3 depthwise, squeeze-excite,
    a residual add: bit-exact with visionfive2's scalar RV64 kernels, within a step of onnxruntime.
    (Not with the board's own kernels-off build: LLVM vectorizes TVM's float -> int8 quantize into
    ``vfncvt.rtz``, on which qemu 7.2 aborts; the C kernels' quantize is scalar.)"""
    path, model = block_int8
    x = _block_feeds(4)["x"]
    out_shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    log = tmp_path / "in_asm.log"
    outs = {board: _run(_runner(onnx.load(path), True, tmp_path / board, board, strip=board != BOARD), x, out_shape,
                        np.float32, QEMU, log=log if board == BOARD else None)
            for board in (BOARD, "visionfive2")}  # fmt: skip
    np.testing.assert_array_equal(outs[BOARD], outs["visionfive2"])
    ran = {f for f in _ran(log) if f.startswith("ek_nn_")}
    assert {"ek_nn_rvv_dot_32xn", "ek_nn_rvv_depthwise", "ek_nn_sum_s8", "ek_nn_mul_row", "ek_nn_quantize_s8"} <= ran
    want = _block_ort(model, {"x": x})
    assert np.abs(outs[BOARD] - want).max() <= 1.01 * _output_step(model)
    assert np.abs(want).max() > 4 * _output_step(model)  # not a constant output


@needs_zig
@needs_qemu
def test_rvv_input_quantize_rounds_ties_to_even_and_saturates_under_qemu(board_cpu: None, tmp_path: Path) -> None:
    """A float input's QuantizeLinear (ek_nn_quantize_s8, 32 floats per vector and a tail of 8): exact ties,
    values past the int8 range, infinities and NaN as visionfive2's scalar code and numpy's rint."""
    n, scale, zp = 200, np.float32(0.5), 3
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])], "q",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, n])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT8, [1, n])],
        [onnx.numpy_helper.from_array(np.array(scale), "s"), onnx.numpy_helper.from_array(np.array(zp, np.int8), "z")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    x = (np.arange(n, dtype=np.float32) - 100) * np.float32(0.25)  # every other value an exact tie of x / 0.5
    x[:6] = [1000.0, -1000.0, np.inf, -np.inf, np.nan, 63.75]
    outs = {board: _run(_runner(model, True, tmp_path / board, board), x, [1, n], np.int8, QEMU)
            for board in (BOARD, "visionfive2")}  # fmt: skip
    np.testing.assert_array_equal(outs[BOARD], outs["visionfive2"])
    want = np.clip(np.rint(x[6:] / scale) + zp, -128, 127)
    np.testing.assert_array_equal(outs[BOARD][0, 6:], want)
    assert list(outs[BOARD][0, :5]) == [127, -128, 127, -128, 127]  # NaN clamps to 127 as the scalar compares


def _rv_mnemonics(obj: Path, symbol: str) -> list[str]:
    """The instruction mnemonics of one function of a riscv64 object (its own section), vector and
    bit-manipulation instructions decoded."""
    text = subprocess.run(["llvm-objdump", "-d", "--mattr=+v,+zba,+zbb,+zbs", "--no-show-raw-insn", "-j",
                           f".text.{symbol}", str(obj)], check=True, capture_output=True, text=True).stdout  # fmt: skip
    return [m.group(1) for m in re.finditer(r"^\s+[0-9a-f]+:\s+(\S+)", text, re.M)]


@needs_zig
@needs_objdump
def test_shipped_rvv_int8_conv_uses_vector_widening_macs(tmp_path: Path) -> None:
    obj = _shipped_object(BOARD, tmp_path)
    kernels = sorted(n for n in _functions(obj) if n.startswith(("ek_nn_dot_", "ek_nn_rvv_", "ek_nn_rv_")))
    assert kernels == ["ek_nn_rvv_depthwise", "ek_nn_rvv_dot_32x1", "ek_nn_rvv_dot_32xn"]
    for name in kernels:
        ops = _rv_mnemonics(obj, name)
        macs = ops.count("vwmacc.vx")
        assert macs >= {"ek_nn_rvv_dot_32xn": 6, "ek_nn_rvv_depthwise": 2}.get(name, 1), f"{name}: {ops}"
        assert "vmulh.vv" in ops and "vssra.vv" in ops, f"{name}: {ops}"  # requantized in the lanes
        assert not [op for op in ops if op.startswith("f")], f"{name} uses the FPU"
        if name != "ek_nn_rvv_depthwise":  # (its plane is int16 already; it calls ek_nn_requant_row)
            assert "vsext.vf2" in ops and not {"mul", "call", "jalr"} & set(ops), f"{name}: {ops}"

"""edgekit's int8 conv/matmul kernels on riscv64 Linux boards (visionfive2,
SiFive U74: RV64GC, no V) — firmware_stubs/nn/ek_nn_s8.c's packed-int64
inner kernels (three channels' weights per 64-bit word, nn_rv64).

The board's static runner (the AOT C that zig builds for ``-mcpu=sifive_u74``)
runs under qemu-riscv64 with the C kernels and without them (every layer on
TVM's integer lowering): outputs bit-exact, and within one step of
onnxruntime running the QDQ graph. The shipped object's inner loops are
disassembled: integer multiplies, no float multiply-adds.
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

from edgekit.compiler.backends.aot_c.nn_rv64 import pack_rows, run_length

from test_aarch64_int8_kernels import LAYERS as NEON_LAYERS, _run, _runner, _shipped_object, check_block, check_layer
from test_mcu_int8_blocks import block_int8  # noqa: F401
from test_mcu_int8_kernels import TIE_LAYERS, _exact_ties, _functions, _ort, _qdq_layer, _tie_feeds, _tie_layer

BOARD = "visionfive2"

needs_zig = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang not installed")
needs_qemu = pytest.mark.skipif(shutil.which("qemu-riscv64") is None, reason="qemu-riscv64 not installed: apt-get install qemu-user")

# The aarch64 shapes (K over 1024 included: integer accumulators), plus channel counts
# around the 3- and 6-channel blocks (5: a 3-channel rest with 1 pad; 7: 6 + 1 with 2 pad)
# and a 1x1 layer read in place (no gather) with a pixel tail (25 = 4 blocks of 6 + 1);
LAYERS = {
    **NEON_LAYERS,
    "conv3x3_5ch": ("conv", 4, 5, 8, 3, 1, 1),
    "conv1x1_7ch": ("conv", 9, 7, 5, 1, 0, 1),
    # packed depthwise rows: a last triple of outputs with 2 lanes past the row, 7x7 (49 taps)
    "depthwise_5x5_s1": ("dw", 4, 4, 14, 5, 2, 1),
    "depthwise_7x7_s1": ("dw", 2, 2, 11, 7, 3, 1),
}
# exact ties (test_mcu_int8_kernels), plus a 5x5 depthwise: its packed rows
TIE_CASES = {**TIE_LAYERS, "depthwise_5x5": ("dw", 6, 6, 8, 5, 2, 1)}


@needs_zig
@needs_qemu
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_rv64_kernels_bit_exact_with_the_integer_lowering_under_qemu(name: str, tmp_path: Path) -> None:
    check_layer(_qdq_layer(*LAYERS[name], seed=len(name)), BOARD, "qemu-riscv64", tmp_path)


@needs_zig
@needs_qemu
def test_rv64_matmul_over_several_rows_bit_exact_under_qemu(tmp_path: Path) -> None:
    """A Gemm of 8 rows: one gathered 6-row block (outputs strided by N, the unfused requantization) and 2 tail rows."""
    model = _qdq_layer("fc", 40, 11, 0, 0, 0, 1, seed=3)
    for value, width in ((model.graph.input[0], 40), (model.graph.output[0], 11)):
        value.type.tensor_type.shape.dim[0].dim_value = 8
        assert value.type.tensor_type.shape.dim[1].dim_value == width
    check_layer(model, BOARD, "qemu-riscv64", tmp_path)


@needs_zig
@needs_qemu
def test_rv64_kernels_bit_exact_on_a_mobilenetv3_block_under_qemu(block_int8: tuple[Path, onnx.ModelProto],
                                                                  tmp_path: Path) -> None:
    """HardSwish tables fused into the outputs, 5x5 and 3x3 depthwise, squeeze-excite, a residual add."""
    check_block(block_int8, BOARD, "qemu-riscv64", tmp_path)


@needs_zig
@needs_qemu
@pytest.mark.parametrize("name", sorted(TIE_CASES))
def test_rv64_kernels_round_exact_ties_to_even_under_qemu(name: str, tmp_path: Path) -> None:
    """Power-of-two scales (test_mcu_int8_kernels): per channel the tie-flagged high-word form,
    a multiplier of 1.5 (the 64-bit form) and plain high-word channels, next to each other in
    one packed word; every exact tie rounded to even as onnxruntime does."""
    model = _tie_layer(*TIE_CASES[name])
    out_shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    x = _tie_feeds(model, 1)[0]
    assert _exact_ties(model, x) >= 4  # not vacuous
    want = _ort(model, {"x": x})
    for on in (True, False):
        np.testing.assert_array_equal(_run(_runner(model, on, tmp_path / str(on), BOARD), x, out_shape, qemu="qemu-riscv64"), want)


def test_packed_lanes_hold_three_channels_exactly_over_a_run() -> None:
    """The worst case the run length admits: every |x * w| at its bound, all of one sign per lane."""
    rng = np.random.default_rng(0)
    rows = rng.integers(-128, 128, size=(5, 300)).astype(np.int8)
    rows[1] = -128  # the largest |w|: L = 63
    n = run_length(rows)
    assert n == 63
    words = pack_rows(rows).view("<i8").reshape(300, 2).T  # one 6-channel block: [K][2]
    for x in (np.full(300, -128, np.int64), rng.integers(-128, 128, 300)):
        for start in range(0, 300, n):
            sl = slice(start, start + n)
            acc = (x[sl, None] * words[:, sl].T).sum(axis=0)  # two packed words
            s0 = (acc << 43) >> 43
            t = (acc - s0) >> 21
            s1 = (t << 43) >> 43
            got = np.stack([s0, s1, (t - s1) >> 21], axis=1).reshape(-1)[:5]
            np.testing.assert_array_equal(got, rows[:, sl].astype(np.int64) @ x[sl])
    # smaller weights give longer runs
    assert run_length((rows // 8).astype(np.int8)) > 4 * n


def _rv_mnemonics(obj: Path, symbol: str) -> list[str]:
    """The instruction mnemonics of one function of a riscv64 object (llvm-objdump; its own section)."""
    text = subprocess.run(["llvm-objdump", "-d", "-j", f".text.{symbol}", str(obj)],
                          check=True, capture_output=True, text=True).stdout  # fmt: skip
    return [m.group(1) for m in re.finditer(r"^\s+[0-9a-f]+:\s+(?:[0-9a-f]{2} ){2,4}\s*(\S+)", text, re.M)]


@needs_zig
@pytest.mark.skipif(shutil.which("llvm-objdump") is None, reason="llvm-objdump not installed")
def test_shipped_riscv64_int8_conv_uses_integer_multiplies(tmp_path: Path) -> None:
    obj = _shipped_object(BOARD, tmp_path)
    kernels = [n for n in _functions(obj) if n.startswith("ek_nn_dot_")]
    assert sorted(kernels) == ["ek_nn_dot_3x1", "ek_nn_dot_3xn", "ek_nn_dot_6x1", "ek_nn_dot_6xn",
                               "ek_nn_dot_rq_3xn", "ek_nn_dot_rq_6xn"]  # fmt: skip
    for name in kernels:
        ops = _rv_mnemonics(obj, name)
        # 6 x 6: 12 packed products per k (the fused kernel also multiplies each output by its multiplier)
        assert ops.count("mul") >= {"ek_nn_dot_6xn": 12, "ek_nn_dot_rq_6xn": 12 + 36}.get(name, 1), f"{name}: {ops}"
        assert not [op for op in ops if op.startswith("f")], f"{name} uses the FPU"
        assert not [op for op in ops if op in ("call", "jalr") or op.startswith("__")], f"{name} calls a function"

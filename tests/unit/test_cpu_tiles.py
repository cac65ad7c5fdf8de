"""The register-tile model of the CPU micro-kernel (backends.llvm.schedule.choose_tile), chosen by the target's registers."""

from __future__ import annotations

import pytest

tvm = pytest.importorskip("tvm")

from edgekit.compiler.backends.llvm.schedule import TILE_BYTES, choose_tile, simd_lanes, vector_registers


def _target(mcpu: str):
    return tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu})


def test_registers_follow_the_target_not_the_build_machine():
    assert vector_registers(_target("skylake-avx512")) == 32
    assert vector_registers(_target("znver5")) == 32
    assert vector_registers(_target("haswell")) == 16
    assert vector_registers(_target("znver2")) == 16


@pytest.mark.parametrize("mcpu", ["haswell", "skylake-avx512"])
def test_tiles_fit_the_registers_and_stay_under_the_stack_limit(mcpu):
    target = _target(mcpu)
    lanes, registers = simd_lanes(target), vector_registers(target)
    for channels in (lanes, 2 * lanes, 64, 512):
        for width in range(1, 65):
            vec, rows = choose_tile(channels, width, lanes, channels, registers)
            acc = rows * (vec // lanes)
            assert acc + vec // lanes + 1 <= registers
            assert rows * vec * 4 < TILE_BYTES  # a 1 KiB tile is not kept in registers


def test_avx512_tiles_a_7_wide_row_with_two_vectors():
    # ResNet-50's last stage (7x7 outputs): on 16 registers the model chose
    # 1 vector x 7 rows (7 accumulators, too few to cover FMA latency);
    # AVX-512's 32 registers hold 2 x 7 (77 -> 91 GMAC/s on Zen 5).
    assert choose_tile(512, 7, 16, 512, 32) == (32, 7)
    assert choose_tile(512, 7, 16, 512, 16) == (16, 7)
    assert choose_tile(64, 128, 8, 64, 16) == choose_tile(64, 128, 8, 64)  # AVX2 unchanged

"""The AVX2 table-lookup kernel (backends/llvm/lookup.py): telescoped ``vpshufb`` slices, exact on every int8 value.

Compiled for ``haswell`` whatever CPU runs the test; run where this CPU can
run AVX2 code.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from _host_cpu import needs_cpu

from edgekit.compiler.backends.llvm.lookup import _avx2_slices, _lookup_avx2_func

HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})


def _build(shape: tuple[int, ...]) -> tvm.runtime.Module:
    func = _lookup_avx2_func(shape)
    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), HASWELL)


def test_slices_telescope_to_the_table():
    table = np.random.default_rng(2).integers(-128, 128, 256).astype(np.int8)
    slices = _avx2_slices(table).reshape(16, 2, 16)
    assert np.array_equal(slices[:, 0], slices[:, 1])  # one copy per 128-bit lane
    for u in range(256):
        half, first = divmod(u >> 4, 8)
        entry = np.bitwise_xor.reduce(slices[half * 8 + first : half * 8 + 8, 0, u & 15])
        assert entry == table[u], u


def test_no_blends_in_the_kernel():
    asm = _build((1, 2, 96, 200)).inspect_source("asm")
    mnemonics = re.findall(r"^\s+(v\w+)", asm, flags=re.M)
    assert "vpblendvb" not in mnemonics
    assert mnemonics.count("vpshufb") >= 16 and "vpaddusb" in mnemonics, sorted(set(mnemonics))


@needs_cpu(HASWELL)
@pytest.mark.parametrize("shape", [(1, 1, 1, 20), (1, 1, 1, 32), (1, 300), (3, 37), (1, 2, 4, 72)])
def test_every_int8_value_whole_steps_overlapping_tail_and_scalar_gates(shape):
    rng = np.random.default_rng(sum(shape))
    table = rng.integers(-128, 128, 256).astype(np.int8)
    n = int(np.prod(shape))
    values = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, max(0, n - 256))])
    x = rng.permutation(values)[:n].astype(np.int8).reshape(shape) if n < 256 else values[:n].astype(np.int8).reshape(shape)
    out = tvm.runtime.tensor(np.zeros(shape, np.int8))
    _build(shape)["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(_avx2_slices(table)), out)
    np.testing.assert_array_equal(out.numpy(), table[x.astype(np.int64) + 128])

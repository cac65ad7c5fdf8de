"""AVX2-only targets skip a table's all-zero ``vpshufb`` slices (backends/llvm/lookup.py, issue #14).

The telescoped AVX2 lookup XORs 16 slices ``T_k ^ T_(k+1)``; where two
neighbouring 16-entry slices of the table are equal (hard-swish's zeros below
-3, hard-sigmoid's saturated ends) the difference is all zero and adds
nothing. On ``haswell``/``znver2`` code the kernels leave those slices out;
VNNI and VBMI targets read all 16 (their code unchanged); AVX512BW targets
without VBMI skip them in their 64-value kernels (test_lookup_zmm.py). Checked: which
slices each target reads, the kernels' shuffle counts in the assembly of a
hard-swish model built for ``haswell`` against the same build reading every slice, the
kernels exact on all 256 int8 values with slices left out, and the model
within 1 LSB of onnxruntime where this CPU runs AVX2 code.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from _host_cpu import needs_cpu
from _int8_checks import assert_within_one_lsb_of_onnxruntime, hard_swish_block, kernels_asm, quantized, run_built

import edgekit.compiler.backends.llvm.lookup as cpu_lookup
import edgekit.compiler.backends.llvm.pad as cpu_pad
from edgekit.compiler.backends.llvm.lookup import (
    ALL_SLICES,
    _avx2_slices,
    _lookup_avx2_func,
    avx2_live_slices,
    lookup_pad_avx2_func,
)

HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})


def _target(mcpu: str) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu})


def _sparse_table(seed: int) -> np.ndarray:
    """A table whose slices 0-2 (and 3) are equal, and whose upper half ends in three equal slices: 4 zero differences."""
    rng = np.random.default_rng(seed)
    t = rng.integers(-128, 128, 256).astype(np.int8)
    t[:64] = t[0]  # slices 0..3 equal: differences 0, 1, 2 are zero
    t[208:] = t[208]  # slices 13..15 equal: differences 13, 14 are zero (15 is the slice itself)
    return t


def test_only_avx2_only_targets_skip_zero_slices():
    slices = _avx2_slices(_sparse_table(1))
    for mcpu in ("haswell", "znver2"):
        live = avx2_live_slices(_target(mcpu), slices)
        assert live == tuple(k for k in ALL_SLICES if k not in (0, 1, 2, 13, 14)), (mcpu, live)
    for mcpu in ("alderlake", "znver4", "icelake-server", "sapphirerapids"):
        assert avx2_live_slices(_target(mcpu), slices) == ALL_SLICES, mcpu
    # AVX512BW without VBMI (skylake-avx512, cascadelake) skip them too, 64 values per step: test_lookup_zmm.
    assert avx2_live_slices(HASWELL, None) == ALL_SLICES


def _build(func: tvm.tirx.PrimFunc) -> tvm.runtime.Module:
    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), HASWELL)


def test_kernel_reads_only_live_slices():
    shape = (1, 4, 8, 64)  # whole steps only
    live = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15)
    count = {k: _build(_lookup_avx2_func(shape, k)).inspect_source("asm").count("vpshufb") for k in (live, ALL_SLICES)}
    assert count[live] * 16 == count[ALL_SLICES] * len(live), count


@needs_cpu(HASWELL)
@pytest.mark.parametrize("shape", [(1, 1, 1, 20), (1, 300), (3, 37), (1, 2, 4, 72)])
def test_every_int8_value_with_slices_left_out(shape):
    table = _sparse_table(sum(shape))
    live = avx2_live_slices(HASWELL, _avx2_slices(table))
    n = int(np.prod(shape))
    rng = np.random.default_rng(n)
    values = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, max(0, n - 256))])
    x = (rng.permutation(values)[:n] if n < 256 else values[:n]).astype(np.int8).reshape(shape)
    out = tvm.runtime.tensor(np.zeros(shape, np.int8))
    _build(_lookup_avx2_func(shape, live))["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(_avx2_slices(table)), out)
    np.testing.assert_array_equal(out.numpy(), table[x.astype(np.int64) + 128])


@needs_cpu(HASWELL)
def test_lookup_pad_with_slices_left_out():
    shape, out_shape = (1, 5, 6, 40), (1, 8, 10, 48)
    table = _sparse_table(7)
    live = avx2_live_slices(HASWELL, _avx2_slices(table))
    x = np.random.default_rng(0).integers(-128, 128, shape).astype(np.int8)
    x.reshape(-1)[:256] = np.arange(-128, 128)
    out = tvm.runtime.tensor(np.zeros(out_shape, np.int8))
    func = lookup_pad_avx2_func(shape, 1, 2, out_shape, border=-7, fill=5, live=live)
    _build(func)["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(_avx2_slices(table)), out)
    want = np.full(out_shape, -7, np.int8)
    want[..., 40:] = 5  # the channel fill, on every pixel
    want[:, 1:6, 2:8, :40] = table[x.astype(np.int64) + 128]
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.fixture(scope="module")
def hard_swish_int8(tmp_path_factory) -> str:
    rng = np.random.default_rng(6)
    calibration = {"x": (rng.standard_normal((16, 8, 12, 16)) * 2).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("live_slices"), hard_swish_block(seed=5, gated=False), calibration)


def _lookup_shuffles(model: str) -> dict[str, int]:
    asm = kernels_asm(model, "haswell")
    # By kind (the kernel names' numbering differs between builds): one lookup and one lookup-pad.
    return {("pad" if k.startswith("lookup_pad") else "lookup"): len(re.findall(r"^\s+vpshufb\s", v, flags=re.M))
            for k, v in asm.items() if k.startswith("lookup")}  # fmt: skip


def test_haswell_lookups_skip_zero_slices(hard_swish_int8, monkeypatch):
    """Each lookup kernel of the haswell build has fewer shuffles than with all 16 slices read (fails without the skip).

    With the int16 fixed forms off (lookup_fixed.py): they read no slice at all.
    """
    monkeypatch.setattr(cpu_lookup, "fixed_form", lambda _program, _table: None)
    skipping = _lookup_shuffles(hard_swish_int8)
    assert sorted(skipping) == ["lookup", "pad"], skipping
    for module in (cpu_lookup, cpu_pad):
        monkeypatch.setattr(module, "avx2_live_slices", lambda _target, _slices: ALL_SLICES)
    every = _lookup_shuffles(hard_swish_int8)
    assert skipping.keys() == every.keys(), (skipping, every)
    assert all(0 < skipping[k] < every[k] for k in every), (skipping, every)


@needs_cpu(HASWELL)
def test_haswell_build_within_one_lsb_of_onnxruntime(hard_swish_int8):
    x = (np.random.default_rng(8).standard_normal((1, 8, 12, 16)) * 2).astype(np.float32)
    assert_within_one_lsb_of_onnxruntime(hard_swish_int8, {"x": x}, run_built(hard_swish_int8, HASWELL, x))

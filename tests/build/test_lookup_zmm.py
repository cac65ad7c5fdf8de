"""Table lookups on AVX512BW targets without VBMI: 64 values per four ``vpermi2w`` (backends/llvm/lookup.py, issue #14).

Skylake-SP and Cascade Lake have no ``vpermb``/``vpermi2b`` (VBMI); their lookups
took the AVX2 kernel, 32 values per 16 ``vpshufb``. AVX512BW's word permute
``vpermi2w`` looks 32 values up in 64 words of the table (its bytes in pairs), two
per half of the table; the sign of ``x`` picks the half, its parity the byte
(:class:`~edgekit.compiler.backends.llvm.lookup.Zmm`). Checked: which targets take
it, the assembly of kernels compiled for ``cascadelake`` and ``skylake-avx512``
(whatever CPU runs the test), every int8 value of each kernel (whole steps, the
overlapping rest of 64 or 32, the lookup-pad, the blocked lookup of a depthwise
input) where this CPU runs the code, and a model's build bit-identical with the
AVX2 lookups and within 1 LSB of onnxruntime.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from _host_cpu import needs_cpu
from _int8_checks import assert_within_one_lsb_of_onnxruntime, hard_swish_block, kernel_calls, kernels_asm, quantized, run_built

import edgekit.compiler.backends.llvm.lookup as cpu_lookup
from edgekit.compiler.backends.llvm.depthwise_input import lookup_block_func
from edgekit.compiler.backends.llvm.lookup import (
    AVX2_LOOKUP,
    ZMM_LOOKUP,
    Zmm,
    _avx2_slices,
    _lookup_avx2_func,
    _steps,
    avx2_live_slices,
    avx2_operand,
    lookup_pad_avx2_func,
)

CASCADELAKE = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"})
VBMI = ("vpermb", "vpermi2b", "vpermt2b", "vpmultishiftqb")


def _target(mcpu: str) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu})


def _build(func: tvm.tirx.PrimFunc, target: tvm.target.Target = CASCADELAKE) -> tvm.runtime.Module:
    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)


def _table(seed: int, sparse: bool) -> np.ndarray:
    """A random table; ``sparse``: slices 0-3 equal and 13-15 equal (differences 0, 1, 2, 13, 14 zero)."""
    t = np.random.default_rng(seed).integers(-128, 128, 256).astype(np.int8)
    if sparse:
        t[:64], t[208:] = t[0], t[208]
    return t


def _every_value(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """int8 values of ``shape`` holding all 256 values at least once (``shape`` has 256 or more)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return rng.permutation(np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, n - 256)])).astype(np.int8).reshape(shape)


def _shuffles(asm: str) -> tuple[int, int]:
    """Word permutes (``vpermi2w``/``vpermt2w``, zmm) and byte shuffles (``vpshufb``, any width)."""
    return (len(re.findall(r"^\s+vperm[it]2w\s+[^\n]*zmm", asm, flags=re.M)),
            len(re.findall(r"^\s+vpshufb\s", asm, flags=re.M)))  # fmt: skip


@pytest.mark.parametrize(("mcpu", "zmm"), [("cascadelake", True), ("skylake-avx512", True), ("znver4", False),
                                           ("icelake-server", False), ("haswell", False), ("znver2", False),
                                           ("alderlake", False)])  # fmt: skip
def test_chosen_by_the_targets_avx512bw_without_vbmi(mcpu, zmm):
    table = _table(1, sparse=True)
    live = avx2_live_slices(_target(mcpu), _avx2_slices(table))
    assert isinstance(live, Zmm) == zmm, live
    if zmm:  # the slices (for the kernels that share the AVX2 layout), then the table itself
        assert avx2_live_slices(_target(mcpu), None) == Zmm()
        operand = avx2_operand(table, live)
        assert operand.size == 768 and np.array_equal(operand[512:], table)
        np.testing.assert_array_equal(operand[:512], _avx2_slices(table))


@pytest.mark.parametrize("n", [32, 40, 64, 100, 120, 256])
def test_steps_cover_the_tensor_and_stay_inside_it(n):
    whole, rest = _steps(n, 64)
    covered = np.zeros(n, bool)
    for start, width in [(64 * i, 64) for i in range(whole)] + rest:
        assert 0 <= start and start + width <= n and width in (32, 64)
        covered[start : start + width] = True
    assert covered.all()
    assert len(rest) <= 1 or whole == 0  # two steps of 32 only under one step of 64


@pytest.mark.parametrize("mcpu", ["cascadelake", "skylake-avx512"])
def test_kernel_permutes_words_without_vbmi(mcpu):
    target = _target(mcpu)
    asm = _build(_lookup_avx2_func((1, 4, 8, 64), avx2_live_slices(target, None)), target).inspect_source("asm")
    mnemonics = set(re.findall(r"^\s+(v\w+)", asm, flags=re.M))
    assert not set(VBMI) & mnemonics, sorted(mnemonics)
    permutes, shuffles = _shuffles(asm)
    # Four word permutes per 64 values (two per 32, one per half of the table), no byte shuffle;
    # the widening and the narrowing of each 32 values.
    assert permutes >= 4 and permutes % 4 == 0 and shuffles == 0, (permutes, shuffles)
    assert {"vpmovsxbw", "vpmovwb"} <= mnemonics, sorted(mnemonics)
    # The AVX2 kernel of the same tensor: 16 byte shuffles per 32 values.
    avx2 = _build(_lookup_avx2_func((1, 4, 8, 64)), target).inspect_source("asm")
    assert _shuffles(avx2)[0] == 0 and _shuffles(avx2)[1] >= 16, _shuffles(avx2)


@needs_cpu(CASCADELAKE)
@pytest.mark.parametrize("sparse", [False, True], ids=["random", "runs-of-equal-entries"])
@pytest.mark.parametrize("shape", [(1, 256), (1, 300), (3, 100), (1, 2, 4, 72), (1, 1000), (1, 296)])
def test_every_int8_value_whole_steps_and_the_rest(shape, sparse):
    # 300 = 4 x 64 + 44 (a rest of 64), 296 = 4 x 64 + 40, 1000 = 15 x 64 + 40, 576 = 9 x 64.
    table = _table(sum(shape), sparse)
    live = avx2_live_slices(CASCADELAKE, _avx2_slices(table))
    x = _every_value(shape, int(np.prod(shape)))
    out = tvm.runtime.tensor(np.zeros(shape, np.int8))
    _build(_lookup_avx2_func(shape, live))["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(avx2_operand(table, live)), out)
    np.testing.assert_array_equal(out.numpy(), table[x.astype(np.int64) + 128])


@needs_cpu(CASCADELAKE)
@pytest.mark.parametrize("n", [32, 40, 63, 64, 65, 96, 100])
def test_under_256_values_steps_of_32_and_64(n):
    # Tensors too small to hold every value: each value of the table, in turn, at every position.
    table = _table(n, sparse=False)
    func = _build(_lookup_avx2_func((n,), Zmm()))
    seen = np.zeros(256, bool)
    for shift in range(0, 256, n):
        x = np.roll(np.arange(-128, 128), -shift)[:n].astype(np.int8)
        out = tvm.runtime.tensor(np.zeros(n, np.int8))
        func["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(avx2_operand(table, Zmm())), out)
        np.testing.assert_array_equal(out.numpy(), table[x.astype(np.int64) + 128])
        seen[x.astype(np.int64) + 128] = True
    assert seen.all()


@needs_cpu(CASCADELAKE)
@pytest.mark.parametrize("c", [32, 40, 64, 88, 104, 200])
def test_lookup_pad_every_value(c):
    shape, out_shape = (1, 5, 6, c), (1, 8, 10, c + (-c) % 16)
    table = _table(c, sparse=True)
    live = avx2_live_slices(CASCADELAKE, _avx2_slices(table))
    x = _every_value(shape, c)
    out = tvm.runtime.tensor(np.zeros(out_shape, np.int8))
    func = lookup_pad_avx2_func(shape, 1, 2, out_shape, border=-7, fill=5, live=live)
    asm = _build(func).inspect_source("asm")
    permutes, shuffles = _shuffles(asm)
    assert permutes > 0 and shuffles == 0, (permutes, shuffles)
    _build(func)["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(avx2_operand(table, live)), out)
    want = np.full(out_shape, -7, np.int8)
    want[..., c:] = 5
    want[:, 1:6, 2:8, :c] = table[x.astype(np.int64) + 128]
    np.testing.assert_array_equal(out.numpy(), want)


@needs_cpu(CASCADELAKE)
@pytest.mark.parametrize("c", [24, 40, 88, 200])
def test_blocked_lookup_every_value(c):
    # A lookup writing a depthwise conv's blocked input (depthwise_input.py): [N, C/16, H', W', 16] uint8.
    shape, top, left, border = (1, 5, 6, c), 1, 2, 77
    cb = -(-c // 16)
    out_shape = (1, cb, 8, 10, 16)
    table = _table(c + 1, sparse=False)
    x = _every_value(shape, c + 1)
    func = lookup_block_func(shape, out_shape, top, left, border, ZMM_LOOKUP)
    asm = _build(func).inspect_source("asm")
    assert _shuffles(asm)[0] > 0 and not set(VBMI) & set(re.findall(r"^\s+(v\w+)", asm, re.M))
    out = tvm.runtime.tensor(np.zeros(out_shape, np.uint8))
    _build(func)["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(avx2_operand(table, Zmm())), out)
    image = np.full((1, 8, 10, cb * 16), border, np.uint8)
    image[:, 1:6, 2:8, :c] = (table[x.astype(np.int64) + 128].astype(np.int16) + 128).astype(np.uint8)
    want = image.reshape(1, 8, 10, cb, 16).transpose(0, 3, 1, 2, 4)
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.fixture(scope="module")
def hard_swish_int8(tmp_path_factory) -> str:
    rng = np.random.default_rng(6)
    calibration = {"x": (rng.standard_normal((16, 8, 12, 16)) * 2).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("zmm"), hard_swish_block(seed=5, gated=True), calibration)


@pytest.mark.parametrize("mcpu", ["cascadelake", "skylake-avx512"])
def test_models_lookups_are_zmm_kernels(hard_swish_int8, mcpu):
    # The block's first hard-swish is a lookup kernel of its own; the second writes the depthwise
    # input, padded (skylake-avx512: lookup_pad_avx2) or in channel blocks (cascadelake's VNNI
    # depthwise: lookup_block). Each looks up by word permutes, no byte shuffle.
    names = [name for name, _ins, _out in kernel_calls(hard_swish_int8, _target(mcpu)) if name.startswith("lookup")]
    assert sum(n.startswith(ZMM_LOOKUP) for n in names) == 1 and len(names) == 2, names
    for name, asm in kernels_asm(hard_swish_int8, mcpu).items():
        if name.startswith("lookup"):
            assert not set(VBMI) & set(re.findall(r"^\s+(v\w+)", asm, re.M)), name
            assert _shuffles(asm)[0] > 0 and _shuffles(asm)[1] == 0, (name, _shuffles(asm))


@needs_cpu(CASCADELAKE)
@pytest.mark.parametrize("mcpu", ["cascadelake", "skylake-avx512"])
def test_build_bit_identical_with_avx2_lookups_and_within_one_lsb_of_onnxruntime(hard_swish_int8, monkeypatch, mcpu):
    target = _target(mcpu)
    xs = [(np.random.default_rng(s).standard_normal((1, 8, 12, 16)) * 2).astype(np.float32) for s in (8, 9)]
    got = run_built(hard_swish_int8, target, xs)
    for x, y in zip(xs, got):
        assert_within_one_lsb_of_onnxruntime(hard_swish_int8, {"x": x}, y)
    monkeypatch.setattr(cpu_lookup, "_zmm", lambda _target: False)  # the AVX2 kernels (vpshufb), every slice
    assert not any(n.startswith(ZMM_LOOKUP) for n, _i, _o in kernel_calls(hard_swish_int8, target))
    assert any(n.startswith(AVX2_LOOKUP) for n, _i, _o in kernel_calls(hard_swish_int8, target))
    for a, b in zip(got, run_built(hard_swish_int8, target, xs)):
        np.testing.assert_array_equal(a, b)

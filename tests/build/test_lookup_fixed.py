"""int8 lookups as int16 fixed-point arithmetic on AVX2-only targets (backends/llvm/lookup_fixed.py, issue #14).

A hard-swish or hard-sigmoid table has an int16 form (``vpunpck*bw``,
``vpmulhrsw``, saturating adds, ``vpacksswb``) of about half the table
kernel's instructions. The table is the truth: a form is accepted only when
its numpy emulation equals the table on all 256 int8 inputs (a few misses
patched). Checked: the emulation against tables from onnxruntime-style
chains at many scales and zero points (all 256 inputs), tables that must be
refused, the compiled kernel on all 256 values for real tables, and that a
haswell build of a hard-swish model computes the forms (``vpmulhrsw``, no
``vpshufb``) while znver4 (VBMI) keeps ``vpermi2b``, bit-identical to the
table build where this CPU runs haswell code.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from _host_cpu import needs_cpu
from _int8_checks import hard_swish_block, kernels_asm, quantized, run_built

import edgekit.compiler.backends.llvm.lookup as cpu_lookup
from edgekit.compiler.backends.llvm.lookup import _lookup_avx2_func, avx2_operand, lookup_pad_avx2_func
from edgekit.compiler.backends.llvm.lookup_fixed import FixedForm, decode, fixed_form, table_cost
from edgekit.compiler.integer.lut_program import Program, evaluate

HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
F = np.float32


def _swish_program(s: float, zx: int, so: float, zo: int) -> Program:
    """The lowering's hard-swish chain: ``q(x) = clip(rint((x - zx) s * clip((x - zx) s + 3, 0, 6) / 6 / so) + zo)``."""
    return Program((("x", ()), ("sub", (0, F(zx))), ("mul", (1, F(s))), ("add", (2, F(3))), ("max", (3, F(0))),
                    ("min", (4, F(6))), ("mul", (2, 5)), ("div", (6, F(6))), ("div", (7, F(so))), ("rint", (8,)),
                    ("add", (9, F(zo))), ("max", (10, F(-128))), ("min", (11, F(127)))))  # fmt: skip


def _sigmoid_program(s: float, zx: int, so: float, zo: int) -> Program:
    """HardSigmoid(alpha 0.2, beta 0.5) of a dequantized int8, quantized."""
    return Program((("x", ()), ("sub", (0, F(zx))), ("mul", (1, F(s))), ("mul", (F(0.2), 2)), ("add", (3, F(0.5))),
                    ("max", (4, F(0))), ("min", (5, F(1))), ("div", (6, F(so))), ("rint", (7,)), ("add", (8, F(zo))),
                    ("max", (9, F(-128))), ("min", (10, F(127)))))  # fmt: skip


def _table(program: Program) -> np.ndarray:
    return evaluate(program).astype(np.int64).astype(np.int8)


#: (s, zx, so, zo) of hard-swish tables: PP-OCR cls's range of scales and zero points, and further out.
SWISH = [(0.0503, -21, 0.0308, -116), (0.0449, -36, 0.0301, -116), (0.0582, 12, 0.0276, -114),
         (0.0154, 18, 0.0066, -71), (0.1, 0, 0.05, -120), (0.02, -60, 0.01, -100), (0.2, 40, 0.15, -125),
         (0.0315, -12, 0.0186, -108), (0.07, 100, 0.02, -128)]  # fmt: skip
SIGMOID = [(0.0098, 127, 0.00089, -128), (0.0069, -11, 0.0027, -128), (0.0222, 3, 1 / 255, -128),
           (0.036, 44, 1 / 255, -128), (0.05, 0, 0.002, -20), (0.3, -5, 1 / 255, -128)]  # fmt: skip


@pytest.mark.parametrize("params", SWISH)
def test_swish_forms_equal_their_table_everywhere(params):
    program = _swish_program(*params)
    table = _table(program)
    form = fixed_form(program, table)
    assert form is not None and form.kind in ("swish", "swish256"), params
    np.testing.assert_array_equal(form.evaluate(), table)
    assert decode(form.encode()) == form
    if form.patches:  # the patches are what makes it exact: without them the form misses exactly there
        misses = np.flatnonzero(form.evaluate(patched=False) != table) - 128
        assert sorted(misses.tolist()) == sorted(x for x, _d in form.patches)


@pytest.mark.parametrize("params", SIGMOID)
def test_sigmoid_forms_equal_their_table_everywhere(params):
    program = _sigmoid_program(*params)
    table = _table(program)
    form = fixed_form(program, table)
    assert form is not None and form.kind == "linear", params
    np.testing.assert_array_equal(form.evaluate(), table)
    assert form.cost() <= 11 + 3 * len(form.patches)


def test_forms_are_refused_where_they_are_not_exact_or_not_understood():
    program = _swish_program(*SWISH[0])
    table = _table(program)
    # A table that is not the program's (one entry off, more than the patches allow elsewhere): refused.
    wrong = table.copy()
    wrong[::40] ^= 1  # 7 inputs
    assert fixed_form(program, wrong) is None
    # One entry off: patched, and then exactly that table.
    near = table.copy()
    near[200] ^= 3
    form = fixed_form(program, near)
    assert form is not None and (72, 3) in form.patches
    np.testing.assert_array_equal(form.evaluate(), near)
    # No program, or one that is no affine / clip / product chain (a square): no form.
    assert fixed_form(None, table) is None
    square = Program((("x", ()), ("mul", (0, 0)), ("div", (1, F(300))), ("rint", (2,)), ("add", (3, F(-128))),
                      ("max", (4, F(-128))), ("min", (5, F(127)))))  # fmt: skip
    assert fixed_form(square, _table(square)) is None
    # A uint8 result range ([0, 255]): not an int8 table's.
    u8 = Program(_swish_program(*SWISH[0]).steps[:-2] + (("max", (10, F(0))), ("min", (11, F(255)))))
    assert fixed_form(u8, table) is None


def _instructions(form: FixedForm, x: int) -> int:
    """One input through the instructions as the Intel manual defines them, in Python integers."""

    def sat(v: int, bits: int = 16) -> int:
        return max(-(2 ** (bits - 1)), min(2 ** (bits - 1) - 1, v))

    def mulhrs(a: int, b: int) -> int:  # (((a * b) >> 14) + 1) >> 1, low 16 bits
        r = (((a * b) >> 14) + 1) >> 1
        return (r + 2**15) % 2**16 - 2**15

    w = 256 * x + form.b0
    if form.kind != "linear":
        kv, mc, kc, lc, hc, z = form.consts
        c = min(max(sat(mulhrs(w, mc) + kc), lc), hc)
        v = (w >> 1) + kv if form.kind == "swish" else sat(w + kv)  # vpsraw + vpaddw, or vpaddsw
        y = sat(mulhrs(v, c) + z)
    else:
        a, k, _lo, _hi = form.consts
        y = sat(mulhrs(w, a) + k)
    if form.k:
        y = mulhrs(y, 2 ** (15 - form.k))
    y = sat(y, 8)
    return min(max(y, form.consts[2]), form.consts[3]) if form.kind == "linear" else y


@pytest.mark.parametrize("form", [FixedForm("linear", 0, 0, (32767, 32767, -128, 127)),
                                  FixedForm("linear", 7, 128, (128, 0, -128, 127)),
                                  FixedForm("linear", 3, 255, (-32768, -20000, -100, 90)),
                                  FixedForm("swish", 7, 64, (-128 * 9 - 32, 32767, 30000, -5, 32767, -32768)),
                                  FixedForm("swish", 0, 192, (128 * 100 - 96, -20000, -3000, -32768, 500, 60)),
                                  FixedForm("swish256", 6, 0, (-256 * 30, 20000, 9000, 0, 25000, -116 * 64))])  # fmt: skip
def test_emulation_is_the_int16_arithmetic(form):
    """The numpy emulation's saturations, shifts and ``vpmulhrsw`` wrap, against the instructions' definitions."""
    np.testing.assert_array_equal(form.evaluate(), [_instructions(form, x) for x in range(-128, 128)])


def test_cost_model_prefers_the_form_only_where_it_is_cheaper():
    form = fixed_form(_swish_program(*SWISH[0]), _table(_swish_program(*SWISH[0])))
    assert form is not None and form.cost() < table_cost(14)
    assert form.cost() >= table_cost(6)  # a table of 6 live slices stays (18 instructions)


def _build(func) -> tvm.runtime.Module:
    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), HASWELL)


@needs_cpu(HASWELL)
@pytest.mark.parametrize("params", [*SWISH, SIGMOID[0], SIGMOID[4]])
def test_compiled_form_is_the_table_on_every_int8_value(params):
    """Every swish table above (both swish kinds, patched and not) and two sigmoids, compiled for haswell."""
    program = (_swish_program if params in SWISH else _sigmoid_program)(*params)
    table = _table(program)
    form = fixed_form(program, table)
    assert form is not None
    x = np.concatenate([np.arange(-128, 128), np.arange(127, -129, -1), np.arange(-100, -83)]).astype(np.int8)
    out = tvm.runtime.tensor(np.zeros_like(x))
    _build(_lookup_avx2_func(x.shape, form))["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(avx2_operand(table, form)),
                                                     out)  # fmt: skip
    np.testing.assert_array_equal(out.numpy(), table[x.astype(np.int64) + 128])


@needs_cpu(HASWELL)
def test_compiled_lookup_pad_with_a_form():
    program = _swish_program(*SWISH[1])
    table = _table(program)
    form = fixed_form(program, table)
    x = np.arange(-128, 128).astype(np.int8).reshape(1, 2, 2, 64)
    out = tvm.runtime.tensor(np.zeros((1, 4, 4, 64), np.int8))
    func = lookup_pad_avx2_func((1, 2, 2, 64), 1, 1, (1, 4, 4, 64), border=-5, fill=0, live=form)
    _build(func)["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(avx2_operand(table, form)), out)
    want = np.full((1, 4, 4, 64), -5, np.int8)
    want[:, 1:3, 1:3] = table[x.astype(np.int64) + 128]
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.fixture(scope="module")
def hard_swish_int8(tmp_path_factory) -> str:
    rng = np.random.default_rng(8)
    calibration = {"x": (rng.standard_normal((16, 8, 12, 16)) * 2).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("fixed"), hard_swish_block(seed=7, gated=True), calibration)


def _count(asm: str, mnemonic: str) -> int:
    return len(re.findall(rf"^\s+{mnemonic}\s", asm, flags=re.M))


def test_haswell_build_computes_the_forms_and_vbmi_keeps_vpermi2b(hard_swish_int8, monkeypatch):
    lookups = {k: v for k, v in kernels_asm(hard_swish_int8, "haswell").items() if k.startswith("lookup")}
    assert sorted(k.startswith("lookup_pad") for k in lookups) == [False, True], sorted(lookups)
    for name, asm in lookups.items():
        assert _count(asm, "vpmulhrsw") >= 2 and _count(asm, "vpacksswb") >= 1, name
        assert _count(asm, "vpshufb") == 0, name  # no table slice read
    vbmi = {k: v for k, v in kernels_asm(hard_swish_int8, "znver4").items() if k.startswith("lookup")}
    assert vbmi and all(_count(a, "vperm[it]2b") >= 1 and _count(a, "vpmulhrsw") == 0 for a in vbmi.values()), vbmi.keys()
    # With the forms off, the haswell lookups read table slices again (the test fails if the forms are not used).
    monkeypatch.setattr(cpu_lookup, "fixed_form", lambda _program, _table: None)
    tables = {k: v for k, v in kernels_asm(hard_swish_int8, "haswell").items() if k.startswith("lookup")}
    assert all(_count(a, "vpshufb") > 0 and _count(a, "vpmulhrsw") == 0 for a in tables.values())


@needs_cpu(HASWELL)
def test_haswell_build_is_bit_identical_to_the_table_build(hard_swish_int8, monkeypatch):
    x = (np.random.default_rng(9).standard_normal((4, 1, 8, 12, 16)) * 2).astype(np.float32)
    got = run_built(hard_swish_int8, HASWELL, list(x))
    monkeypatch.setattr(cpu_lookup, "fixed_form", lambda _program, _table: None)
    want = run_built(hard_swish_int8, HASWELL, list(x))
    assert np.unique(np.concatenate([w.reshape(-1) for w in want])).size > 50
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)

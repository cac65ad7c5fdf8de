"""Table-free int8 activations: the float32 programs of the lowering's tables and their kernel forms, bit for bit.

The integer lowering records, for each 256-entry table whose chain is made of
IEEE basic operations (hard-swish, hard-sigmoid, clips), the program it was
computed with (integer/lut_program.py). backends/llvm/lookup_arith.py turns a
program into a cheaper form the compiled epilogue computes, and takes it only
when it equals the table on all 256 int8 inputs under every way LLVM may
contract a multiply and an add into an FMA. Checked here: the FMA emulation
against exact rationals, every table of a model with both activations
against its program and its kernel form (all 256 inputs), and a haswell build
computing them arithmetically against the table build (kernel names; the
model's output bit for bit where this CPU runs AVX2 code).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx
import pytest
import tvm
from _host_cpu import needs_cpu
from _int8_checks import assert_within_one_lsb_of_onnxruntime, quantized, run_built
from onnx import TensorProto, helper, numpy_helper

import edgekit.compiler.backends.llvm.lookup as cpu_lookup
from edgekit.compiler.backends.llvm.lookup_arith import _contractions, exact_form, kernel_forms
from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module
from edgekit.compiler.importer import import_onnx
from edgekit.compiler.integer.lut_program import LUT_PROGRAMS, Program, _fma32, evaluate
from edgekit.compiler.relax_rewrite import const_value, is_call
from edgekit.frontend.loader import load_model

HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})


def _round_f32(r: Fraction) -> np.float32:
    """The float32 nearest ``r`` (ties to even), by exact comparison with its neighbours."""
    f = np.float32(float(r))
    cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    best = min(cands, key=lambda c: (abs(Fraction(float(c)) - r), int(np.float32(c).view(np.int32)) & 1))
    return np.float32(best)


def test_fma_emulation_rounds_once():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(400).astype(np.float32)
    b = (rng.standard_normal(400) * 2.0 ** rng.integers(-20, 20, 400)).astype(np.float32)
    c = (-a.astype(np.float64) * b * (1 + 2.0**-30)).astype(np.float32)  # near-cancellation
    c[::2] = rng.standard_normal(200).astype(np.float32) * 1e6
    # (1 + 2**-12)**2 = 1 + 2**-11 + 2**-24 is a float32 half-way point; +-2**-60 is lost in float64,
    # so rounding the float64 sum to float32 would go to even where the exact sum goes up (down).
    a[:2], b[:2], c[:2] = np.float32(1 + 2**-12), np.float32(1 + 2**-12), np.float32([2**-60, -(2**-60)])
    got = _fma32(a, b, c)
    want = [_round_f32(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))) for x, y, z in zip(a, b, c)]
    np.testing.assert_array_equal(got, np.array(want, np.float32))


def _fp32_model() -> onnx.ModelProto:
    """conv -> HardSwish -> conv -> x * HardSigmoid(x) (PP-OCR's form) -> conv -> Clip(0, 6) -> conv."""
    rng = np.random.default_rng(3)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(w(40, 8, 3, 3), "w1"), numpy_helper.from_array(w(48, 40, 1, 1), "w2"),
             numpy_helper.from_array(w(32, 48, 1, 1), "w3"), numpy_helper.from_array(w(16, 32, 1, 1), "w4"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "w2"], ["c2"]),
        helper.make_node("HardSigmoid", ["c2"], ["g2"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["c2", "g2"], ["h2"]),
        helper.make_node("Conv", ["h2", "w3"], ["c3"]),
        helper.make_node("Clip", ["c3", "lo", "hi"], ["h3"]),
        helper.make_node("Sigmoid", ["h3"], ["s3"]),  # not an IEEE basic operation: stays a table
        helper.make_node("Conv", ["s3", "w4"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "activations",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 9, 14])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 9, 14])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> str:
    cal = {"x": np.random.default_rng(1).standard_normal((16, 8, 9, 14)).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("arith"), _fp32_model(), cal)


def _tables(mod: tvm.IRModule) -> list[np.ndarray]:
    """The 256-entry tables of the lowered ``main``'s lookups."""
    found = []

    def visit(expr):
        if is_call(expr, "relax.take"):
            table = const_value(expr.args[0])
            if table is not None and table.shape == (256,):
                found.append(table)

    tvm.relax.analysis.post_order_visit(mod["main"], visit)
    return found


def test_every_table_with_a_program_is_reproduced_by_it_and_by_its_kernel_form(int8_model):
    mod = import_onnx(load_model(int8_model))[0]
    programs = {str(k): Program.from_json(str(v)) for k, v in mod.attrs[LUT_PROGRAMS].items()}
    tables = _tables(mod)
    keyed = {t.astype(np.int8).tobytes().hex(): t for t in tables}
    # hard-swish and x * hard-sigmoid have programs; the sigmoid's table has none.
    assert len(tables) == 3 and len(programs) == 2 and set(programs) < set(keyed), (len(tables), len(programs))
    for key, program in programs.items():
        want = keyed[key].astype(np.float32)
        np.testing.assert_array_equal(evaluate(program), want)  # the table's own float32 arithmetic
        form = exact_form(program, keyed[key])
        assert form is not None and form == kernel_forms(program)[0]
        for fused in _contractions(form):  # every FMA contraction LLVM may choose: all 256 inputs
            np.testing.assert_array_equal(evaluate(form, fused), want)


def test_haswell_arithmetic_build_has_no_table_kernels_where_a_form_applies(int8_model, monkeypatch):
    mod, weights = import_onnx(load_model(int8_model))[:2]
    monkeypatch.setattr(cpu_lookup, "ARITHMETIC_MCPUS", {"haswell"})
    names = [gv.name_hint for gv, f in prepare_cpu_module(mod, HASWELL)[0].functions_items()
             if isinstance(f, tvm.tirx.PrimFunc)]  # fmt: skip
    assert sum(n.startswith("lookup_avx2") for n in names) == 1, names  # the sigmoid's table only
    monkeypatch.setattr(cpu_lookup, "ARITHMETIC_MCPUS", set())
    names = [gv.name_hint for gv, f in prepare_cpu_module(mod, HASWELL)[0].functions_items()
             if isinstance(f, tvm.tirx.PrimFunc)]  # fmt: skip
    assert sum(n.startswith(("lookup_avx2", "lookup_pad_avx2")) for n in names) == 3, names


@needs_cpu(HASWELL)
def test_arithmetic_activations_are_bit_identical_with_the_tables(int8_model, monkeypatch):
    x = np.random.default_rng(5).standard_normal((1, 8, 9, 14)).astype(np.float32) * 3
    want = run_built(int8_model, HASWELL, x)
    monkeypatch.setattr(cpu_lookup, "ARITHMETIC_MCPUS", {"haswell"})
    got = run_built(int8_model, HASWELL, x)
    assert np.unique(want).size > 50  # the activations' outputs reach the last conv spread out
    np.testing.assert_array_equal(got, want)
    assert_within_one_lsb_of_onnxruntime(int8_model, {"x": x}, got)

"""The integer lowering's two rounding forms (edgekit.compiler.integer.requant).

Half to even wherever a product can be exactly half-way; half up -- one add
instead of four int64 operations -- where no accumulator value the layer can
produce, times its multipliers, is (``core.fixedpoint.ties_possible`` with the
accumulator's bound), which is then the same value. Checked on compiled code
for a generic ``llvm`` target (the int64 form every non-x86 CPU runs) against
the numpy reference, and on the IR and assembly the riscv64 board gets.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

import edgekit.compiler.integer.requant as requant
from edgekit.compiler.integer.requant import emit_requantize, emit_round_shift, match_round_shift
from edgekit.core.fixedpoint import FixedPoint, quantize_multiplier, requantize, round_shift, ties_possible

CHANNELS_AXIS = 1


def _module(shape: tuple[int, int], build) -> tvm.IRModule:
    """``main(acc: int32[rows, channels]) -> build(acc)`` as a normalized Relax module."""
    bb = relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType(shape, "int32"))
    with bb.function("main", [acc]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(build(acc)))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod: tvm.IRModule, acc: np.ndarray) -> np.ndarray:
    exe = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(acc)).numpy()


def _ops(mod: tvm.IRModule) -> Counter:
    """Relax operators called in ``main``, by name (``right_shift``, ``bitwise_and``, ...)."""
    names: Counter = Counter()
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            if isinstance(binding.value, relax.Call) and isinstance(binding.value.op, tvm.ir.Op):
                names[binding.value.op.name.removeprefix("relax.")] += 1
    return names


def _product(acc, multiplier: np.ndarray):
    return R.multiply(R.astype(acc, "int64"), relax.const(multiplier.reshape(1, -1), "int64"))


def _rounded(fp: FixedPoint, ties: bool | None = None):
    """``round_shift(astype(acc, int64) * m, n)`` per channel, in int64: the rounding alone, no clamp.

    ``ties``: the form to emit; by default the one :func:`emit_requantize` would choose.
    """
    if ties is None:
        ties = bool(np.any(ties_possible(fp.multiplier, fp.shift)))
    return lambda acc: emit_round_shift(_product(acc, fp.multiplier), fp.shift, axis=CHANNELS_AXIS, ndim=2, ties=ties)


def _near_ties(fp: FixedPoint, per_channel: int, rng: np.random.Generator) -> np.ndarray:
    """int32 accumulators whose products are the closest to half-way points (and the int32 extremes)."""
    cols = []
    for m, n in zip(fp.multiplier.tolist(), fp.shift.tolist()):
        top = abs(m) * 2**31 >> n  # largest |output| an int32 reaches
        k = rng.integers(-top - 1, top + 1, per_channel)
        a = np.rint((k + 0.5) * 2.0**n / m).astype(np.int64)[:, None] + np.array([-1, 0, 1])
        cols.append(np.clip(a.reshape(-1), -(2**31), 2**31 - 1))
    acc = np.stack(cols, axis=1)
    extremes = np.array([[-(2**31)], [-(2**31) + 1], [-1], [0], [1], [2**31 - 2], [2**31 - 1]])
    random = rng.integers(-(2**31), 2**31, (per_channel, acc.shape[1]))
    return np.concatenate([acc, np.broadcast_to(extremes, (7, acc.shape[1])), random]).astype(np.int32)


def _no_tie_multipliers(rng: np.random.Generator) -> FixedPoint:
    """Multipliers of real conv layers' size (1e-7 .. 0.2) that no int32 can make tie: most of them."""
    fp = quantize_multiplier(np.exp(rng.uniform(np.log(1e-7), np.log(0.2), 64)))
    keep = ~ties_possible(fp.multiplier, fp.shift)
    assert keep.sum() >= 48
    return FixedPoint(fp.multiplier[keep], fp.shift[keep])


def test_half_up_form_is_bit_identical_to_half_even_where_no_product_can_tie() -> None:
    rng = np.random.default_rng(0)
    fp = _no_tie_multipliers(rng)
    acc = _near_ties(fp, 2000, rng)
    short = _module(acc.shape, _rounded(fp))
    assert _ops(short)["bitwise_and"] == 0 and _ops(short)["right_shift"] == 1
    got = _run(short, acc)
    exact = round_shift(acc.astype(np.int64) * fp.multiplier, fp.shift)
    np.testing.assert_array_equal(got, exact)
    # The long form, compiled, gives the same bits (and its rounding is round_shift's).
    long_form = _module(acc.shape, _rounded(fp, ties=True))
    assert _ops(long_form)["bitwise_and"] == 1
    np.testing.assert_array_equal(_run(long_form, acc), got)
    # Some accumulators are within one product step of a half-way point.
    residue = (acc.astype(np.int64) * fp.multiplier) % np.left_shift(np.int64(1), fp.shift)
    near = np.abs(residue - np.left_shift(np.int64(1), fp.shift - 1)) <= np.abs(fp.multiplier)
    assert near.sum() > 1000


#: Multipliers whose products do tie (0.25, 3/16: n <= 32) beside one that cannot.
TIE_REALS = np.array([0.25, 3 / 16, 1e-4])


def _requantize_layer(fp: FixedPoint, acc_bound: int = 2**31):
    return lambda acc: emit_requantize(acc, fp, 3, axis=CHANNELS_AXIS, ndim=2, out_dtype="int8", acc_bound=acc_bound)


def _int32_ties_but_not_within(bound_bits: int, rng: np.random.Generator) -> FixedPoint:
    """Multipliers ~2**-10 (n = 40) whose products tie for some int32 but for no ``|a| <= 2**bound_bits``."""
    tz = rng.integers(8, 40 - 1 - bound_bits, 6)  # n - 32 <= tz(m) < n - 1 - bound_bits
    odd = rng.integers(2**29, 2**30, 6) | 1
    m = (odd >> tz << tz) | (np.int64(1) << tz) | (np.int64(1) << 30)
    fp = FixedPoint(m.astype(np.int64), np.full(6, 40, np.int64))
    assert np.all(ties_possible(fp.multiplier, fp.shift)) and not np.any(ties_possible(fp.multiplier, fp.shift, 2**bound_bits))
    return fp


def test_half_up_within_the_accumulators_bound_is_bit_identical_on_every_value() -> None:
    """Exhaustive: every accumulator in [-2**20, 2**20], multipliers that only a larger int32 could make tie."""
    fp = _int32_ties_but_not_within(20, np.random.default_rng(3))
    acc = np.repeat(np.arange(-(2**20), 2**20 + 1, dtype=np.int32)[:, None], fp.multiplier.size, axis=1)
    ops = _ops(_module((4, fp.multiplier.size), _requantize_layer(fp, acc_bound=2**20)))
    assert ops["bitwise_and"] == 0 and _ops(_module((4, fp.multiplier.size), _requantize_layer(fp)))["bitwise_and"] == 1
    got = _run(_module(acc.shape, _rounded(fp, ties=False)), acc)
    np.testing.assert_array_equal(got, round_shift(acc.astype(np.int64) * fp.multiplier, fp.shift))


def test_a_layer_whose_products_can_tie_rounds_half_to_even(monkeypatch: pytest.MonkeyPatch) -> None:
    fp = quantize_multiplier(TIE_REALS)
    assert ties_possible(fp.multiplier, fp.shift, 2**8).tolist() == [True, True, False]
    quarter = [2, 6, 10, -2, -6, 14, 18, -10, -14, -18]  # a / 4 = 0.5, 1.5, 2.5, ...
    three_16ths = [8, 24, 40, -8, -24, 56, 72, -40, -56, -72]  # 3a / 16 = 1.5, 4.5, 7.5, ...
    acc = np.array([quarter, three_16ths, quarter], np.int32).T
    mod = _module(acc.shape, _requantize_layer(fp, acc_bound=2**8))
    assert _ops(mod)["bitwise_and"] == 1  # the whole layer keeps the half-even form
    want = requantize(acc, FixedPoint(fp.multiplier.reshape(1, 3), fp.shift.reshape(1, 3)), 3)
    products = acc.astype(np.int64) * fp.multiplier
    half_up = np.right_shift(products + np.left_shift(np.int64(1), fp.shift - 1), fp.shift) + 3
    assert np.count_nonzero(half_up[:, :2] != want[:, :2]) >= 8  # the ties are real: half up misses them
    np.testing.assert_array_equal(_run(mod, acc), want)
    # Emitted half up anyway, the same layer fails that comparison.
    monkeypatch.setattr(requant, "ties_possible", lambda m, n, bound=None: np.zeros(np.shape(m), bool))
    wrong = _module(acc.shape, _requantize_layer(fp, acc_bound=2**8))
    assert _ops(wrong)["bitwise_and"] == 0
    assert not np.array_equal(_run(wrong, acc), want)


def test_a_no_tie_layer_emits_one_add_and_one_shift() -> None:
    fp = _no_tie_multipliers(np.random.default_rng(1))
    ops = _ops(_module((4, fp.multiplier.size), _requantize_layer(fp)))
    # astype, multiply, add 2**(n-1), right_shift, add the zero point, clip, astype.
    assert ops == Counter({"astype": 2, "multiply": 1, "add": 2, "right_shift": 1, "clip": 1}), ops
    tie = _ops(_module((4, 3), _requantize_layer(quantize_multiplier(TIE_REALS))))
    assert tie - ops == Counter({"add": 1, "right_shift": 1, "bitwise_and": 1})  # the half-even form's three more


def _match(mod: tvm.IRModule):
    """:func:`match_round_shift` of ``main``'s last right shift (the rounding's outer one)."""
    var2val = relax.analysis.get_var2val(mod["main"])
    shifts = [v for v, e in var2val.items() if isinstance(e, relax.Call) and e.op.name == "relax.right_shift"]
    return match_round_shift(shifts[-1], lambda e: var2val.get(e, e) if isinstance(e, relax.Var) else e)


def test_the_pattern_reader_reads_both_forms_and_only_them() -> None:
    fp = _no_tie_multipliers(np.random.default_rng(2))
    shape = (4, fp.multiplier.size)
    for ties in (False, True):
        found = _match(_module(shape, _rounded(fp, ties)))
        assert found is not None
        np.testing.assert_array_equal(found[1].reshape(-1), fp.shift)
    half = np.left_shift(np.int64(1), fp.shift - 1).reshape(1, -1)
    n = relax.const(fp.shift.reshape(1, -1), "int64")

    def off_by_one(acc):
        return R.right_shift(R.add(_product(acc, fp.multiplier), relax.const(half + 1, "int64")), n)

    def sum_of_products(acc):  # half up of a sum: not what emit_requantize emits it for
        total = R.add(_product(acc, fp.multiplier), _product(acc, fp.multiplier))
        return R.right_shift(R.add(total, relax.const(half, "int64")), n)

    assert _match(_module(shape, off_by_one)) is None
    assert _match(_module(shape, sum_of_products)) is None


def test_real_conv_layers_take_the_short_form(tmp_path) -> None:
    """Every conv/Gemm of the quantized digits CNN (per-channel scales) rounds with one add."""
    from edgekit.compiler.importer import import_onnx
    from edgekit.compiler.integer import lower_to_integer
    from edgekit.compress import QuantConfig, quantize
    from edgekit.examples.digits import example_model_path
    from edgekit.frontend.loader import load_model

    cal = {"input": np.random.default_rng(0).uniform(0, 1, (8, 1, 8, 8)).astype(np.float32)}
    path = tmp_path / "int8.onnx"
    quantize(example_model_path(), QuantConfig(), calibration=cal).save(path)
    mod = import_onnx(load_model(str(path)))[0]
    ops = _ops(lower_to_integer(mod))
    layers = ops["nn.conv2d"] + ops["matmul"]
    assert layers == 5 and ops["right_shift"] == layers and ops["bitwise_and"] == 0, ops


def test_riscv64_conv_reduces_in_int32_and_requantizes_with_one_native_64_bit_multiply(tmp_path) -> None:
    """riscv64-u74 (RV64GC, no vector unit): the scalar reduction multiplies int8 values in int32; the
    one int64 multiply per output is the requantization's, a single ``mul`` on a 64-bit core, and
    its rounding is half up (one channel's multiplier could tie with some int32, not within the
    bound the layer's weights put on its accumulator)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes
    from edgekit.compiler.importer import import_onnx
    from edgekit.compress import QuantConfig, quantize
    from edgekit.core.profiles import get_board
    from edgekit.frontend.loader import load_model

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((16, 8, 3, 3)) / 8).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], [w])  # fmt: skip
    path = tmp_path / "int8.onnx"
    cal = {"x": rng.standard_normal((4, 8, 8, 8)).astype(np.float32)}
    quantize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), QuantConfig(), calibration=cal).save(path)
    scales = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in onnx.load(path).graph.initializer}
    fp = quantize_multiplier(scales["x_scale"] * scales["w_scale"] / scales["y_scale"])
    assert np.any(ties_possible(fp.multiplier, fp.shift))  # some int32 could tie: the weights' bound rules it out
    target = get_board("visionfive2")[1].tvm_target()
    assert str(target.attrs["mtriple"]).startswith("riscv64")
    mod, weights = import_onnx(load_model(str(path)))[:2]
    num_input = int(mod["main"].attrs["num_input"])
    by_name = {p.name: w.numpy() for p, w in zip(mod["main"].params[num_input:], weights)}
    prepared, _ = prepare_cpu_module(mod, target, weights=by_name)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(target))(prepared)
    convs = [f for gv, f in scheduled.functions_items() if "conv2d" in gv.name_hint and isinstance(f, tvm.tirx.PrimFunc)]
    assert len(convs) == 1
    tir = convs[0].script()
    updates = [ln for ln in tir.splitlines() if re.match(r"\s+conv2d\w*\[.*\] = conv2d\w*\[.*\] \+ ", ln)]
    assert updates and all('T.Cast("int32"' in ln and "int64\"" not in ln for ln in updates), updates
    epilogue = [ln for ln in tir.splitlines() if 'T.Cast("int8"' in ln]
    assert len(epilogue) == 1 and epilogue[0].count('T.Cast("int64"') == 1 and "&" not in epilogue[0], epilogue
    asm = tvm.tirx.build(tvm.IRModule({"main": convs[0].with_attr("global_symbol", "main")}), target).inspect_source("asm")
    assert re.search(r"^\s+mul\s", asm, re.M) and not re.search(r"^\s+(call|tail)\s+__mul", asm, re.M)

"""Squeeze-excite blocks on AVX2-only targets (backends/llvm/gate_multiply.py): the multiply one kernel with the
gate's lookup, the squeeze sum one kernel with the mean's requantization.

Checked: the multiply equals TVM's fused kernel for the same target on all
65,536 (activation, gate) int8 pairs, with and without the gate's table and
with requantizations that clamp; the sum with its requantization equals the
sum kernel followed by TVM's requantization kernel; a squeeze-excite model
built for ``haswell`` has the kernels (``vpmaddwd``, no ``vpmulld``, no gate
lookup kernel, no requantization kernel of its own), is bit-identical with the
same build without them and within 1 LSB of onnxruntime; ``znver4`` (AVX-512)
builds keep TVM's kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from _host_cpu import needs_cpu
from _int8_checks import assert_within_one_lsb_of_onnxruntime, kernel_calls, kernels_asm, mnemonics, quantized
from onnx import TensorProto, helper, numpy_helper

import edgekit.compiler.backends.llvm.gate_multiply as gm
from edgekit.compiler.backends.llvm.relax_build import build_cpu, default_schedule
from edgekit.compiler.importer import import_onnx
from edgekit.frontend.loader import load_model

HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})

#: (x offset, gate offset, scale, upper and lower clamp, subtracted constant) as the float requantization
#: writes them (PP-OCR cls's last multiply), and one with a large scale whose clamps bind on most pairs.
REQUANTS = [(115, 128, 0.0078601464629173279, 12583141.0, 12582886.0, 12583014),
            (-3, 100, 0.8125, 12583000.0, 12582900.0, 12582950)]  # fmt: skip


def _fused(shape: tuple[int, int, int, int], a: int, b: int, s: float, hi: float, lo: float, k: int) -> tvm.tirx.PrimFunc:
    """The fused multiply as the lowering writes it: ``int16(int32(max(min(f32((x + a) (g + b)) s + M, hi), lo)) - k)``."""
    from tvm import te, tirx

    x = te.placeholder(shape, "int8", "x")
    g = te.placeholder((shape[0], 1, 1, shape[3]), "int8", "g")

    def value(n, h, w, c):
        p = (x[n, h, w, c].astype("int32") + a) * (g[n, 0, 0, c].astype("int32") + b)
        v = tirx.max(tirx.min(p.astype("float32") * tirx.const(s, "float32") + tirx.const(12582912.0, "float32"),
                              tirx.const(hi, "float32")), tirx.const(lo, "float32"))  # fmt: skip
        return (v.astype("int32") - k).astype("int16")

    y = te.compute(shape, value, name="compute")
    return te.create_prim_func([x, g, y])


def _build(func: tvm.tirx.PrimFunc) -> tvm.runtime.Module:
    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), HASWELL)


def _generic(func: tvm.tirx.PrimFunc) -> tvm.runtime.Module:
    """TVM's kernel for ``func`` on haswell, scheduled as the pipeline schedules an unmatched elementwise kernel."""
    with HASWELL:
        sch = default_schedule(func, HASWELL)
    return _build(sch.mod["main"])


def _run(lib: tvm.runtime.Module, *arrays: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    out = tvm.runtime.tensor(np.zeros(out_shape, np.int16))
    lib["main"](*[tvm.runtime.tensor(a) for a in arrays], out)
    return out.numpy()


@needs_cpu(HASWELL)
@pytest.mark.parametrize("requant", REQUANTS)
@pytest.mark.parametrize("lookup", [False, True])
def test_every_activation_and_gate_pair(requant, lookup):
    """256 pixels of x = -128..127 against 256 channels of g = -128..127: every pair, as TVM's kernel computes it."""
    shape = (1, 16, 16, 256)
    fused = _fused(shape, *requant)
    found = gm.match_gate_multiply(fused)
    assert found is not None
    assert found[:3] == (shape, requant[0], requant[1])
    x = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(shape)
    g = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 1, 256)
    want = _run(_generic(fused), x, g, out_shape=shape)
    table = np.random.default_rng(3).permutation(np.arange(-128, 128)).astype(np.int8)
    q = g.copy()
    if lookup:  # the kernel reads table[q + 128]: q chosen so that the looked-up gates are -128..127 again
        q = (np.argsort(table.astype(np.int64) + 128) - 128).astype(np.int8)[g.astype(np.int64) + 128]
        assert np.array_equal(table[q.astype(np.int64) + 128], g)
    kernel = gm.gate_multiply_func(shape, found[1], found[2], found[3], lookup)
    got = _run(_build(kernel), x, q, table if lookup else np.zeros(256, np.int8), out_shape=shape)
    np.testing.assert_array_equal(got, want)


@needs_cpu(HASWELL)
@pytest.mark.parametrize("channels", [8, 40, 88, 200])
def test_rows_of_pp_ocr_cls_channel_counts(channels):
    """Rows that are not whole 16-channel steps (PP-OCR cls: 40, 88, 200) overlap their last step; 8 channels
    (its first block) step over two pixels at a time."""
    shape = (1, 4, 6, channels)
    fused = _fused(shape, *REQUANTS[0])
    rng = np.random.default_rng(channels)
    x = rng.integers(-128, 128, shape).astype(np.int8)
    g = rng.integers(-128, 128, (1, 1, 1, channels)).astype(np.int8)
    found = gm.match_gate_multiply(fused)
    kernel = _build(gm.gate_multiply_func(shape, found[1], found[2], found[3], False))
    np.testing.assert_array_equal(_run(kernel, x, g, np.zeros(256, np.int8), out_shape=shape),
                                  _run(_generic(fused), x, g, out_shape=shape))  # fmt: skip


def _requant(shape: tuple[int, ...]) -> tvm.tirx.PrimFunc:
    """The mean's requantization as the lowering writes it (PP-OCR cls's last squeeze): int32 sums to int16."""
    from tvm import te, tirx

    s = te.placeholder(shape, "int32", "s")

    def value(*i):
        v = tirx.max(tirx.min((s[i] + 22080).astype("float32") * tirx.const(0.038038019090890884, "float32")
                              + tirx.const(12582912.0, "float32"), tirx.const(12583082.0, "float32")),
                     tirx.const(12582827.0, "float32"))  # fmt: skip
        return (v.astype("int32") - 12582955).astype("int8").astype("int16")

    return te.create_prim_func([s, te.compute(shape, value, name="compute")])


@needs_cpu(HASWELL)
@pytest.mark.parametrize("channels", [40, 200])
def test_squeeze_sum_with_its_requantization(channels):
    """The sums of every channel (extremes included, which clamp) through the epilogue as TVM's kernel computes them."""
    from edgekit.compiler.backends.llvm.channel_sum import channel_sum_rows

    shape = (1, 2, 96, channels)
    rng = np.random.default_rng(channels)
    x = rng.integers(-128, 128, shape).astype(np.int8)
    x[..., 0], x[..., 1] = 127, -128
    x[..., 2:20] = np.arange(-128, 128, 14)[:18]
    found = gm.match_squeeze_requant(_requant((1, 1, 1, channels)))
    assert found is not None and found[:2] == ((1, 1, 1, channels), "int16")
    sums = x.astype(np.int64).sum(axis=(1, 2), keepdims=True).astype(np.int32)
    want = _run(_generic(_requant((1, 1, 1, channels))), sums, out_shape=(1, 1, 1, channels))
    got = _run(_build(channel_sum_rows(shape, found[2], found[1])), x, out_shape=(1, 1, 1, channels))
    np.testing.assert_array_equal(got, want)


def test_the_gate_table_is_read_back_from_the_lookup_operand():
    # The gate's 256 entries come back from the AVX2 lookup's slices (differences of adjacent slices).
    from edgekit.compiler.backends.llvm.lookup import _avx2_slices, avx2_table

    rng = np.random.default_rng(3)
    for table in (rng.integers(-128, 128, 256).astype(np.int8), np.arange(256).astype(np.uint8).view(np.int8)):
        assert np.array_equal(avx2_table(_avx2_slices(table)), table)
        assert np.array_equal(avx2_table(np.concatenate([_avx2_slices(table), np.ones(16, np.int8)])), table)


def test_other_kernels_are_not_matched():
    """An int8 output, a gate per pixel, two products: not a squeeze-excite multiply."""
    from tvm import te

    x = te.placeholder((1, 4, 4, 32), "int8", "x")
    g = te.placeholder((1, 1, 1, 32), "int8", "g")
    full = te.placeholder((1, 4, 4, 32), "int8", "full")
    narrow = te.compute(x.shape, lambda n, h, w, c: (x[n, h, w, c].astype("int32") * g[n, 0, 0, c].astype("int32")).astype("int8"))
    per_pixel = te.compute(x.shape, lambda n, h, w, c: (x[n, h, w, c].astype("int32") * full[n, h, w, c].astype("int32")).astype("int16"))
    assert gm.match_gate_multiply(te.create_prim_func([x, g, narrow])) is None
    assert gm.match_gate_multiply(te.create_prim_func([x, full, per_pixel])) is None


def _se_block(seed: int) -> bytes:
    """conv 3x3 -> HardSwish -> depthwise 3x3 -> HardSwish -> squeeze-excite (mean, conv, ReLU, conv,
    HardSigmoid, Mul) -> conv 1x1: 40 channels (two whole steps and an overlapping one)."""
    rng = np.random.default_rng(seed)
    c = 40
    w = {"w1": (rng.standard_normal((c, 8, 3, 3)) / 8, ), "wd": (rng.standard_normal((c, 1, 3, 3)) / 3, ),
         "ws1": (rng.standard_normal((16, c, 1, 1)) / 6, ), "bs1": (rng.standard_normal(16) * 0.1, ),
         "ws2": (rng.standard_normal((c, 16, 1, 1)) / 4, ), "bs2": (rng.standard_normal(c) * 0.1, ),
         "w3": (rng.standard_normal((16, c, 1, 1)) / 7, )}  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "wd"], ["c2"], pads=[1, 1, 1, 1], group=c),
        helper.make_node("HardSwish", ["c2"], ["h2"]),
        helper.make_node("GlobalAveragePool", ["h2"], ["m"]),
        helper.make_node("Conv", ["m", "ws1", "bs1"], ["s1"]),
        helper.make_node("Relu", ["s1"], ["r1"]),
        helper.make_node("Conv", ["r1", "ws2", "bs2"], ["s2"]),
        helper.make_node("HardSigmoid", ["s2"], ["gate"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["h2", "gate"], ["se"]),
        helper.make_node("Conv", ["se", "w3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 6, 16])],
        [numpy_helper.from_array(v[0].astype(np.float32), k) for k, v in w.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def se_int8(tmp_path_factory) -> str:
    rng = np.random.default_rng(8)
    calibration = {"x": (rng.standard_normal((16, 8, 6, 16)) * 2).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("gate_multiply"), _se_block(4), calibration)


def test_haswell_build_has_the_kernel(se_int8):
    """One gate-multiply kernel, one squeeze sum with its requantization, and no other kernel on [1, 1, 1, C]
    but the gate's convs; the multiply's step is vpmaddwd, not vpmulld."""
    calls = kernel_calls(se_int8, HASWELL)
    names = [name for name, _ins, _out in calls]
    assert sum(n.startswith(gm.GATE_MULTIPLY) for n in names) == 1, names
    assert sum(n.startswith(gm.SQUEEZE_REQUANT) for n in names) == 1, names
    small = [c[0] for c in calls if c[2][:3] == (1, 1, 1) and not c[0].startswith(gm.SQUEEZE_REQUANT)]
    assert len(small) == 2 and all("conv2d" in n for n in small), small
    asm = {k: v for k, v in kernels_asm(se_int8, "haswell").items() if k.startswith(gm.GATE_MULTIPLY)}
    ops = mnemonics(next(iter(asm.values())))
    assert "vpmaddwd" in ops and "vpmulld" not in ops, sorted(ops)


def test_avx512_builds_keep_tvms_kernel(se_int8):
    names = [name for name, _ins, _out in kernel_calls(se_int8, tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}))]
    assert not any(n.startswith((gm.GATE_MULTIPLY, gm.SQUEEZE_REQUANT)) for n in names), names


def _outputs(model: str, feeds: list[np.ndarray]) -> list[np.ndarray]:
    mod, weights = import_onnx(load_model(model))[:2]
    built = build_cpu(mod, HASWELL, weights)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    return [vm["main"](tvm.runtime.tensor(x), *built.params).numpy() for x in feeds]


@needs_cpu(HASWELL)
def test_haswell_model_is_bit_identical_without_the_kernel(se_int8, monkeypatch):
    rng = np.random.default_rng(9)
    feeds = [(rng.standard_normal((1, 8, 6, 16)) * 2).astype(np.float32) for _ in range(4)]
    got = _outputs(se_int8, feeds)
    for x, y in zip(feeds, got):
        assert_within_one_lsb_of_onnxruntime(se_int8, {"x": x}, y)
    monkeypatch.setattr(gm, "gate_multiply_pass", lambda _target: tvm.transform.Sequential([], name="Off"))
    for a, b in zip(got, _outputs(se_int8, feeds)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("channels", [8, 200])
def test_the_kernel_takes_nothing_from_the_heap(channels):
    """The gate buffers stay on the stack, also where the two-thread rule splits the pixel loop."""
    from test_kernel_allocations import _lowered_one, heap_allocations

    from edgekit.compiler.backends.llvm.thread_shares import parallel_outer

    shape = (1, 2, 96, channels)
    found = gm.match_gate_multiply(_fused(shape, *REQUANTS[0]))
    func = gm.gate_multiply_func(shape, found[1], found[2], found[3], True)
    for f in (func, parallel_outer(func, 2)):
        if f is not None:
            assert heap_allocations(_lowered_one(f, "haswell")) == []

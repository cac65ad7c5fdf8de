"""int8 conv/matmul on the target's integer dot-product instructions (edgekit.compiler.backends.llvm.int8).

Code generation is checked for explicit targets -- whatever CPU runs the
test -- by reading the assembly LLVM produces for them; numerics are checked
by running the kernels this CPU can execute against the generic integer
kernels (bit-exact) and onnxruntime's QDQ graph as written (1 LSB).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from _host_cpu import runs_here, skip_unless_runs_here
from _int8_checks import parallel_closures
from onnx import TensorProto, helper, numpy_helper

import edgekit.compiler.backends.llvm.int8 as cpu_int8
import edgekit.compiler.backends.llvm.lookup as cpu_lookup
import edgekit.compiler.backends.llvm.requant as cpu_requant
from edgekit.compiler.backends.llvm.channel_sum import channel_sum_pass
from edgekit.compiler.backends.llvm.int8 import pmaddubsw_exact
from edgekit.compiler.backends.llvm.intrin import I16_256, I16_512, U8S8_256, VNNI256, VNNI512, dot_isa
from edgekit.compiler.backends.llvm.lookup import _avx2_slices, _lookup_avx2_func, _lookup_vbmi_func
from edgekit.compiler.backends.llvm.relax_build import build_cpu, prepare_cpu_module, schedule_passes
from edgekit.compiler.importer import import_onnx
from edgekit.compress import QuantConfig, quantize
from edgekit.frontend.loader import load_model

X86 = {
    "haswell": I16_256,  # AVX2, no VNNI (what Zen 2 EPYCs also have)
    "znver2": I16_256,
    "skylake-avx512": I16_512,  # AVX-512 without VNNI
    "alderlake": VNNI256,  # AVX-VNNI, no AVX-512
    "icelake-server": VNNI512,
    "znver4": VNNI512,
    "sapphirerapids": VNNI512,  # AMX-INT8 too: no AMX kernels, the AVX512-VNNI ones
}


@pytest.mark.parametrize(("mcpu", "isa"), list(X86.items()))
def test_isa_is_chosen_by_the_target_not_this_machine(mcpu, isa):
    assert dot_isa(tvm.target.Target({"kind": "llvm", "mcpu": mcpu})) is isa


def test_no_dot_isa_without_avx2_or_off_x86():
    assert dot_isa(tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"})) is None
    a72 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
    assert dot_isa(tvm.target.Target(a72)) is None


def test_pmaddubsw_is_used_only_where_it_cannot_saturate():
    # A pair of 8-bit weights (100, 100) times 255 + 255 is 51,000 > 32,767.
    w = np.zeros((8, 16), dtype=np.int8)
    w[0, 3] = w[1, 3] = 100
    assert not pmaddubsw_exact(w)
    # The same weights in different pairs, or any 7-bit weights, are safe.
    w[1, 3], w[2, 3] = 0, 100
    assert pmaddubsw_exact(w)
    rng = np.random.default_rng(0)
    assert pmaddubsw_exact(rng.integers(-64, 64, (3, 3, 32, 64)).astype(np.int8))
    assert not pmaddubsw_exact(rng.integers(-128, 128, (3, 3, 32, 64)).astype(np.int8))


# --------------------------------------------------------------------------- #
# A small int8 model: every case the rewrite handles
# --------------------------------------------------------------------------- #


def _fp32_model(seed: int = 0, weight_scale: float = 1.0) -> onnx.ModelProto:
    """3 input channels (not a multiple of 4), a strided padded 3x3 conv to 20
    channels (not a multiple of the vector), a strided 5x5 depthwise conv on
    those 20 channels, a 1x1 conv, a padded 3x3 depthwise conv (odd kernel
    widths: an extra zero tap), Gemm."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * weight_scale / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [
        numpy_helper.from_array(w(20, 3, 3, 3), "w1"),
        numpy_helper.from_array(w(20, 1)[:, 0], "b1"),
        numpy_helper.from_array(w(20, 1, 5, 5), "wd"),
        numpy_helper.from_array(w(32, 20, 1, 1), "w2"),
        numpy_helper.from_array(w(32, 1, 3, 3), "w3"),
        numpy_helper.from_array(w(40, 32 * 3 * 3), "wf"),
        numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd"], ["d1"], group=20, strides=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["d1", "w2"], ["c2"]),
        helper.make_node("Conv", ["c2", "w3"], ["c3"], group=32, pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c3", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "int8dot",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 40])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("int8dot")
    src = d / "fp32.onnx"
    onnx.save(_fp32_model(), str(src))
    rng = np.random.default_rng(1)
    cal = {"x": rng.standard_normal((16, 3, 10, 10)).astype(np.float32)}
    out = d / "int8.onnx"
    quantize(str(src), QuantConfig(), calibration=cal).save(out)
    return str(out)


def _kernels(model_path: str, target: tvm.target.Target, *, all_parallel: bool = False) -> dict[str, tuple[str, str]]:
    """``(scheduled TIR, assembly)`` of every conv/matmul kernel of the model compiled for ``target``
    (``all_parallel``: the default schedules only, before the pipeline makes small kernels serial)."""
    mod, weights = import_onnx(load_model(model_path))[:2]
    num_input = int(mod["main"].attrs["num_input"])
    by_name = {p.name: (w.numpy() if hasattr(w, "numpy") else np.asarray(w)) for p, w in zip(mod["main"].params[num_input:], weights)}
    prepared, _ = prepare_cpu_module(mod, target, weights=by_name)
    with target, tvm.transform.PassContext(opt_level=3):
        passes = schedule_passes(target)
        scheduled = tvm.transform.Sequential(passes[:1] if all_parallel else passes)(prepared)
    out = {}
    for gv, f in scheduled.functions_items():
        if isinstance(f, tvm.tirx.PrimFunc) and ("conv2d" in gv.name_hint or "matmul" in gv.name_hint):
            lib = tvm.tirx.build(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target)
            out[gv.name_hint] = (f.script(), lib.inspect_source("asm"))
    return out


def _kernels_asm(model_path: str, target: tvm.target.Target) -> dict[str, str]:
    return {n: asm for n, (_tir, asm) in _kernels(model_path, target).items()}


def _mnemonics(asm: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\s+(?:\{vex\}\s+)?([a-z][a-z0-9]*)", asm, re.M)}


def _reduction_body(tir: str) -> str:
    """The statements inside the tensorized reduction block (``..._update_o``)."""
    lines = tir.splitlines()
    start = next(i for i, line in enumerate(lines) if "_update_o" in line and "sblock" in line)
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        if not line.strip().startswith(("T.reads", "T.writes", "v_", "T.where")):
            body.append(line)
    return "\n".join(body)


@pytest.mark.parametrize(
    ("mcpu", "instruction", "intrinsic"),
    [
        # AVX-512 targets take 8-lane vectors where 16 would pad more output
        # channels (the 20-channel conv), hence the two forms.
        ("icelake-server", "vpdpbusd", ("llvm.x86.avx512.vpdpbusd.512", "llvm.x86.avx512.vpdpbusd.256")),
        ("alderlake", "vpdpbusd", ("llvm.x86.avx512.vpdpbusd.256",)),
        ("haswell", "vpmaddwd", ("llvm.x86.avx2.pmadd.wd",)),
        ("skylake-avx512", "vpmaddwd", ("llvm.x86.avx512.pmaddw.d.512", "llvm.x86.avx2.pmadd.wd")),
    ],
)
def test_dense_int8_kernels_use_the_targets_dot_product(int8_model, mcpu, instruction, intrinsic):
    kernels = _kernels(int8_model, tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    dense = {n: k for n, k in kernels.items() if re.match(r"fused_(conv2d|matmul)_(vnni|i16_|u8s8)", n)}
    # The two convolutions and the Gemm (the depthwise conv has its own kernel).
    assert len(dense) == 3, sorted(kernels)
    for name, (tir, asm) in dense.items():
        assert instruction in _mnemonics(asm), name
        # The reduction's body is that one instruction on packed 8/16-bit
        # operands: no widening and no int64 arithmetic (64-bit products
        # remain only in the per-output requantization, after the reduction).
        body = _reduction_body(tir)
        assert any(i in body for i in intrinsic), body
        assert "\"int64\"" not in body and "T.Cast" not in body, body


@pytest.mark.parametrize("mcpu", ["icelake-server", "alderlake", "haswell", "skylake-avx512"])
def test_dense_int8_kernels_allocate_nothing_per_parallel_iteration(int8_model, int8_7bit_model, mcpu):
    # A named operand in the dot-product step is a local buffer, which TVM
    # takes from the heap once per iteration of the parallel loop.
    for model in (int8_model, int8_7bit_model) if mcpu == "haswell" else (int8_model,):
        kernels = _kernels(model, tvm.target.Target({"kind": "llvm", "mcpu": mcpu}), all_parallel=True)
        dense = {n: asm for n, (_tir, asm) in kernels.items() if re.match(r"fused_(conv2d|matmul)_(vnni|i16_|u8s8)", n)}
        assert len(dense) == 3, sorted(kernels)
        for name, asm in dense.items():
            closures = parallel_closures(asm)
            assert closures, f"{name}: no parallel loop"
            assert not any("TVMBackendAllocWorkspace" in c for c in closures), name


#: x86 vector multiplies with 64-bit products or lanes.
WIDE_MULTIPLIES = {"vpmuludq", "vpmuldq", "vpmullq"}


@pytest.mark.parametrize("mcpu", ["haswell", "znver2", "alderlake", "icelake-server"])
def test_int8_kernels_requantize_without_64_bit_multiplies(int8_model, mcpu, monkeypatch):
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    kernels = _kernels(int8_model, target)
    # Both convolutions, both depthwise convs and the Gemm, each with its requantization fused.
    assert len(kernels) == 5, sorted(kernels)
    for name, (tir, asm) in kernels.items():
        assert '"int64"' not in tir.replace('T.int64(', ''), name  # no int64 values, only int64 loop indices
        assert not _mnemonics(asm) & WIDE_MULTIPLIES, (name, sorted(_mnemonics(asm) & WIDE_MULTIPLIES))
    # The scan sees them where they are: the integer lowering's own int64 form.
    monkeypatch.setattr(cpu_requant, "uses_float_requant", lambda t: False)
    wide = [n for n, (_tir, asm) in _kernels(int8_model, target).items() if _mnemonics(asm) & WIDE_MULTIPLIES]
    assert len(wide) == 5, wide


def test_float_requantization_is_chosen_by_the_target():
    assert cpu_requant.uses_float_requant(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))
    assert not cpu_requant.uses_float_requant(tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"}))
    a72 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
    assert not cpu_requant.uses_float_requant(tvm.target.Target(a72))


@pytest.mark.parametrize(
    "mcpu, kernel, instructions, forbidden",
    [
        # AVX-512: vpmaddwd on int16 pairs (x[p][c], x[p + 1][c]); LLVM may fold
        # the add of the accumulator into vpdpwssd where the target has VNNI.
        ("skylake-avx512", "depthwise_conv2d_dw", {"vpmaddwd", "vpdpwssd"}, {"vpmulld", "vpmullw"}),
        # AVX512-VNNI, with or without VBMI: four taps per vpdpbusd lane (test_depthwise_vnni).
        ("cascadelake", "depthwise_conv2d_vnni", {"vpdpbusd"}, {"vpmulld", "vpmullw", "vpmaddwd", "vpdpwssd"}),
        ("icelake-server", "depthwise_conv2d_vnni", {"vpdpbusd"}, {"vpmulld", "vpmullw", "vpmaddwd", "vpdpwssd"}),
        # AVX2: two pixels' bytes interleaved, widened once, one vpmaddwd per two taps
        # (test_depthwise_avx2).
        ("haswell", "depthwise_conv2d_dw8", {"vpmaddwd"}, {"vpmulld", "vpmullw"}),
        ("znver2", "depthwise_conv2d_dw8", {"vpmaddwd"}, {"vpmulld", "vpmullw"}),
        # AVX-VNNI: four taps per 256-bit vpdpbusd lane.
        ("alderlake", "depthwise_conv2d_vnni", {"vpdpbusd"}, {"vpmulld", "vpmullw", "vpmaddwd"}),
    ],
)
def test_int8_depthwise_multiplies_in_16_bits(int8_model, mcpu, kernel, instructions, forbidden):
    kernels = _kernels_asm(int8_model, tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    depthwise = [a for n, a in kernels.items() if kernel in n]
    assert len(depthwise) == 2, sorted(kernels)
    for asm in depthwise:
        ops = _mnemonics(asm)
        assert ops & instructions and not ops & forbidden, sorted(ops)


def _with_depthwise_weights(model_path: str, out: Path, fill: Any) -> str:
    """The int8 model with each depthwise weight initializer replaced by ``fill(shape)``."""
    model = onnx.load(model_path)
    for init in model.graph.initializer:
        if init.data_type == TensorProto.INT8 and len(init.dims) == 4 and init.dims[1] == 1:
            init.CopyFrom(numpy_helper.from_array(fill(tuple(init.dims)).astype(np.int8), init.name))
    onnx.save(model, str(out))
    return str(out)


def test_avx2_depthwise_tap_pairs_are_exact_at_the_extremes(int8_model, tmp_path, monkeypatch):
    # The int16 tap pairs (depthwise_avx2), which AVX2 targets now keep for dilated
    # kernels only: two taps summed in int16, 2 * 128 * 127 = 32,512 fits, so every
    # weight +-127 with inputs saturated to -128 is exact; a -128 weight (2 * 128 * 128
    # would not fit) takes the one-tap kernel.
    skip_unless_runs_here("haswell")
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    monkeypatch.setattr(cpu_int8._Rewriter, "dw_pairs_avx2", False)  # the default path: test_depthwise_avx2
    extreme = _with_depthwise_weights(int8_model, tmp_path / "extreme.onnx",
                                      lambda shape: np.where(np.arange(np.prod(shape)).reshape(shape) % 4 < 2, 127, -127))
    x = np.full((1, 3, 10, 10), -50.0, np.float32)  # quantizes to -128 everywhere
    x[..., ::3] = 50.0  # and to 127
    got, built = _run(extreme, target, x)
    assert sum("depthwise_conv2d_i16p" in gv.name_hint for gv in built.lowered.get_global_vars()) == 2
    with monkeypatch.context() as m:
        m.setattr(cpu_int8, "dot_isa", lambda t: None)
        generic, _ = _run(extreme, target, x)
    np.testing.assert_array_equal(got, generic)
    with_minus_128 = _with_depthwise_weights(int8_model, tmp_path / "m128.onnx", lambda shape: np.full(shape, -128))
    names = _kernels_asm(with_minus_128, target)
    assert sum("depthwise_conv2d_i16" in n for n in names) == 2 and not any("i16p" in n for n in names), sorted(names)


def test_avx512_takes_half_vectors_only_where_they_take_no_more_instructions():
    rw = cpu_int8._Rewriter(VNNI512, None, None, half_width=True)
    assert rw.pick(None, 8) is VNNI256  # one vector either way, half of it not padding
    assert rw.pick(None, 20) is VNNI512  # 2 wide vectors, not 3 narrow ones
    assert rw.pick(None, 200) is VNNI512  # 13, not 25 (the narrow choice ran 1.8x slower)
    assert rw.pick(None, 32) is VNNI512


@pytest.fixture(scope="module")
def int8_7bit_model(tmp_path_factory) -> str:
    """The int8 model with its weights halved to 7 bits (what onnxruntime's
    reduce_range writes): they cannot saturate vpmaddubsw, so AVX2 uses it."""
    d = tmp_path_factory.mktemp("int8_7bit")
    src = d / "fp32.onnx"
    onnx.save(_fp32_model(seed=3), str(src))
    cal = {"x": np.random.default_rng(1).standard_normal((8, 3, 10, 10)).astype(np.float32)}
    q = quantize(str(src), QuantConfig(), calibration=cal)
    for init in q.model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.int8 and arr.ndim >= 2:
            init.CopyFrom(numpy_helper.from_array((arr // 2).astype(np.int8), init.name))
    path = d / "int8_7bit.onnx"
    onnx.save(q.model, str(path))
    return str(path)


def test_avx2_takes_pmaddubsw_for_7_bit_weights(int8_7bit_model):
    asm = _kernels_asm(int8_7bit_model, tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))
    u8s8 = {n: a for n, a in asm.items() if U8S8_256.name in n}
    assert len(u8s8) == 3, sorted(asm)
    for name, text in u8s8.items():
        assert {"vpmaddubsw", "vpmaddwd"} <= _mnemonics(text), name


def test_aarch64_int8_conv_uses_neon_widening_multiplies(int8_model):
    a72 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
    asm = _kernels_asm(int8_model, tvm.target.Target(a72))
    convs = [a for n, a in asm.items() if "conv2d" in n]
    assert convs
    for text in convs:
        assert _mnemonics(text) & {"smull", "smull2", "smlal", "smlal2", "sdot"}, sorted(_mnemonics(text))


# --------------------------------------------------------------------------- #
# Numerics
# --------------------------------------------------------------------------- #


#: Targets whose code the numerics tests run where this CPU can: AVX2, AVX-512, AVX512-VNNI (+ VBMI).
RUN_TARGETS = ("haswell", "skylake-avx512", "icelake-server")


def _runnable_targets() -> list[str]:
    """:data:`RUN_TARGETS` whose code this machine can execute."""
    return [m for m in RUN_TARGETS if runs_here(m)]


def _run(model_path: str, target: tvm.target.Target, x: np.ndarray) -> np.ndarray:
    """The model's output for each sample of ``x`` (compiled once), and the build."""
    mod, weights = import_onnx(load_model(model_path))[:2]
    built = build_cpu(mod, target, weights)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    outs = []
    for i in range(len(x)):
        out = vm["main"](tvm.runtime.tensor(x[i : i + 1]), *built.params)
        outs.append(out.numpy() if hasattr(out, "numpy") else out[0].numpy())
    return np.concatenate(outs), built


@pytest.mark.parametrize("mcpu", RUN_TARGETS)
def test_dot_kernels_are_bit_exact_with_generic_integer_kernels(int8_model, mcpu, monkeypatch):
    skip_unless_runs_here(mcpu)
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    x = np.random.default_rng(5).standard_normal((1, 3, 10, 10)).astype(np.float32)
    got, built = _run(int8_model, target, x)
    names = [gv.name_hint for gv in built.lowered.get_global_vars()]
    assert any(dot_isa(target).name in n for n in names), names
    monkeypatch.setattr(cpu_int8, "dot_isa", lambda t: None)
    generic, built_generic = _run(int8_model, target, x)
    assert not any(dot_isa(target).name in n for n in [gv.name_hint for gv in built_generic.lowered.get_global_vars()])
    np.testing.assert_array_equal(got, generic)

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(int8_model, opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    model = onnx.load(int8_model)
    last = [n for n in model.graph.node if n.op_type == "DequantizeLinear"][-1]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    lsb = float(np.max(inits[last.input[1]]))
    assert np.mean(np.abs(got - want) <= lsb * 1.001) >= 0.999


def test_pmaddubsw_kernels_are_bit_exact_with_generic_integer_kernels(int8_7bit_model, monkeypatch):
    skip_unless_runs_here("haswell")
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    x = np.random.default_rng(6).standard_normal((2, 3, 10, 10)).astype(np.float32)
    got, built = _run(int8_7bit_model, target, x)
    assert sum(U8S8_256.name in gv.name_hint for gv in built.lowered.get_global_vars()) == 3
    monkeypatch.setattr(cpu_int8, "dot_isa", lambda t: None)
    generic, _ = _run(int8_7bit_model, target, x)
    np.testing.assert_array_equal(got, generic)


def test_float_requantization_is_within_one_step_of_the_fixed_point_form(int8_model, monkeypatch):
    if not _runnable_targets():
        pytest.skip(f"this CPU runs none of {', '.join(RUN_TARGETS)}")
    target = tvm.target.Target({"kind": "llvm", "mcpu": _runnable_targets()[0]})
    x = np.random.default_rng(6).standard_normal((4, 3, 10, 10)).astype(np.float32)
    got = _run(int8_model, target, x)[0]
    monkeypatch.setattr(cpu_requant, "uses_float_requant", lambda t: False)
    fixed = _run(int8_model, target, x)[0]
    model = onnx.load(int8_model)
    last = [n for n in model.graph.node if n.op_type == "DequantizeLinear"][-1]
    lsb = float(numpy_helper.to_array([t for t in model.graph.initializer if t.name == last.input[1]][0]))
    steps = np.abs(got - fixed) / lsb
    # Half-way points (and float rounding within ~2^-20 of them) may round the
    # other way, and a step inside the network may move the logits by one more.
    assert np.max(steps) <= 2.001 and np.mean(steps <= 1.001) >= 0.99, np.max(steps)


def _lut_model() -> onnx.ModelProto:
    """conv -> HardSigmoid -> Mul (hard-swish): the integer lowering's table lookups."""
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array((rng.standard_normal((24, 8, 3, 3)) / 8).astype(np.float32), "w")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSigmoid", ["c"], ["g"]),
        helper.make_node("Mul", ["c", "g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lut",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 12, 12])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_hard_swish_is_one_table(tmp_path):
    # x * hard_sigmoid(x) has two int8 operands but one source: the table of
    # hard_sigmoid, the requantized product and any later requantization of
    # it are one 256-entry table, evaluated with onnxruntime's float32 ops.
    src = tmp_path / "fp32.onnx"
    onnx.save(_lut_model(), str(src))
    cal = {"x": np.random.default_rng(1).standard_normal((8, 8, 12, 12)).astype(np.float32)}
    path = tmp_path / "int8.onnx"
    quantize(str(src), QuantConfig(), calibration=cal).save(path)
    mod = import_onnx(load_model(str(path)))[0]
    text = mod["main"].script()
    assert text.count("R.take(") == 1, text
    assert "R.right_shift" in text  # the conv's own requantization
    assert text.count("R.multiply") == 1, text  # ... and no integer product of two tensors


LOOKUPS = {"icelake-server": ("lookup_vbmi", {"vpermi2b", "vpermt2b"}), "haswell": ("lookup_avx2", {"vpshufb"})}


@pytest.mark.parametrize("mcpu", list(LOOKUPS))
def test_table_lookups_are_vector_kernels(tmp_path, monkeypatch, mcpu):
    src = tmp_path / "fp32.onnx"
    onnx.save(_lut_model(), str(src))
    cal = {"x": np.random.default_rng(1).standard_normal((8, 8, 12, 12)).astype(np.float32)}
    path = tmp_path / "int8.onnx"
    quantize(str(src), QuantConfig(), calibration=cal).save(path)
    mod, weights = import_onnx(load_model(str(path)))[:2]
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    prefix, instructions = LOOKUPS[mcpu]
    prepared, _ = prepare_cpu_module(mod, target)
    lookups = [f for gv, f in prepared.functions_items() if gv.name_hint.startswith(prefix)]
    assert len(lookups) == 1, sorted(gv.name_hint for gv in prepared.get_global_vars())
    text = tvm.tirx.build(tvm.IRModule({"main": lookups[0].with_attr("global_symbol", "main")}), target).inspect_source("asm")
    assert _mnemonics(text) & instructions, sorted(_mnemonics(text))
    if not runs_here(mcpu):
        return
    # Bit-exact with TVM's gathers on this machine.
    x = np.random.default_rng(5).standard_normal((1, 8, 12, 12)).astype(np.float32)
    got, _ = _run(str(path), target, x)
    monkeypatch.setattr(cpu_lookup, "lookup_pass", lambda t: tvm.transform.Sequential([]))
    want, _ = _run(str(path), target, x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mcpu", list(LOOKUPS))
def test_lookup_kernels_map_every_int8_value(mcpu):
    skip_unless_runs_here(mcpu)
    rng = np.random.default_rng(7)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    x = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, 300 - 256)]).astype(np.int8).reshape(1, 300)
    if mcpu == "haswell":
        func, layout = _lookup_avx2_func(x.shape), _avx2_slices(table)
    else:
        func, layout = _lookup_vbmi_func(x.shape), table
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
    out = tvm.runtime.tensor(np.zeros_like(x))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(layout), out)  # 300 = whole steps and a tail
    np.testing.assert_array_equal(out.numpy(), table[x.astype(np.int64) + 128])


def test_channel_sums_and_max_pools_read_the_channels_last_int8_tensor():
    """Squeeze sums in int32 of int8 values and an NCHW max pool after a transpose
    (backends.llvm.channel_sum.channel_sum_pass): one NHWC kernel each, same values as numpy."""
    from tvm import relax
    from tvm.relax import op as R

    shape = (1, 6, 8, 24)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    with bb.function("main", [x], {"num_input": 1}):
        with bb.dataflow():
            s = bb.emit(R.sum(bb.emit(R.astype(x, "int32")), axis=[1, 2], keepdims=True))
            nchw = bb.emit(R.permute_dims(x, [0, 3, 1, 2]))
            p = bb.emit(R.nn.max_pool2d(nchw, [2, 2], [2, 2]))
            t = bb.emit(R.sum(bb.emit(R.astype(p, "int32")), axis=[2, 3], keepdims=True))
            out = bb.emit_output(relax.Tuple([s, p, t]))
        bb.emit_func_output(out)
    mod = channel_sum_pass()(bb.get())
    text = mod["main"].script()
    # 24 channels: the NHWC pool is channel_sum.py's own kernel (a ragged count).
    assert text.count("channel_sum") == 2 and text.count("max_pool2d") == 1 and "permute_dims" in text, text
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    a = np.random.default_rng(2).integers(-128, 128, shape).astype(np.int8)
    s, p, t = (v.numpy() for v in vm["main"](tvm.runtime.tensor(a)))
    np.testing.assert_array_equal(s, a.astype(np.int32).sum(axis=(1, 2), keepdims=True))
    want = a.reshape(1, 3, 2, 4, 2, 24).max(axis=(2, 4)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(p, want)
    np.testing.assert_array_equal(t, want.astype(np.int32).sum(axis=(2, 3), keepdims=True))

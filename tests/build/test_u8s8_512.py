"""AVX512BW without VNNI (Skylake-SP, ``-mcpu skylake-avx512``): int8 layers on ``vpmaddubsw zmm`` (``U8S8_512``).

Layers whose weights cannot saturate ``vpmaddubsw`` (7-bit weights, what
``weight_bits auto`` gives such a target) take it on ``zmm`` registers, 64
u8 x s8 products per instruction, where they multiplied int16 with
``vpmaddwd zmm`` (32); 8-bit weights that could saturate it keep
``I16_512``. The model is test_cpu_int8's (a padded strided 3x3 conv to 20
channels, depthwise 5x5 and 3x3 convs, a 1x1 conv, a Gemm), quantized by the
real quantizer with 7-bit and with 8-bit weights. Code is checked for the
explicit target on any machine; numerics where this CPU runs the code.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import tvm
from _host_cpu import skip_unless_runs_here
from _int8_checks import parallel_closures
from onnx import numpy_helper
from test_cpu_int8 import WIDE_MULTIPLIES, _kernels, _mnemonics, _reduction_body, _run
from test_weight_bits_avx2 import models, onnxruntime_steps  # noqa: F401 (models: the fixture, 8- and 7-bit weights)

import edgekit.compiler.backends.llvm.int8 as cpu_int8
from edgekit.compiler.backends.llvm.int8 import pmaddubsw_exact
from edgekit.compiler.backends.llvm.intrin import I16_256, I16_512, U8S8_256, U8S8_512
from edgekit.compiler.importer import import_onnx
from edgekit.frontend.loader import load_model

SKYLAKE_SP = {"kind": "llvm", "mcpu": "skylake-avx512"}
#: The dense (conv/matmul) dot-product kernels, by name.
DENSE = re.compile(r"fused_(conv2d|matmul)_(vnni|i16_|u8s8)")


def _loops_with(asm: str, mnemonic: str) -> list[list[str]]:
    """The innermost loops (label to backward jump, no loop inside) of ``asm`` that hold ``mnemonic``."""
    lines = asm.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^(\.LBB\d+_\d+):", line))}
    loops = []
    for j, line in enumerate(lines):
        m = re.match(r"^\s+j\w+\s+(\.LBB\d+_\d+)", line)
        if m and labels.get(m.group(1), j) < j:
            loops.append((labels[m.group(1)], j))
    innermost = [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]
    return [lines[a : b + 1] for a, b in innermost if any(mnemonic in x for x in lines[a : b + 1])]


def test_skylake_avx512_code_of_7_bit_weights_multiplies_u8_by_s8_on_zmm(models: dict[int, str]) -> None:
    kernels = _kernels(models[7], tvm.target.Target(SKYLAKE_SP))
    dense = {n: k for n, k in kernels.items() if DENSE.match(n)}
    # Both convolutions and the Gemm (20, 32 and 40 outputs: 16-lane vectors).
    assert len(dense) == 3 and all(U8S8_512.name in n for n in dense), sorted(kernels)
    for name, (tir, asm) in dense.items():
        # The tensorized step: vpmaddubsw zmm on the packed u8/s8 operands, no widening, no int64.
        body = _reduction_body(tir)
        assert "llvm.x86.avx512.pmaddubs.w.512" in body and "llvm.x86.avx512.pmaddw.d.512" in body, body
        assert '"int64"' not in body and "T.Cast" not in body, body
        assert not _mnemonics(asm) & WIDE_MULTIPLIES, (name, sorted(_mnemonics(asm) & WIDE_MULTIPLIES))
        zmm = [x for x in asm.splitlines() if re.match(r"\s+vpmaddubsw\s.*%zmm", x)]
        assert zmm, name
    # In the convolutions the products sit in the reduction loop, on zmm registers.
    for name, (_tir, asm) in dense.items():
        if "conv2d" in name:
            loops = _loops_with(asm, "vpmaddubsw")
            assert loops and all(any("%zmm" in x for x in loop if "vpmaddubsw" in x) for loop in loops), name


def test_8_bit_weights_that_could_saturate_keep_int16(models: dict[int, str]) -> None:
    weights = [numpy_helper.to_array(t) for t in onnx.load(models[8]).graph.initializer if len(t.dims) == 2]
    # The Gemm's weight ([40, 288], K last): as the kernels see it ([K, N]) it could saturate vpmaddubsw.
    assert any(not pmaddubsw_exact(w.T) for w in weights)
    dense = [n for n in _kernels(models[8], tvm.target.Target(SKYLAKE_SP)) if DENSE.match(n)]
    assert len(dense) == 3 and all(I16_512.name in n for n in dense), dense


def test_the_choice_per_layer() -> None:
    rw = cpu_int8._Rewriter(I16_512, U8S8_512, None, half_width=True)
    seven_bit = lambda k: np.full((1, 1, k, 32), 64, dtype=np.int8)  # noqa: E731
    assert rw.pick(seven_bit(24), 32) is U8S8_512
    assert rw.pick(seven_bit(24), 8) is U8S8_256  # one 8-lane vector holds all outputs (AVX-512VL)
    assert rw.pick(seven_bit(22), 32) is I16_512  # 11 pairs, not whole groups of 4: vpmaddubsw would pad
    assert rw.pick(np.full((1, 1, 24, 32), 127, dtype=np.int8), 32) is I16_512  # 8-bit: would saturate
    assert rw.pick(np.full((1, 1, 24, 32), 127, dtype=np.int8), 8) is I16_256
    assert rw.pick(None, 32) is I16_512  # weights not known at compile time


def test_build_cpu_hands_the_weight_values_to_the_int8_pass(models: dict[int, str]) -> None:
    # Without them no layer can be proven exact: a 7-bit model built by build_cpu (packages,
    # benchmarks) took I16_512 everywhere, though the kernels above (weights passed directly) did not.
    from edgekit.compiler.backends.llvm.relax_build import _weights_by_name

    mod, weights = import_onnx(load_model(models[7]))[:2]
    num_input = int(mod["main"].attrs["num_input"])
    by_name = _weights_by_name(mod, num_input, weights, tvm.target.Target(SKYLAKE_SP))
    assert by_name is not None and len(by_name) == len(weights)
    assert _weights_by_name(mod, num_input, weights, tvm.target.Target({"kind": "llvm", "mcpu": "icelake-server"})) is None


def test_u8s8_512_kernels_allocate_nothing_per_parallel_iteration(models: dict[int, str]) -> None:
    kernels = _kernels(models[7], tvm.target.Target(SKYLAKE_SP), all_parallel=True)
    dense = {n: asm for n, (_tir, asm) in kernels.items() if DENSE.match(n)}
    assert len(dense) == 3 and all(U8S8_512.name in n for n in dense), sorted(kernels)
    for name, asm in dense.items():
        closures = parallel_closures(asm)
        assert closures and not any("TVMBackendAllocWorkspace" in c for c in closures), name


def test_7_bit_skylake_avx512_code_is_exact_and_within_one_lsb_of_onnxruntime(models: dict[int, str],
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    skip_unless_runs_here("skylake-avx512")
    target = tvm.target.Target(SKYLAKE_SP)
    x = np.random.default_rng(7).standard_normal((8, 3, 10, 10)).astype(np.float32)
    got, built = _run(models[7], target, x)
    assert sum(U8S8_512.name in gv.name_hint for gv in built.lowered.get_global_vars()) == 3
    # The same model and target without the vpmaddubsw form: vpmaddwd on int16, bit for bit.
    with monkeypatch.context() as m:
        m.setattr(cpu_int8, "_U8S8", {})
        int16, built16 = _run(models[7], target, x)
    names16 = [gv.name_hint for gv in built16.lowered.get_global_vars()]
    assert sum(I16_512.name in n for n in names16) == 3 and not any("u8s8" in n for n in names16), names16
    np.testing.assert_array_equal(got, int16)
    steps = onnxruntime_steps(models[7], x, got)
    assert np.max(steps) <= 1.001, np.max(steps)

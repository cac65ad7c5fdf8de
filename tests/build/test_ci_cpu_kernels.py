"""The int8 kernels of the two other CPUs CI runs on, chosen by the target's features (issue #14).

CI has run on a Zen 2 EPYC (``znver2``: AVX2, no AVX-512, no VNNI) and on a
Sapphire Rapids Xeon (``sapphirerapids``: AVX-512 with VNNI and VBMI,
AVX-VNNI, AMX-INT8). Both are compiled here and their assembly read,
whatever CPU runs the test: nothing is executed, so nothing needs a guard.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")
pytest.importorskip("onnxruntime")

from _int8_checks import kernels_asm, mnemonics, quantized  # noqa: E402


#: Registers and mask registers only AVX-512 (EVEX) code has.
AVX512_REGISTERS = re.compile(r"%zmm\d+|%[xy]mm(1[6-9]|2\d|3[01])\b|%k[1-7]\b")


def _model() -> Path:
    """conv 3x3 -> hard-swish (a table lookup) -> 3x3 depthwise -> ReLU -> conv 1x1 -> global pool -> Gemm to 16."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(w(32, 8, 3, 3), "w1"), numpy_helper.from_array(w(32, 1, 3, 3), "w2"),
             numpy_helper.from_array(w(16, 32, 1, 1), "w3"), numpy_helper.from_array(w(16, 16), "w4")]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=32),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"]),
        helper.make_node("GlobalAveragePool", ["c3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w4"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "ci_cpus", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> str:
    cal = {"x": np.random.default_rng(1).standard_normal((8, 8, 16, 16)).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("ci_cpus"), _model(), cal)


def _one(kernels: dict[str, str], pattern: str, count: int = 1) -> list[str]:
    found = [a for n, a in kernels.items() if re.search(pattern, n)]
    assert len(found) == count, (pattern, sorted(kernels))
    return found


def test_sapphirerapids_takes_the_avx512_vnni_and_vbmi_kernels(int8_model):
    kernels = kernels_asm(int8_model, "sapphirerapids")
    for asm in _one(kernels, r"^fused_conv2d_vnni512", 2) + _one(kernels, r"^fused_matmul_vnni512"):
        assert re.search(r"vpdpbusd\s+.*%zmm", asm), "512-bit vpdpbusd"
    (depthwise,) = _one(kernels, r"^fused_depthwise_conv2d_vnni")
    assert {"vpdpbusd", "vpermb"} <= mnemonics(depthwise)  # four taps per lane, operands permuted with VBMI
    # The hard-swish table, 128 bytes per VBMI permute (in a lookup kernel or in the depthwise input copy).
    assert any(mnemonics(a) & {"vpermi2b", "vpermt2b"} for a in kernels.values()), sorted(kernels)
    # AMX adds nothing yet: the same kernels as an AVX512-VNNI + VBMI CPU without it.
    assert sorted(kernels) == sorted(kernels_asm(int8_model, "icelake-server"))


def test_znver2_takes_the_avx2_kernels_and_no_avx512_instruction(int8_model):
    kernels = kernels_asm(int8_model, "znver2")
    for asm in _one(kernels, r"^fused_conv2d_i16_256", 2) + _one(kernels, r"^fused_matmul_i16_256"):
        assert "vpmaddwd" in mnemonics(asm)
    (depthwise,) = _one(kernels, r"^fused_depthwise_conv2d_dw8")  # two taps per vpmaddwd lane
    assert "vpmaddwd" in mnemonics(depthwise) and not mnemonics(depthwise) & {"vpmullw", "vpmulld"}
    (lookup,) = _one(kernels, r"lookup")  # the hard-swish as int16 fixed point (lookup_fixed.py), not a table
    assert {"vpmulhrsw", "vpacksswb"} <= mnemonics(lookup) and "vpshufb" not in mnemonics(lookup)
    for name, asm in kernels.items():
        assert asm, name
        assert not AVX512_REGISTERS.search(asm), (name, AVX512_REGISTERS.search(asm).group(0))
        assert "vpdpbusd" not in mnemonics(asm), name
    assert sorted(kernels) == sorted(kernels_asm(int8_model, "haswell"))

"""int8 depthwise convolutions on AVX2-only targets (Haswell, Zen 2): two taps per ``vpmaddwd`` lane.

The code is checked for explicit ``-mcpu`` targets by reading the assembly LLVM
produces -- whatever CPU runs the test -- and the numerics by running the
kernels where this CPU can execute them: bit-exact against the generic
integer kernels and within 1 LSB of onnxruntime's QDQ graph as written.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import tvm
from _host_cpu import needs_cpu
from _int8_checks import assert_within_one_lsb_of_onnxruntime, kernel_calls, kernels_asm, mnemonics, quantized, run_built
from onnx import TensorProto, helper, numpy_helper

import edgekit.compiler.backends.llvm.int8 as cpu_int8
from edgekit.compiler.backends.llvm.intrin import DW_I16_256

#: AVX2 without AVX-512 or VNNI: Intel Haswell, AMD Zen 2 (the EPYC CI hosts).
AVX2_ONLY = ("haswell", "znver2")
HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
KERNEL = f"depthwise_conv2d_{DW_I16_256.name}"


def _fp32_model() -> onnx.ModelProto:
    """Depthwise layers of 24 channels 3x3 (vertical stride 2, padded) and 5x5, a 1x1 conv to 20
    channels (not whole 8-channel vectors), 20 channels 7x7 at horizontal stride 2, unpadded."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(w(24, 1, 3, 3), "d1"), numpy_helper.from_array(w(24, 1)[:, 0], "b1"),
             numpy_helper.from_array(w(24, 1, 5, 5), "d2"), numpy_helper.from_array(w(20, 24, 1, 1), "c3"),
             numpy_helper.from_array(w(20, 1, 7, 7), "d4")]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "d1", "b1"], ["y1"], group=24, strides=[2, 1], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y1"], ["r1"]),
        helper.make_node("Conv", ["r1", "d2"], ["y2"], group=24, pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["y2", "c3"], ["y3"]),
        helper.make_node("Conv", ["y3", "d4"], ["y"], group=20, strides=[1, 2]),
    ]
    graph = helper.make_graph(nodes, "dw_avx2", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 16, 30])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 20, 2, 12])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


SHAPE = (1, 24, 16, 30)


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> str:
    cal = {"x": np.random.default_rng(1).standard_normal((16, *SHAPE[1:])).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("dw_avx2"), _fp32_model(), cal)


def _depthwise_asm(model_path: str, mcpu: str) -> dict[str, str]:
    """Assembly of each depthwise kernel of the model compiled for ``mcpu``."""
    return {name: asm for name, asm in kernels_asm(model_path, mcpu).items() if "depthwise" in name}



@pytest.mark.parametrize("mcpu", AVX2_ONLY)
def test_avx2_depthwise_takes_two_taps_per_pmaddwd_lane(int8_model, mcpu):
    """Each depthwise kernel interleaves two pixels' bytes (``vpunpcklbw``), widens them once
    (``vpmovsxbw``) and multiplies both taps and adds them in 32 bits with one ``vpmaddwd``
    on ymm registers: no ``vpmullw`` products widened one by one, no 32-bit multiplies."""
    kernels = _depthwise_asm(int8_model, mcpu)
    assert len(kernels) == 3 and all(KERNEL in n for n in kernels), sorted(kernels)
    for name, asm in kernels.items():
        ops = mnemonics(asm)
        assert {"vpunpcklbw", "vpmovsxbw", "vpmaddwd"} <= ops, (name, sorted(ops))
        assert re.search(r"vpmaddwd\s+[^\n]*%ymm", asm), name
        assert not ops & {"vpmullw", "vpmulld", "vpmuldq", "vpmuludq"}, (name, sorted(ops))


def _kernel_names(model_path: str) -> list[str]:
    return [name for name, _ins, _out in kernel_calls(model_path, HASWELL)]


def _with_depthwise_weights(model_path: str, out: str, fill) -> str:
    model = onnx.load(model_path)
    for init in model.graph.initializer:
        if init.data_type == TensorProto.INT8 and len(init.dims) == 4 and init.dims[1] == 1:
            init.CopyFrom(numpy_helper.from_array(fill(tuple(init.dims)).astype(np.int8), init.name))
    onnx.save(model, out)
    return out


def _plus_minus_127(shape: tuple[int, ...]) -> np.ndarray:
    return np.where(np.arange(np.prod(shape)).reshape(shape) % 4 < 2, 127, -127)


@needs_cpu(HASWELL)
@pytest.mark.parametrize("weights", ["calibrated", "plus_minus_127", "minus_128"])
def test_avx2_depthwise_is_bit_exact_with_the_generic_kernel(int8_model, tmp_path, monkeypatch, weights):
    """Every int8 weight, -128 included (two products of at most 128 * 128 add in 32 bits),
    with inputs saturated at both ends."""
    model, x = int8_model, np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    if weights != "calibrated":
        x = np.full(SHAPE, -50.0, np.float32)  # quantizes to -128
        x[..., ::3] = 50.0  # and to 127
        fill = _plus_minus_127 if weights == "plus_minus_127" else (lambda s: np.full(s, -128))
        model = _with_depthwise_weights(int8_model, str(tmp_path / "w.onnx"), fill)
    assert sum(KERNEL in n for n in _kernel_names(model)) == 3
    got = run_built(model, HASWELL, x)
    monkeypatch.setattr(cpu_int8, "dot_isa", lambda t: None)
    assert not any(KERNEL in n for n in _kernel_names(model))
    np.testing.assert_array_equal(got, run_built(model, HASWELL, x))


@needs_cpu(HASWELL)
def test_avx2_depthwise_is_within_one_step_of_onnxruntime(int8_model):
    x = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    assert_within_one_lsb_of_onnxruntime(int8_model, {"x": x}, run_built(int8_model, HASWELL, x))

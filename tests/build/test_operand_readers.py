"""A residual add reads the next conv's operand form, so the u8 / int16 conversion needs no kernel of its own.

The pattern of PP-OCR's residual blocks (backends/llvm/operand_readers.py): a
conv's int8 output ``t`` is the next dense conv's input and, three layers on,
one operand of a residual add (in the last conv's epilogue). The kernels are
checked for ``znver4`` (u8 operands) and ``haswell`` (int16) code whatever CPU
runs the test; outputs bit-identical with the pipeline without the rewrite and
within 1 LSB of onnxruntime where this CPU runs the code.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from _host_cpu import skip_unless_runs_here
from _int8_checks import assert_within_one_lsb_of_onnxruntime, kernel_calls, quantized, run_built
from onnx import TensorProto, helper, numpy_helper

import edgekit.compiler.backends.llvm.operand_readers as operand_readers

ZNVER4 = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})
HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})


def _fp32_model() -> onnx.ModelProto:
    """x -> conv -> relu = t; t -> conv -> relu -> conv = s; t + s -> conv -> y (16 channels, 10x10)."""
    rng = np.random.default_rng(3)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(w(16, 8, 1, 1), "w1")]
    inits += [numpy_helper.from_array(w(16, 16, 1, 1), f"w{i}") for i in (2, 3, 4)]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["t0"]),
        helper.make_node("Relu", ["t0"], ["t"]),
        helper.make_node("Conv", ["t", "w2"], ["a0"]),
        helper.make_node("Relu", ["a0"], ["a"]),
        helper.make_node("Conv", ["a", "w3"], ["s"]),
        helper.make_node("Add", ["t", "s"], ["r"]),
        helper.make_node("Conv", ["r", "w4"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 10, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> str:
    cal = {"x": np.random.default_rng(1).standard_normal((16, 8, 10, 10)).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("operand_readers"), _fp32_model(), cal)


def _without_rewrite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operand_readers, "_read_operand", lambda m, call: None)


def _conversions(calls: list, operand: str) -> list[str]:
    """Kernels whose only input is an int8 activation and whose output is the same tensor as ``operand``."""
    return [name for name, ins, out in calls
            if len(ins) == 1 and ins[0][-1] == "int8" and out[-1] == operand and ins[0][:-1] == out[:-1]]  # fmt: skip


@pytest.mark.parametrize(("target", "operand"), [(ZNVER4, "uint8"), (HASWELL, "int16")], ids=["znver4", "haswell"])
def test_no_conversion_kernel_for_a_residual_operand(int8_model, monkeypatch, target, operand):
    calls = kernel_calls(int8_model, target)
    assert _conversions(calls, operand) == [], calls
    # The first conv writes the operand form itself; the residual conv reads it.
    assert any(out == (1, 10, 10, 16, operand) and "conv2d" in name for name, _, out in calls), calls

    _without_rewrite(monkeypatch)
    before = kernel_calls(int8_model, target)
    assert len(_conversions(before, operand)) == 1, before  # what the rewrite removes
    assert len(before) == len(calls) + 1


@pytest.mark.parametrize("mcpu", ["haswell", "icelake-server"])
def test_bit_identical_and_within_one_lsb_of_onnxruntime(int8_model, monkeypatch, mcpu):
    skip_unless_runs_here(mcpu)
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    x = np.random.default_rng(5).standard_normal((1, 8, 10, 10)).astype(np.float32)
    got = run_built(int8_model, target, x)
    assert_within_one_lsb_of_onnxruntime(int8_model, {"x": x}, got)

    _without_rewrite(monkeypatch)
    np.testing.assert_array_equal(got, run_built(int8_model, target, x))

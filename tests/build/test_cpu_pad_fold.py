"""A dense int8 conv's padded input written in one kernel with the concat it reads and its u8 conversion;
int8 nearest upsampling as a repeat of the int8 tensor.

The pattern of PP-OCR det's stem and neck (backends/llvm/concat_layout.py,
backends/llvm/pad.py, backends/llvm/upsample.py): convs whose outputs are
requantized by table lookups (one nearest-upsampled) and concatenated on
channels, then a 3x3 conv. The
kernels are checked for ``znver4`` code (VNNI: u8 operands) whatever CPU runs
the test; outputs where this CPU runs VNNI code, bit-identical with the
unfolded pipeline and within 1 LSB of onnxruntime's QDQ graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from _host_cpu import needs_cpu
from _int8_checks import assert_within_one_lsb_of_onnxruntime, kernel_calls, quantized, run_built
from onnx import TensorProto, helper, numpy_helper

import edgekit.compiler.backends.llvm.concat_layout as concat_layout
import edgekit.compiler.backends.llvm.pad as cpu_pad
import edgekit.compiler.backends.llvm.upsample as upsample

ZNVER4 = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})


def _fp32_model(resize: dict[str, str] | None = None) -> onnx.ModelProto:
    """Three convs (24, 24, 20 channels; the first at half resolution, upsampled) -> concat -> 3x3 conv
    -> hard-swish (a table lookup) -> 1x1 conv.

    ``resize``: the upsampling's attributes (default: PP-OCR det's, asymmetric and floor).
    """
    rng = np.random.default_rng(7)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [
        numpy_helper.from_array(w(24, 8, 3, 3), "wa"),
        numpy_helper.from_array(w(24, 8, 1, 1), "wb"),
        numpy_helper.from_array(w(20, 8, 1, 1), "wc"),
        numpy_helper.from_array(w(16, 68, 3, 3), "wy"),
        numpy_helper.from_array(w(16, 16, 1, 1), "wz"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a0"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["a0"], ["a1"]),
        helper.make_node("Resize", ["a1", "", "scales"], ["a"], mode="nearest",
                         **(resize or {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"})),  # fmt: skip
        helper.make_node("Conv", ["x", "wb"], ["b"]),
        helper.make_node("Conv", ["x", "wc"], ["c0"]),
        helper.make_node("Relu", ["c0"], ["c"]),
        helper.make_node("Concat", ["a", "b", "c"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "wy"], ["y0"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["y0"], ["h"]),
        helper.make_node("Conv", ["h", "wz"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "concat_pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> str:
    cal = {"x": np.random.default_rng(1).standard_normal((16, 8, 12, 12)).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("pad_fold"), _fp32_model(), cal)


def _unfolded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline as before the fold: float upsampling, NCHW concats, pads and lookups writing int8."""
    monkeypatch.setattr(cpu_pad, "_u8_lookup", lambda m, call: None)
    monkeypatch.setattr(upsample, "_upsample", lambda m, call: None)
    monkeypatch.setattr(concat_layout, "_concat_to_nhwc", lambda m, call: None)
    monkeypatch.setattr(cpu_pad, "_u8_of_pad", lambda *args: None)


def test_concat_pad_and_u8_conversion_are_one_kernel(int8_model, monkeypatch):
    calls = kernel_calls(int8_model, ZNVER4)
    names = [name for name, _, _ in calls]
    # The padded conv input: the three requantized inputs, written as u8, in one kernel.
    assert ("pad_rows", [(1, 12, 12, 24, "int8"), (1, 12, 12, 24, "int8"), (1, 12, 12, 20, "int8")],
            (1, 14, 14, 68, "uint8")) in calls, calls  # fmt: skip
    assert [n for n, _, out in calls if out[:4] == (1, 14, 14, 68)] == ["pad_rows"], calls  # nothing else writes it
    assert not any("concatenate" in n or "resize" in n for n in names), names
    assert any("repeat" in n for n in names), names  # the upsampling, on the int8 tensor

    _unfolded(monkeypatch)
    before = [name for name, _, _ in kernel_calls(int8_model, ZNVER4)]
    # What the fold replaces: a fused kernel of transposes, a per-byte concat and the pad; a float resize.
    assert any("concatenate" in n and "pad" in n for n in before), before
    assert any("resize2d" in n for n in before), before


def test_vbmi_lookup_writes_the_conv_operand(int8_model, monkeypatch):
    # The hard-swish table feeds a 1x1 vpdpbusd conv only: the lookup writes its u8 operand.
    def u8_lookups() -> list[str]:
        return [n for n, _, out in kernel_calls(int8_model, ZNVER4) if n.startswith("lookup_vbmi") and out[-1] == "uint8"]

    assert len(u8_lookups()) == 1
    _unfolded(monkeypatch)
    assert u8_lookups() == []


@needs_cpu("icelake-server")
def test_folded_pad_is_bit_identical_and_within_one_lsb_of_onnxruntime(int8_model, monkeypatch):
    target = tvm.target.Target({"kind": "llvm", "mcpu": "icelake-server"})
    x = np.random.default_rng(5).standard_normal((1, 8, 12, 12)).astype(np.float32)
    got = run_built(int8_model, target, x)
    assert_within_one_lsb_of_onnxruntime(int8_model, {"x": x}, got)

    _unfolded(monkeypatch)
    np.testing.assert_array_equal(got, run_built(int8_model, target, x))


def test_only_upsampling_proven_exact_is_a_repeat(tmp_path):
    # half_pixel coordinates (ONNX's default): not proven here, left to the float resize.
    cal = {"x": np.random.default_rng(1).standard_normal((4, 8, 12, 12)).astype(np.float32)}
    path = quantized(tmp_path, _fp32_model({"coordinate_transformation_mode": "half_pixel"}), cal)
    names = [name for name, _, _ in kernel_calls(path, ZNVER4)]
    assert any("resize2d" in n for n in names) and not any("repeat" in n for n in names), names

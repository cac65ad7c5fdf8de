"""AVX2 int8 kernels that merge passes: a table lookup writing its consumer's padded input, 16-channel
depthwise, int16 operands packed straight from the requantization.

Each fusion is checked three ways: that it happens (kernel names and counts
of ``haswell`` code, whatever CPU runs the test), that its code is what it
claims (assembly), and, where this CPU runs AVX2 code, that the model's
int8 output is bit-identical with the unfused kernels.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from _host_cpu import needs_cpu
from _int8_checks import quantized, run_built
from onnx import TensorProto, helper, numpy_helper

import edgekit.compiler.backends.llvm.depthwise_avx2 as depthwise_avx2
import edgekit.compiler.backends.llvm.int8 as cpu_int8
import edgekit.compiler.backends.llvm.pad as cpu_pad
import edgekit.compiler.backends.llvm.requant as cpu_requant
from edgekit.compiler.backends.llvm.lookup import _avx2_slices, lookup_pad_avx2_func
from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes
from edgekit.compiler.importer import import_onnx
from edgekit.frontend.loader import load_model

HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})


def _fp32_model() -> onnx.ModelProto:
    """conv -> hard-swish -> 5x5 depthwise (40 channels) -> conv -> hard-swish -> 3x3 depthwise (72 channels).

    40 channels: 8 per step, a lookup tail of 8 (40 = 32 + 8); 72: 16 per
    step (padded to 80), the lookup-pad writes 8 channels of fill.
    """
    rng = np.random.default_rng(3)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [
        numpy_helper.from_array(w(40, 8, 3, 3), "w1"),
        numpy_helper.from_array(w(40, 1, 5, 5), "d1"),
        numpy_helper.from_array(w(72, 40, 1, 1), "w2"),
        numpy_helper.from_array(w(72, 1, 3, 3), "d2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "d1"], ["e1"], group=40, pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["e1", "w2"], ["c2"]),
        helper.make_node("HardSwish", ["c2"], ["h2"]),
        helper.make_node("Conv", ["h2", "d2"], ["y"], group=72, pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "fusion",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 9, 14])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 72, 9, 14])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> str:
    cal = {"x": np.random.default_rng(1).standard_normal((16, 8, 9, 14)).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("fusion"), _fp32_model(), cal)


def _prepared(model_path: str) -> tvm.IRModule:
    mod, weights = import_onnx(load_model(model_path))[:2]
    num_input = int(mod["main"].attrs["num_input"])
    params = mod["main"].params[num_input:]
    by_name = {p.name: (w.numpy() if hasattr(w, "numpy") else np.asarray(w)) for p, w in zip(params, weights)}
    return prepare_cpu_module(mod, HASWELL, weights=by_name)[0]


def _names(mod: tvm.IRModule) -> list[str]:
    return [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


def test_lookups_write_the_padded_depthwise_input(int8_model, monkeypatch):
    names = _names(_prepared(int8_model))
    # Both hard-swish tables feed a depthwise conv's pad only: one kernel each, no pad kernel left.
    assert sum(n.startswith("lookup_pad_avx2") for n in names) == 2, names
    assert not any(n.startswith(("lookup_avx2", "pad_rows")) for n in names), names
    monkeypatch.setattr(cpu_pad, "_lookup_pad", lambda *args: None)
    unfused = _names(_prepared(int8_model))
    assert sum(n.startswith("lookup_avx2") for n in unfused) == 2 and sum(n.startswith("pad_rows") for n in unfused) == 2


def _scheduled(model_path: str) -> tvm.IRModule:
    with HASWELL, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(schedule_passes(HASWELL))(_prepared(model_path))


def test_wide_depthwise_takes_16_int16_lanes(int8_model, monkeypatch):
    # The int16 tap pairs, which AVX2 targets keep for dilated kernels (others: test_depthwise_avx2).
    monkeypatch.setattr(cpu_int8._Rewriter, "dw_pairs_avx2", False)
    scheduled = _scheduled(int8_model)
    asm = {}
    for gv, f in scheduled.functions_items():
        if isinstance(f, tvm.tirx.PrimFunc) and "depthwise_conv2d_i16p" in gv.name_hint:
            lib = tvm.tirx.build(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), HASWELL)
            asm[gv.name_hint] = lib.inspect_source("asm")
    assert len(asm) == 2, sorted(asm)
    ymm = [name for name, text in asm.items() if "vpmullw\t%ymm" in text]
    xmm = [name for name, text in asm.items() if "vpmullw\t%xmm" in text]
    # 72 channels: 16 per step (ymm); 40: 8 per step (16 would pad 8 of 48).
    assert len(ymm) == 1 and len(xmm) == 1, (ymm, xmm)


def _int8_then_int16(mod: tvm.IRModule) -> int:
    """Kernels that narrow a value to int8 and widen it to int16 again."""
    texts = [f.script() for _gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    return sum('T.Cast("int16", T.Cast("int8"' in t for t in texts)


def test_int16_operands_come_straight_from_the_requantization(int8_model, monkeypatch):
    # The 1x1 conv reads the 5x5 depthwise conv's output as int16 (vpmaddwd operands).
    assert _int8_then_int16(_scheduled(int8_model)) == 0
    monkeypatch.setattr(cpu_requant, "_widened_once", lambda m, call: None)
    assert _int8_then_int16(_scheduled(int8_model)) == 1


@needs_cpu(HASWELL)
def test_fused_kernels_are_bit_identical_with_unfused_ones(int8_model, monkeypatch):
    x = np.random.default_rng(5).standard_normal((1, 8, 9, 14)).astype(np.float32)
    got = run_built(int8_model, HASWELL, x)
    monkeypatch.setattr(cpu_pad, "_lookup_pad", lambda *args: None)
    monkeypatch.setattr(depthwise_avx2, "_lanes", lambda channels: 8)
    monkeypatch.setattr(cpu_requant, "_widened_once", lambda m, call: None)
    want = run_built(int8_model, HASWELL, x)
    # The output is the last depthwise conv's int8 tensor, dequantized: every element compared.
    assert got.shape == (1, 72, 9, 14)
    np.testing.assert_array_equal(got, want)


@needs_cpu(HASWELL)
@pytest.mark.parametrize("channels", [32, 40, 72])
def test_lookup_pad_kernel_maps_every_value_and_pads(channels):
    rng = np.random.default_rng(channels)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    shape = (1, 3, 4, channels)
    x = np.resize(np.arange(-128, 128, dtype=np.int8), int(np.prod(shape))).reshape(shape)
    rng.shuffle(x.reshape(-1))
    cp = -(-channels // 16) * 16 + (8 if channels % 16 == 0 else 0)
    out_shape = (1, 3 + 2, 4 + 3, cp)  # top 1, bottom 1, left 2, right 1
    func = lookup_pad_avx2_func(shape, 1, 2, out_shape, border=-7, fill=5)
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), HASWELL)
    out = tvm.runtime.tensor(np.zeros(out_shape, dtype=np.int8))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(_avx2_slices(table)), out)
    want = np.full(out_shape, -7, dtype=np.int8)
    want[..., channels:] = 5
    want[:, 1:4, 2:6, :channels] = table[x.astype(np.int64) + 128]
    np.testing.assert_array_equal(out.numpy(), want)

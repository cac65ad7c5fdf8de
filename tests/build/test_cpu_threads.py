"""Small kernels lose their parallel loops (edgekit.compiler.backends.llvm.threads)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

tvm = pytest.importorskip("tvm")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tvm import te  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes  # noqa: E402
from edgekit.compiler.backends.llvm.threads import (  # noqa: E402
    PARALLEL_MIN_WORK,
    kernel_work,
    serial_small_kernels_pass,
    vector_bits,
)
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402

HASWELL = {"kind": "llvm", "mcpu": "haswell"}


def _scheduled(rows: int, transposed: bool = False) -> tvm.IRModule:
    """``y = x + 1`` (or ``y = x.T + 1``) over ``rows x 64`` floats, scheduled by the default CPU rules (outer loop parallel)."""
    x = te.placeholder((64, rows) if transposed else (rows, 64), "float32", name="x")
    y = te.compute((rows, 64), lambda i, j: (x[j, i] if transposed else x[i, j]) + 1.0, name="y")
    func = te.create_prim_func([x, y]).with_attr("global_symbol", "add_one")
    target = tvm.target.Target(HASWELL)
    passes = [p for p in schedule_passes(target) if p.info.name != "EdgekitSerialSmallKernels"]
    with target:
        return tvm.transform.Sequential(passes)(tvm.IRModule({"add_one": func}))


def _kinds(mod: tvm.IRModule) -> str:
    return mod["add_one"].script()


def test_vector_width_is_the_targets():
    assert vector_bits(tvm.target.Target(HASWELL)) == 256
    assert vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})) == 512
    a72 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}
    assert vector_bits(tvm.target.Target(a72)) == 128


def test_kernel_work_counts_vector_operations_and_bytes():
    func = _scheduled(16)["add_one"]
    # 16 rows of 64 floats in 8-lane vectors: a load, an add and a store per
    # vector, plus the 2 x 4 KiB the kernel reads and writes.
    nbytes = 2 * 16 * 64 * 4
    assert kernel_work(func, 256) == 16 * 8 * 3 + nbytes
    assert kernel_work(func, 128) == 16 * 8 * 3 * 2 + nbytes  # two 128-bit operations per vector


def test_a_gather_counts_one_load_per_lane():
    contiguous = kernel_work(_scheduled(16)["add_one"], 256)
    gathered = kernel_work(_scheduled(16, transposed=True)["add_one"], 256)
    # the load becomes 8 scalar loads per vector: 16 * 8 * (8 + 2) operations
    assert gathered == contiguous + 16 * 8 * 7


def test_small_kernel_becomes_serial_and_large_one_stays_parallel():
    small, large = _scheduled(16), _scheduled(PARALLEL_MIN_WORK // (3 * 8 + 2 * 64 * 4) + 1)
    assert kernel_work(large["add_one"], 256) >= PARALLEL_MIN_WORK
    assert "T.parallel" in _kinds(small) and "T.parallel" in _kinds(large)
    haswell = tvm.target.Target(HASWELL)
    assert "T.parallel" not in _kinds(serial_small_kernels_pass(haswell)(small))
    assert "T.parallel" in _kinds(serial_small_kernels_pass(haswell)(large))


def test_serial_kernel_computes_the_same():
    mod = serial_small_kernels_pass(tvm.target.Target(HASWELL))(_scheduled(16))
    lib = tvm.compile(mod, tvm.target.Target(HASWELL))
    x = np.arange(16 * 64, dtype=np.float32).reshape(16, 64)
    y = tvm.runtime.tensor(np.zeros_like(x))
    lib["add_one"](tvm.runtime.tensor(x), y)
    np.testing.assert_array_equal(y.numpy(), x + 1)


def _two_convs() -> onnx.ModelProto:
    """A 3x3 conv of 16 -> 32 channels on 64 x 64 pixels (19 M MACs) and a 1x1 conv of 8 channels on 2 x 2."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((32, 16, 3, 3)) / 12).astype(np.float32), "wa"),
        numpy_helper.from_array((rng.standard_normal((8, 8, 1, 1)) / 3).astype(np.float32), "wb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["large"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["z", "wb"], ["tiny"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 64, 64]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 2, 2])],
        [helper.make_tensor_value_info("large", TensorProto.FLOAT, [1, 32, 64, 64]),
         helper.make_tensor_value_info("tiny", TensorProto.FLOAT, [1, 8, 2, 2])],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_large_int8_conv_keeps_its_parallel_loop_and_a_tiny_one_is_serial(tmp_path):
    src = tmp_path / "fp32.onnx"
    onnx.save(_two_convs(), str(src))
    rng = np.random.default_rng(1)
    cal = {"x": rng.standard_normal((2, 16, 64, 64)).astype(np.float32),
           "z": rng.standard_normal((2, 8, 2, 2)).astype(np.float32)}  # fmt: skip
    int8 = quantize(str(src), QuantConfig(), calibration=cal).save(tmp_path / "int8.onnx")
    mod = import_onnx(load_model(str(int8)))[0]
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})  # AVX512-VNNI kernels, whatever runs the test
    prepared, _ = prepare_cpu_module(mod, target)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(target))(prepared)
    convs = {gv.name_hint: f for gv, f in scheduled.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and "vpdpbusd" in f.script()}  # fmt: skip
    large = [f for f in convs.values() if "64), T.int64(64)" in f.script()]
    tiny = [f for f in convs.values() if "64), T.int64(64)" not in f.script()]
    assert len(large) == 1 and len(tiny) == 1, list(convs)
    # The large conv is 295,000 tensorized vpdpbusd steps of 64 MACs each.
    assert kernel_work(large[0], 512) > 2 * PARALLEL_MIN_WORK
    assert "T.parallel" in large[0].script()
    assert kernel_work(tiny[0], 512) < PARALLEL_MIN_WORK / 100
    assert "T.parallel" not in tiny[0].script()

"""Small kernels lose their parallel loops (edgekit.compiler.backends.llvm.threads)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import te  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import schedule_passes  # noqa: E402
from edgekit.compiler.backends.llvm.threads import PARALLEL_MIN_WORK, kernel_work, serial_small_kernels_pass  # noqa: E402


def _scheduled(rows: int) -> tvm.IRModule:
    """``y = x + 1`` over ``rows x 64`` floats, scheduled by the default CPU rules (outer loop parallel)."""
    x = te.placeholder((rows, 64), "float32", name="x")
    y = te.compute((rows, 64), lambda i, j: x[i, j] + 1.0, name="y")
    func = te.create_prim_func([x, y]).with_attr("global_symbol", "add_one")
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    passes = [p for p in schedule_passes(target) if p.info.name != "EdgekitSerialSmallKernels"]
    with target:
        return tvm.transform.Sequential(passes)(tvm.IRModule({"add_one": func}))


def _kinds(mod: tvm.IRModule) -> str:
    return mod["add_one"].script()


def test_kernel_work_counts_vector_statements_once():
    mod = _scheduled(16)
    # 16 rows of 64 floats, 8-lane vectors: 16 * 8 vector stores.
    assert kernel_work(mod["add_one"].body) == 16 * 8


def test_small_kernel_becomes_serial_and_large_one_stays_parallel():
    small, large = _scheduled(16), _scheduled(PARALLEL_MIN_WORK // 8 + 1)
    assert "T.parallel" in _kinds(small) and "T.parallel" in _kinds(large)
    assert "T.parallel" not in _kinds(serial_small_kernels_pass()(small))
    assert "T.parallel" in _kinds(serial_small_kernels_pass()(large))


def test_serial_kernel_computes_the_same():
    mod = serial_small_kernels_pass()(_scheduled(16))
    lib = tvm.compile(mod, tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))
    x = np.arange(16 * 64, dtype=np.float32).reshape(16, 64)
    y = tvm.runtime.tensor(np.zeros_like(x))
    lib["add_one"](tvm.runtime.tensor(x), y)
    np.testing.assert_array_equal(y.numpy(), x + 1)

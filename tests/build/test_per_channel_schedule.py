"""Elementwise kernels with a per-channel operand keep the channel blocks out of the fused pixel loop
(backends/llvm/schedule.schedule_rest), and a ragged channel tail of a power of two runs as one narrower vector.

The shape of PP-OCR cls's int8 squeeze-excite multiply: ``x[1, h, w, c] * g[1, 1, 1, c]``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te, tirx

from edgekit.compiler.backends.llvm.schedule import schedule_rest


def _scheduled(c: int, lanes: int) -> tvm.s_tir.Schedule:
    x = te.placeholder((1, 4, 6, c), "int32", name="x")
    g = te.placeholder((1, 1, 1, c), "int32", name="g")
    y = te.compute(x.shape, lambda n, h, w, k: x[n, h, w, k] * g[n, 0, 0, k], name="y")
    sch = tvm.s_tir.Schedule(te.create_prim_func([x, g, y]))
    schedule_rest(sch, lanes, None)
    return sch


def _loops(sch: tvm.s_tir.Schedule) -> set[tuple[int, tirx.ForKind]]:
    """(extent, kind) of every loop around the kernel's blocks."""
    out = set()
    for name in ("y", "y_k0", "y_k1"):
        try:
            loops = sch.get_loops(sch.get_sblock(name))
        except Exception:  # a partition not made
            continue
        out |= {(int(sch.get(lp).extent), sch.get(lp).kind) for lp in loops}
    return out


def _channel_index(sch: tvm.s_tir.Schedule) -> list[str]:
    """The expressions the kernel computes its channel index from (TVMScript lines binding ``v_k``)."""
    return [line.strip() for line in sch.mod.script().splitlines() if line.strip().startswith("v_k = T.axis")]


def test_channel_blocks_stay_out_of_the_parallel_pixel_loop():
    sch = _scheduled(200, 8)
    kinds = _loops(sch)
    assert (24, tirx.ForKind.PARALLEL) in kinds, kinds  # the 4 x 6 pixels
    assert (25, tirx.ForKind.SERIAL) in kinds, kinds  # 25 channel blocks inside
    assert (8, tirx.ForKind.VECTORIZED) in kinds, kinds
    index = _channel_index(sch)
    assert index and not any("%" in e for e in index), index  # no modulo of a fused index for the gate's address


def test_ragged_tail_of_a_power_of_two_is_one_vector():
    vectors = sorted(ext for ext, kind in _loops(_scheduled(200, 16)) if kind == tirx.ForKind.VECTORIZED)  # 12 x 16 + 8
    assert vectors == [8, 16], vectors


@pytest.mark.parametrize("lanes", [8, 16])
def test_results_unchanged(lanes):
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 4, 6, 200)).astype("int32")
    g = rng.integers(-128, 128, (1, 1, 1, 200)).astype("int32")
    f = tvm.tirx.build(_scheduled(200, lanes).mod, target="llvm")
    out = tvm.runtime.tensor(np.zeros_like(x))
    f(tvm.runtime.tensor(x), tvm.runtime.tensor(g), out)
    np.testing.assert_array_equal(out.numpy(), x * g)

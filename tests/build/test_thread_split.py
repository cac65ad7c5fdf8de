"""Two threads never split one pixel's channels (backends/llvm/schedule._weights_dominate).

A reduction kernel's fused parallel loop is cut into one contiguous range per
thread. With the channel blocks outermost, the first thread takes the first
channel block of every pixel and the second the next one: for PP-OCR det
int8's 2 x 2 max pool (24 int8 channels, blocks of 12 bytes) both threads
wrote every cache line of the output, and the kernel took 458 us on two Zen 5
cores against 43 us on one. A pool's input is indexed by the output channel
like a weight, but also by the pixel: it is an activation, and the pixels stay
outermost. A layer whose weights really outweigh its input keeps its channel
blocks outermost (each thread keeps one weight slice in cache).
"""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, te, tirx
from tvm.sym import Analyzer

from edgekit.compiler.backends.llvm.schedule import schedule_tiled_reduction


def _scheduled(out: te.Tensor, *inputs: te.Tensor) -> s_tir.Schedule:
    sch = s_tir.Schedule(te.create_prim_func([*inputs, out]))
    assert schedule_tiled_reduction(sch, 16)
    return sch


def _pool() -> s_tir.Schedule:
    x = te.placeholder((1, 17, 17, 24), "int8", name="x")
    rh, rw = te.reduce_axis((0, 2), "rh"), te.reduce_axis((0, 2), "rw")
    y = te.compute((1, 16, 16, 24), lambda n, h, w, c: te.max(x[n, h + rh, w + rw, c], axis=[rh, rw]), name="y")
    return _scheduled(y, x)


def _wide_conv() -> s_tir.Schedule:
    """A 1 x 1 conv on 2 x 2 pixels with 256 -> 256 channels: 256 KiB of weights, 4 KiB of input."""
    x = te.placeholder((1, 2, 2, 256), "float32", name="x")
    w = te.placeholder((256, 256), "float32", name="w")
    k = te.reduce_axis((0, 256), "k")
    y = te.compute((1, 2, 2, 256), lambda n, h, ww, c: te.sum(x[n, h, ww, k] * w[k, c], axis=k), name="y")
    return _scheduled(y, x, w)


def _halves(sch: s_tir.Schedule) -> list[tuple[int, ...]]:
    """The output index (n, h, w, c) the reduction block starts at in each thread's half of the parallel loop."""
    loops: list = []
    tvm_ffi.structural_walk(sch.mod["main"].body, [(tirx.For, lambda f: loops.append(f))])
    par = next(f for f in loops if f.kind == tirx.ForKind.PARALLEL)
    inner = [f.loop_var for f in loops if f.kind != tirx.ForKind.PARALLEL]
    realize = []
    tvm_ffi.structural_walk(sch.mod["main"].body, [(s_tir.SBlockRealize, lambda r: realize.append(r))])
    update = next(r for r in realize if r.block.name_hint == "y_update")
    starts = []
    for fused in (0, int(par.extent) // 2):
        ana = Analyzer()
        ana.bind(par.loop_var, tirx.IntImm(par.loop_var.ty.dtype, fused))
        for v in inner:
            ana.bind(v, tirx.IntImm(v.ty.dtype, 0))
        spatial = [e for e, iv in zip(update.iter_values, update.block.iter_vars) if iv.iter_type == 0]
        starts.append(tuple(int(ana.simplify(e)) for e in spatial))
    return starts


def test_a_pool_splits_pixels_between_threads():
    first, second = _halves(_pool())
    assert first[3] == second[3] == 0, (first, second)  # both halves start at channel 0 ...
    assert first[1:3] != second[1:3], (first, second)  # ... of different pixels


def test_a_layer_whose_weights_dominate_splits_channels():
    first, second = _halves(_wide_conv())
    assert first[3] != second[3], (first, second)


def test_pool_results_unchanged():
    x = np.random.default_rng(0).integers(-128, 128, (1, 17, 17, 24)).astype("int8")
    f = tvm.tirx.build(_pool().mod, target="llvm")
    out = tvm.runtime.tensor(np.zeros((1, 16, 16, 24), "int8"))
    f(tvm.runtime.tensor(x), out)
    want = np.max([x[:, i : i + 16, j : j + 16] for i in (0, 1) for j in (0, 1)], axis=0)
    np.testing.assert_array_equal(out.numpy(), want)

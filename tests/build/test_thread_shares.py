"""Small kernels next to parallel ones run on the threads that wrote their data (backends/llvm/thread_shares.py).

A chain ``scale -> flip -> scale`` over a 256 KiB int8 tensor, with a
``channel_max`` reading the same tensor: ``scale`` has a parallel loop over
rows and enough work to keep it; ``flip`` is written with no parallel loop
(like the int8 table lookups); ``channel_max`` splits its parallel loop by
channel, so each of its threads would read every row. For a board of two
cores ``flip`` gets its row loop parallel, with the split of ``scale`` on both
sides (each thread touches only the cache lines its thread of the neighbour
touched), and ``channel_max`` stays on the calling thread; for one core
nothing changes. The parallel build gives the same outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from edgekit.compiler.backends.llvm.relax_build import _lowering_passes
from edgekit.compiler.backends.llvm.thread_shares import (
    has_parallel,
    local_fraction,
    parallel_outer,
    thread_lines,
    written_elements_disjoint,
)
from edgekit.compiler.backends.llvm.threads import kernel_work, serial_small_kernels_pass

# fmt: off
@I.ir_module
class Chain:
    @T.prim_func(private=True, s_tir=True)
    def scale(X: T.Buffer((1, 64, 64, 64), "int8"), Y: T.Buffer((1, 64, 64, 64), "int8")):
        T.func_attr({"op_pattern": 8, "tirx.noalias": True})
        with T.sblock("root"):
            for h in T.parallel(64):
                for w, c in T.grid(64, 64):
                    Y[0, h, w, c] = X[0, h, w, c] * T.int8(3) + X[0, h, w, c] * T.int8(5) - T.int8(7)

    @T.prim_func(private=True, s_tir=True)
    def flip(Xs: T.Buffer((1, 64, 64, 64), "int8"), Ys: T.Buffer((1, 64, 64, 64), "int8")):
        T.func_attr({"op_pattern": 8, "tirx.noalias": True})
        with T.sblock("root"):
            X = Xs.view(262144)
            Y = Ys.view(262144)
            for i in range(4096):
                Y[i * 64:i * 64 + 64] = X[T.Ramp(i * 64, 1, 64)] ^ T.Broadcast(T.int8(85), 64)

    @T.prim_func(private=True, s_tir=True)
    def channel_max(X: T.Buffer((1, 64, 64, 64), "int8"), Y: T.Buffer((64,), "int8")):
        T.func_attr({"op_pattern": 8, "tirx.noalias": True})
        with T.sblock("root"):
            for c in T.parallel(64):
                Y[c] = T.int8(-128)
                for h, w in T.grid(64, 64):
                    Y[c] = T.max(Y[c], X[0, h, w, c])

    @R.function
    def main(x: R.Tensor((1, 64, 64, 64), "int8")):
        cls = Chain
        with R.dataflow():
            a = R.call_tir(cls.scale, (x,), out_ty=R.Tensor((1, 64, 64, 64), "int8"))
            b = R.call_tir(cls.flip, (a,), out_ty=R.Tensor((1, 64, 64, 64), "int8"))
            m = R.call_tir(cls.channel_max, (b,), out_ty=R.Tensor((64,), "int8"))
            c = R.call_tir(cls.scale, (b,), out_ty=R.Tensor((1, 64, 64, 64), "int8"))
            R.output(c, m)
        return (c, m)
# fmt: on

TARGET = tvm.target.Target({"kind": "llvm"})


def _split(threads: int) -> tvm.IRModule:
    """Chain after the pass for a board of ``threads`` cores; ``scale`` alone has enough work to stay parallel."""
    min_work = (kernel_work(Chain["scale"]) + kernel_work(Chain["channel_max"])) / 2
    assert kernel_work(Chain["channel_max"]) < min_work < kernel_work(Chain["scale"])
    with TARGET:
        return serial_small_kernels_pass(TARGET, min_work=min_work, threads=threads)(Chain)


def _parallel(mod: tvm.IRModule) -> set[str]:
    return {gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and has_parallel(f.body)}


def test_two_cores_put_the_serial_neighbour_on_the_producers_split() -> None:
    assert _parallel(_split(2)) == {"scale", "flip"}
    mod = _split(2)
    scale, flip = thread_lines(mod["scale"], 2), thread_lines(mod["flip"], 2)
    # scale's output (parameter 1) -> flip's input (0), flip's output (1) -> scale's input (0):
    # each of flip's threads touches only the lines the same thread of scale touched.
    assert local_fraction(scale[1], flip[0]) == 1.0
    assert local_fraction(flip[1], scale[0]) == 1.0
    assert all(len(x) == 4096 // 2 for x in flip[0] + flip[1])  # 256 KiB: 2048 lines per thread
    # channel_max's split by channel would read every row on both threads: it stays serial.
    cm = thread_lines(Chain["channel_max"], 2)
    assert local_fraction(flip[1], cm[0]) < 0.6


def test_one_core_changes_nothing() -> None:
    assert _parallel(_split(1)) == {"scale"}


def test_parallel_outer_refuses_iterations_that_share_elements() -> None:
    # channel_max with its loop serial: every iteration reads and writes Y -> not split.
    serial_max = Chain["channel_max"].with_body(_split(1)["channel_max"].body)
    assert not has_parallel(serial_max.body)
    assert parallel_outer(serial_max, 2) is None
    assert parallel_outer(Chain["flip"], 2) is not None


# fmt: off
@T.prim_func(private=True, s_tir=True)
def pairs(X: T.Buffer((120,), "int8"), Y: T.Buffer((60,), "int8")):
    with T.sblock("root"):
        for i in range(120):
            Y[i // 2] = X[i]


def rows(width: int) -> tvm.tirx.PrimFunc:
    """64 rows of 16 bytes stored ``width`` bytes apart: they overlap by one byte for ``width`` 15."""
    @T.prim_func(private=True, s_tir=True)
    def func(X: T.Buffer((1024,), "int8"), Y: T.Buffer((64 * width + 16,), "int8")):
        with T.sblock("root"):
            for i in range(64):
                Y[T.Ramp(i * width, 1, 16)] = X[T.Ramp(i * 16, 1, 16)]
    return func
# fmt: on


def _with_parallel_outer_loop(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    src = str(func.script()).replace("for i in range(", "for i in T.parallel(", 1)
    return tvm.script.from_source(src)


def test_parallel_outer_checks_every_thread_count_from_2_to_8() -> None:
    # Two iterations store to one element of Y: TVM's split of 120 iterations puts a chunk boundary
    # between them only on 8 threads (chunks of 15); on 2..7 threads the chunks are even (60 ... 18).
    par = _with_parallel_outer_loop(pairs)
    assert has_parallel(par.body)
    assert [written_elements_disjoint(par, t) for t in range(2, 9)] == [True] * 6 + [False]
    assert parallel_outer(pairs, 2) is None


@pytest.mark.parametrize(("width", "split"), [(16, True), (17, True), (15, False)])
def test_parallel_outer_compares_stores_byte_by_byte(width: int, split: bool) -> None:
    # Rows 16 or 17 bytes apart share cache lines between threads but no byte: split.
    # Rows 15 bytes apart: each thread's last row writes the first byte of the next thread's first row.
    func = rows(width)
    par = _with_parallel_outer_loop(func)
    assert [written_elements_disjoint(par, t) for t in range(2, 9)] == [split] * 7
    assert (parallel_outer(func, 2) is not None) == split
    if split:
        tvm.ir.assert_structural_equal(parallel_outer(func, 2), par)


@pytest.mark.parametrize("threads", [1, 2])
def test_outputs_do_not_change(threads: int) -> None:
    from edgekit.core.threads import configure_tvm_threads

    configure_tvm_threads(2)
    x = np.random.default_rng(0).integers(-128, 128, (1, 64, 64, 64), dtype=np.int8)
    outs = []
    for mod in (Chain, _split(threads)):
        with TARGET:
            lowered = tvm.transform.Sequential(_lowering_passes(TARGET))(mod)
        vm = tvm.relax.VirtualMachine(tvm.compile(lowered, TARGET, relax_pipeline=None), tvm.cpu())
        c, m = vm["main"](tvm.runtime.tensor(x))
        outs.append((c.numpy(), m.numpy()))
    a = x * np.int8(3) + x * np.int8(5) - np.int8(7)
    b = a ^ np.int8(85)
    assert np.array_equal(outs[1][0], b * np.int8(3) + b * np.int8(5) - np.int8(7))
    assert np.array_equal(outs[1][1], b.max(axis=(0, 1, 2)))
    assert all(np.array_equal(p, q) for p, q in zip(outs[0], outs[1]))

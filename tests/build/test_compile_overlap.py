"""Compile time without changing what is compiled (relax_build._beside, thread_shares one walk per kernel).

* The weight transforms (``_transform_params``: an LLVM build, an export and a
  run) go on a thread of their own while the model is compiled; the weights
  are the bytes the same call gives on its own, and an error in it still
  fails the build as a ``CompileError``.
* ``thread_lines`` splits one walk of a kernel per thread count
  (``_split_boxes``), as ``written_elements_disjoint`` does; it must give the
  lines a walk per thread count gives, and ``aligned_parallel`` walks each
  kernel once for its parallel and its one-thread lines.
* ``written_elements_disjoint`` evaluates a store once at every iteration and
  splits the rows per thread count (``_store_grids``): the answers of the
  per-count evaluation at 1-8 threads; loops of more iterations than
  ``_POINTS`` are still decided per count.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from _int8_checks import small_cnn  # noqa: E402
from test_thread_shares import Chain, pairs, rows  # noqa: E402
from tvm.script import tirx as T  # noqa: E402

from edgekit.compiler.backends.llvm import relax_build, thread_shares  # noqa: E402
from edgekit.compiler.backends.llvm.relax_build import build_cpu, import_onnx, prepare_cpu_module  # noqa: E402
from edgekit.compiler.backends.llvm.thread_shares import (  # noqa: E402
    _lines,
    _Walker,
    aligned_parallel,
    thread_lines,
    written_elements_disjoint,
)
from edgekit.core.errors import CompileError  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402

TARGET = tvm.target.Target({"kind": "llvm"})


def _small_model():
    return load_model(small_cnn((1, 3, 12, 12), seed=5, mean=0.0, stride_on="depthwise"))


def test_weight_transforms_run_while_the_model_is_compiled(monkeypatch):
    compiling = threading.Event()
    seen: dict[str, object] = {}
    caller = threading.current_thread()
    real_transform, real_build = relax_build._transform_params, tvm.relax.build

    def transform(module, target, params):
        seen["thread"] = threading.current_thread()
        # Run in turn (before the model's relax.build), this waits out its timeout.
        seen["overlapped"] = compiling.wait(timeout=30)
        return real_transform(module, target, params)

    def compile_model(*args, **kwargs):
        if threading.current_thread() is caller:  # the model's build, not the transforms' own
            compiling.set()
        return real_build(*args, **kwargs)

    monkeypatch.setattr(relax_build, "_transform_params", transform)
    monkeypatch.setattr(tvm.relax, "build", compile_model)  # the model's build (and tvm.compile's)
    model = _small_model()
    mod, params = import_onnx(model)
    built = build_cpu(mod, TARGET, params)
    assert seen["thread"] is not threading.current_thread()
    assert seen["overlapped"] is True

    mod, params = import_onnx(model)
    _, module = prepare_cpu_module(mod, TARGET)
    assert module is not None  # LiftTransformParams split weight transforms off
    want = real_transform(module, TARGET, list(params))
    assert [p.numpy().tobytes() for p in built.params] == [p.numpy().tobytes() for p in want]


def test_an_error_in_the_weight_transforms_fails_the_build(monkeypatch):
    def broken(module, target, params):
        raise RuntimeError("transform failed")

    monkeypatch.setattr(relax_build, "_transform_params", broken)
    mod, params = import_onnx(_small_model())
    with pytest.raises(CompileError, match="transform failed"):
        build_cpu(mod, TARGET, params)


# fmt: off
@T.prim_func(private=True, s_tir=True)
def halo(X: T.Buffer((1, 13, 40, 24), "int8"), Y: T.Buffer((1, 11, 38, 24), "int8")):
    # A 3x3 stencil over 11 rows: uneven chunks, each thread reading a row beyond its own.
    with T.sblock("root"):
        for h in T.parallel(11):
            for w, c in T.grid(38, 24):
                Y[0, h, w, c] = T.max(T.max(X[0, h, w, c], X[0, h + 2, w + 2, c]), X[0, h + 1, w + 1, c])


@T.prim_func(private=True, s_tir=True)
def named(X: T.Buffer((1000,), "int8"), Y: T.Buffer((1000,), "int8")):
    # A named scalar inside the parallel loop (an index a later store reads).
    with T.sblock("root"):
        for i in T.parallel(25):
            j: T.int32 = i * 40
            for k in range(40):
                Y[j + k] = X[999 - j - k] + T.int8(1)
# fmt: on


def _with_parallel(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    src = str(func.script()).replace("for i in range(", "for i in T.parallel(", 1)
    return tvm.script.from_source(src)


def _parallel_rows(width: int) -> tvm.tirx.PrimFunc:
    return _with_parallel(rows(width))


@pytest.mark.parametrize("name", ["scale", "flip", "channel_max", "pairs", "rows15", "rows17", "halo", "named"])
def test_thread_lines_from_one_walk_equal_a_walk_per_thread_count(name):
    funcs = {"pairs": pairs, "rows15": _parallel_rows(15), "rows17": _parallel_rows(17), "halo": halo, "named": named}
    func = funcs[name] if name in funcs else Chain[name]
    for threads in range(1, 9):
        walker = _Walker(func, threads)  # the walk of one thread count, each task's range of the loop
        walker.walk(func.body, {}, {}, None)
        want = _lines(walker.boxes, threads)
        got = thread_lines(func, threads)
        assert got.keys() == want.keys()
        for param in want:
            assert len(got[param]) == threads
            assert all(np.array_equal(a, b) for a, b in zip(got[param], want[param])), (param, threads)
    if name in ("halo", "named"):  # the tasks' lines differ, and the walk saw them per thread
        lines = thread_lines(func, 2)
        assert not np.array_equal(lines[0][0], lines[0][1])


def test_aligned_parallel_walks_each_kernel_once(monkeypatch):
    walked: list[str] = []
    real = thread_shares._walk

    def counting(func):
        walked.append(str(func.attrs["global_symbol"]) if func.attrs and "global_symbol" in func.attrs else func.script())
        return real(func)

    monkeypatch.setattr(thread_shares, "_walk", counting)
    small = {"flip": thread_shares.parallel_outer(Chain["flip"], 2), "channel_max": Chain["channel_max"]}
    walked.clear()
    chosen = aligned_parallel(Chain, 2, small, {"scale"})
    assert chosen == {"flip"}  # the decision of test_thread_shares' two-core test
    assert len(walked) == len(set(walked)) == 3  # scale, flip, channel_max: each once for both of its line sets


@pytest.mark.parametrize("name", ["flip", "pairs", "rows15", "rows16", "halo", "named"])
def test_stores_evaluated_once_give_the_answer_of_each_count(name):
    # written_elements_disjoint evaluates each store once at every iteration and splits the rows per
    # thread count (_store_grids); the per-count evaluation (_split_boxes) must agree at 1-8 threads.
    funcs = {"pairs": _with_parallel(pairs), "rows15": _parallel_rows(15), "rows16": _parallel_rows(16),
             "flip": _with_parallel(Chain["flip"]), "halo": halo, "named": named}  # fmt: skip
    boxes = thread_shares._walk(funcs[name])
    grids = thread_shares._store_grids(boxes)
    assert grids is not None  # few enough iterations to evaluate them all
    got = [thread_shares._grid_stores_disjoint(grids, n) for n in range(1, 9)]
    want = [thread_shares._stores_disjoint(thread_shares._split_boxes(boxes, n), n) for n in range(1, 9)]
    assert got == want
    assert got == {"pairs": [True] * 7 + [False], "rows15": [True] + [False] * 7}.get(name, [True] * 8)


def test_stores_of_too_many_iterations_are_decided_per_count():
    # 64 x 64 x 64 iterations (more than _POINTS): a chunk may be enumerated where the whole loop is
    # not, so these are decided per count (on 2 threads a chunk is too large as well: refused).
    for name in ("scale", "channel_max"):
        boxes = thread_shares._walk(Chain[name])
        assert thread_shares._store_grids(boxes) is None
        per_count = [thread_shares._stores_disjoint(thread_shares._split_boxes(boxes, n), n) for n in range(2, 9)]
        assert per_count[0] is False and per_count[-1] is True  # 8 threads: chunks of 8 rows are enumerated
        assert written_elements_disjoint(Chain[name], range(2, 9)) is False
        assert written_elements_disjoint(Chain[name], 8) is True

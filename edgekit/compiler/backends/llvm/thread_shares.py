"""Which cache lines of each tensor every thread touches, and small kernels kept on the threads that wrote their data.

TVM runs a ``parallel`` loop of extent ``E`` on ``T`` threads in contiguous
chunks: task ``t`` takes iterations ``[t * ceil(E / T), (t + 1) * ceil(E / T))``
(``CodeGenCPU::VisitStmt_(ForNode)``), task 0 on the calling thread and task
``t`` always on worker ``t`` (``ThreadPool::Launch`` pushes it to queue ``t``).
So the same kernel with the same extent always hands thread ``t`` the same
part of its tensors, and two kernels whose outer loops walk a tensor in the
same order hand thread ``t`` nearly the same bytes.

A kernel that runs on the calling thread only (too little work to pay for a
fork/join, :mod:`edgekit.compiler.backends.llvm.threads`) reads the half of its
input the other thread just wrote, one cache line at a time from the other
core, and the parallel kernel after it does the same with its output. On the
2-vCPU Zen 5 VM a 600 KB tensor last written by the other vCPU took 15 us to
read against 2.8 us when the same core wrote it, and PP-OCR det int8's serial
kernels that read a parallel kernel's output ran 2.14x slower on two threads
than on one (docs/performance.md, "Threads").

:func:`aligned_parallel` picks, for a board of two or more cores, the small
kernels that share a large tensor with a parallel kernel and, run in parallel
themselves, would touch on each thread the lines that thread's neighbour
touches; :func:`thread_lines` is the analysis behind it (each thread's cache
lines of every parameter, from the loop bounds of the scheduled kernel).
Hand-written kernels with no parallel loop (the int8 table lookups and pads)
can get their outermost loop parallel (:func:`parallel_outer`) where each
thread writes its own elements.

The line count does not predict every call. Measured per call on two
threads (AMD EPYC Zen 4, znver4 code, rule on against off, 2026-12-07,
BENCHMARKS.md, "small kernels made parallel, per call, on a Zen 4"), most calls the rule makes parallel
gain, but some lose: SqueezeNet int8's 55 x 55 channel concat 18 -> 75 us,
PP-OCR cls fp32's ``pad4`` 17 -> 26 us (twice), PP-OCR det int8's
``lookup_vbmi13`` 5.9 -> 11.6 us and ``pad_block15`` 8.6 -> 12.8 us. None of
them has two threads storing to one line. Deciding per call instead of per
kernel (a call kept parallel only where its own count saves 64 KiB) was
tried and not kept: it kept exactly those losing calls parallel and made
paying ones serial (SqueezeNet fp32's concats 96 -> 19 us in parallel, so
two threads 5.03 -> 5.17 ms).

What the line count cannot see is the code of the parallel closure TVM
makes of a loop (2026-12-07, Zen 4, znver4; BENCHMARKS.md, same section).
TVM's concat compiles there to byte copies, 74.6 us on two threads against
14.0 serial for the 55 x 55 concat alone; and a buffer allocated inside a
parallel loop (a scalar a hand-written kernel names, ``first: T.int32 =
...``) is taken from the heap (``TVMBackendAllocWorkspace``) and freed on
every iteration: the first row-copy form of that concat ran 138 us
parallel on one thread against 7.7 serial. The concat now copies rows with
no scalar buffers (:mod:`edgekit.compiler.backends.llvm.concat`): 5.2 us
parallel on two threads. The other kernels were mended the same way
(``pad_block``, the dense int8 convs' operand, the AVX2 lookup pads, the
channel sums and max pools); tests/build/test_kernel_allocations.py keeps
them so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SHARED_MIN_BYTES", "aligned_parallel", "has_parallel", "local_fraction", "parallel_outer", "thread_lines"]

logger = logging.getLogger(__name__)

#: A small kernel runs in parallel only if that leaves at least this many
#: fewer bytes of its tensors to cross between the cores (and tensors
#: smaller than this are not looked at): 64 KiB last written by the other
#: vCPU cost about 1.6 us more to read (15 us per 600 KB, Zen 5 VM), about
#: what a fork/join costs there.
SHARED_MIN_BYTES = 64 * 1024

_LINE = 64


def _chunks(extent: int, threads: int) -> list[tuple[int, int]]:
    """TVM's static split of a parallel loop: one ``[begin, end)`` per task (some may be empty)."""
    step = -(-extent // threads)
    return [(min(t * step, extent), min((t + 1) * step, extent)) for t in range(threads)]


class _Walker:
    """Collects, per parameter and thread, the index boxes a PrimFunc's loads and stores cover."""

    def __init__(self, func: Any, threads: int | None) -> None:
        self.threads = threads  # None: each parallel loop's body walked once for task 0 and once for the others
        self.params = _param_buffers(func)
        self.boxes: dict[tuple[int, Any, bool], list[tuple[Any, list[tuple[int, int]]]]] = {}

    def walk(self, s: Any, dom: dict, binds: dict, task: int | None) -> None:
        from tvm import s_tir, tirx

        if s is None:
            return
        if isinstance(s, tirx.For):
            if s.kind == tirx.ForKind.PARALLEL and task is None and isinstance(s.extent, tirx.IntImm):
                if self.threads is None:
                    # Tasks differ only in the loop's range; task 0 walks first (named scalars not yet stored),
                    # the others all see what the one before stored, the same values (see _split_boxes).
                    extent = int(s.extent.value)
                    for first in (True, False):
                        self.walk(s.body, {**dom, s.loop_var: (0, extent - 1)}, binds, (first, s.loop_var, extent))
                    return
                for t, (lo, hi) in enumerate(_chunks(int(s.extent.value), self.threads)):
                    if hi > lo:
                        self.walk(s.body, {**dom, s.loop_var: (lo, hi - 1)}, binds, t)
                return
            lo, ext = _const(s.min), _const(s.extent)
            if lo is None or ext is None or ext <= 0:
                return
            self.walk(s.body, {**dom, s.loop_var: (lo, lo + ext - 1)}, binds, task)
            return
        if isinstance(s, s_tir.SBlockRealize):
            inner = dict(binds)
            for iv, value in zip(s.block.iter_vars, s.iter_values):
                inner[iv.var] = value
            if not s.block.iter_vars:  # the root block: its regions are not filled in
                self.walk(s.block.body, dom, inner, task)
                return
            # A block's read and write regions cover its body (tensor intrinsics included).
            for regions, store in ((s.block.reads, False), (s.block.writes, True)):
                for r in regions:
                    ends = [tirx.Add(x.min, x.extent - 1) for x in r.region]
                    self.access(r.source, [x.min for x in r.region], dom, inner, task, store, ends)
            return
        if isinstance(s, tirx.SeqStmt):
            for x in s.seq:
                self.walk(x, dom, binds, task)
            return
        if isinstance(s, tirx.IfThenElse):
            self.walk(s.then_case, dom, binds, task)
            self.walk(s.else_case, dom, binds, task)
            return
        if isinstance(s, tirx.LetStmt):  # hand-written kernels name their index arithmetic
            self.loads(s, dom, binds, task)
            self.walk(s.body, dom, {**binds, s.var: s.value}, task)
            return
        if isinstance(s, tirx.BufferStore) and s.buffer not in self.params:
            # A scalar a hand-written kernel names (``y: T.int32 = nh % 81``): later indices read it.
            binds[s.buffer] = s.value
        if isinstance(s, tirx.BufferStore):
            self.access(s.buffer, s.indices, dom, binds, task, True)
        if isinstance(s, (tirx.BufferStore, tirx.Evaluate, tirx.LetStmt, tirx.IfThenElse)):
            self.loads(s, dom, binds, task)
        body = getattr(s, "body", None)
        if body is not None and not isinstance(s, (tirx.BufferStore, tirx.Evaluate)):
            self.walk(body, dom, binds, task)

    def loads(self, s: Any, dom: dict, binds: dict, task: int | None) -> None:
        import tvm_ffi
        from tvm import ir, tirx

        def load(node: Any) -> None:
            self.access(node.source, node.indices, dom, binds, task, False)

        value = s.value if isinstance(s, (tirx.BufferStore, tirx.Evaluate, tirx.LetStmt)) else s.condition
        tvm_ffi.structural_walk(value, [(ir.TensorLoad, load)])

    def access(self, buffer: Any, indices: Any, dom: dict, binds: dict, task: int | None, store: bool,
               ends: Any = None) -> None:  # fmt: skip
        """Records an access: its start (and, for a region, end) index per dimension, in loop variables."""
        from tvm import tirx

        param = self.params.get(buffer)
        if param is None:
            return
        starts, extra = [], []
        for i in indices:
            lanes = 0
            if isinstance(i, tirx.Ramp):
                stride, n = _const(i.stride), _const(i.lanes)
                lanes = stride * (n - 1) if stride is not None and n is not None and stride >= 0 else -1
                i = i.base
            starts.append(_resolve_all(i, binds))
            extra.append(lanes)
        last = [_resolve_all(e, binds) for e in ends] if ends is not None else starts
        where = task if self.threads is None else task or 0
        self.boxes.setdefault((param, where, store), []).append((buffer, starts, last, extra, dict(dom)))


def _resolve_all(e: Any, binds: dict) -> Any:
    """``e`` in loop variables: block iteration variables, let variables and named scalars replaced by their values."""
    import tvm_ffi
    from tvm import ir, tirx

    def var(node: Any, _mutator: Any) -> Any:
        bound = binds.get(node)
        return _resolve_all(bound, binds) if bound is not None else node

    def load(node: Any, mutator: Any) -> Any:
        bound = binds.get(node.source)
        return _resolve_all(bound, binds) if bound is not None else mutator.default_mutate(node)

    return tvm_ffi.structural_mutate(e, [(tirx.Var, var), (ir.TensorLoad, load)])


def _param_buffers(func: Any) -> dict[Any, int]:
    """The parameter index of every buffer of ``func`` that is a parameter or a view of one (``Xs.view(n)``)."""
    import tvm_ffi
    from tvm import ir, tirx

    out = {p: i for i, p in enumerate(func.params)}

    def decl(node: Any) -> None:
        data = node.data
        if isinstance(data, ir.Call) and getattr(data.op, "name", "") == "tirx.buffer_data" and data.args[0] in out:
            out[node.buffer] = out[data.args[0]]

    tvm_ffi.structural_walk(func.body, [(tirx.DeclBuffer, decl)], order="pre")
    return out


def _const(e: Any) -> int | None:
    from tvm import tirx

    return int(e.value) if isinstance(e, tirx.IntImm) else None


#: Loop iterations an access is evaluated at, at most; the loops inside them count by their ends.
_POINTS = 1 << 16


def _evaluate(e: Any, env: dict) -> Any:
    """An integer index expression at numpy arrays of loop values (None for a kind of expression not handled)."""
    kind = type(e).__name__
    if kind == "IntImm":
        return int(e.value)
    if kind == "Var":
        return env.get(e)
    if kind == "Cast":
        return _evaluate(e.value, env)
    ops = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "FloorDiv": np.floor_divide, "Div": np.floor_divide,
           "FloorMod": np.mod, "Mod": np.mod, "Min": np.minimum, "Max": np.maximum}  # fmt: skip
    if kind not in ops:
        return None
    a, b = _evaluate(e.a, env), _evaluate(e.b, env)
    return None if a is None or b is None else ops[kind](a, b)


def _access_mask(buffer: Any, starts: list, ends: list, extra: list, dom: dict, unit: int = _LINE,
                 exact: bool = False) -> np.ndarray:  # fmt: skip
    """Which lines (``unit`` bytes each) of ``buffer`` an access touches over the loop ranges ``dom`` (outermost first).

    The union of the ranges of :func:`_access_ranges`.
    """
    flat_lo, flat_hi, total = _access_ranges(buffer, starts, ends, extra, dom, unit, exact)
    marks = np.zeros(total + 1, np.int64)
    np.add.at(marks, flat_lo, 1)
    np.add.at(marks, flat_hi + 1, -1)
    return np.cumsum(marks)[:total] > 0


def _access_ranges(buffer: Any, starts: list, ends: list, extra: list, dom: dict, unit: int = _LINE,
                   exact: bool = False) -> tuple[np.ndarray, np.ndarray, int]:  # fmt: skip
    """The lines (``unit`` bytes each) of ``buffer`` an access touches: first and last line of each range, lines in all.

    The outer loops of ``dom`` (outermost first) are enumerated (up to
    :data:`_POINTS` iterations), the inner ones taken at both ends; each
    iteration covers the flat range from its lowest to its highest index
    (never empty). An index the evaluator does not handle covers the whole
    buffer, and so does every access with ``exact`` when not all its loops
    could be enumerated (an index need not be monotone in an inner loop:
    ``(k % 4) * 16`` peaks in the middle).
    """
    shape = [int(d) for d in buffer.ty.shape]
    dtype = buffer.ty.dtype.dtype
    nbytes = max(1, (int(dtype.bits) * int(dtype.lanes) + 7) // 8)
    total = -(-math.prod(shape) * nbytes // unit)
    whole = (np.zeros(1, np.int64), np.full(1, total - 1, np.int64), total)
    loops, points, k = list(dom.items()), 1, 0
    while k < len(loops) and points * (loops[k][1][1] - loops[k][1][0] + 1) <= _POINTS:
        points *= loops[k][1][1] - loops[k][1][0] + 1
        k += 1
    if exact and k < len(loops):
        return whole
    grids = np.meshgrid(*[np.arange(lo, hi + 1) for _, (lo, hi) in loops[:k]], indexing="ij")
    env = {v: g.ravel() for (v, _), g in zip(loops[:k], grids)}
    corners = [{**env, **{v: r[0] for v, r in loops[k:]}}, {**env, **{v: r[1] for v, r in loops[k:]}}]
    lo_idx, hi_idx = [], []
    for first, last, lanes, n in zip(starts, ends, extra, shape):
        values = [_evaluate(x, c) for x in (first, last) for c in corners]
        if lanes < 0 or any(v is None for v in values):
            return whole
        values = np.broadcast_arrays(*[np.asarray(v, dtype=np.int64) for v in values])
        lo_idx.append(np.clip(np.minimum.reduce(values), 0, n - 1))
        hi_idx.append(np.clip(np.maximum.reduce(values) + lanes, 0, n - 1))
    strides = np.cumprod([1, *shape[::-1]])[:-1][::-1]
    flat_lo = sum(i * s for i, s in zip(lo_idx, strides)) * nbytes // unit
    flat_hi = (sum(i * s for i, s in zip(hi_idx, strides)) * nbytes + nbytes - 1) // unit
    flat_lo, flat_hi = np.broadcast_arrays(np.atleast_1d(flat_lo), np.atleast_1d(flat_hi))
    return flat_lo.astype(np.int64), flat_hi.astype(np.int64), total


def _merged(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of the inclusive ranges ``[lo[i], hi[i]]`` as disjoint ranges, in order."""
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    begins = np.flatnonzero(np.concatenate(([True], lo[1:] > reach[:-1])))
    return lo[begins], np.maximum.reduceat(hi, begins)


def thread_lines(func: Any, threads: int) -> dict[int, list[np.ndarray]]:
    """The cache lines each of ``threads`` threads touches in every parameter of ``func``.

    Returns ``{parameter index: [lines of task 0, lines of task 1, ...]}``
    (loads and stores together; code outside parallel loops is task 0's).
    The lines come from the loop bounds (bounding boxes of each access over
    the thread's iterations), so a stencil's halo and guarded stores count.
    """
    return _lines(_split_boxes(_walk(func), threads), threads)


def _walk(func: Any) -> dict:
    """``func``'s accesses for every thread count at once (:class:`_Walker` ``(func, None)``; split by :func:`_split_boxes`)."""
    walker = _Walker(func, None)
    walker.walk(func.body, {}, {}, None)
    return walker.boxes


def _lines(boxes: dict, threads: int) -> dict[int, list[np.ndarray]]:
    """:func:`thread_lines` of the accesses ``(param, task, store) -> accesses`` of one thread count."""
    out: dict[int, list[np.ndarray]] = {}
    masks: dict[tuple[int, int], np.ndarray] = {}
    for (param, task, _store), accesses in boxes.items():
        for access in accesses:
            masks[(param, task)] = _union(masks.get((param, task)), _access_mask(*access))
    for (param, task), mask in masks.items():
        out.setdefault(param, [np.zeros(0, np.int64) for _ in range(threads)])[task] = np.flatnonzero(mask)
    return out


def written_elements_disjoint(func: Any, threads: int | range) -> bool:
    """True if no two threads store to the same byte of any parameter (for every thread count of a range).

    The function is walked once for all thread counts (:func:`_split_boxes`),
    the largest count checked first, and each thread's stores are compared
    as ranges of bytes, not masks over the parameter: the same answer as
    walking and masking per count (tests/build/test_thread_shares.py) in a
    third of the time (PP-OCR cls int8's five calls 2.3 -> 0.75 s, Zen 4).
    Each store is evaluated once at every iteration and split per count
    (:func:`_store_grids`) where its loops have at most :data:`_POINTS`
    iterations: the same answers (217 kernels of PP-OCR cls and SqueezeNet,
    counts 1-8; tests/build/test_compile_overlap.py), the five calls 0.66 ->
    0.17 s.
    """
    boxes = _walk(func)
    counts = [threads] if isinstance(threads, int) else sorted(threads, reverse=True)
    grids = _store_grids(boxes)
    if grids is not None:  # every store evaluated once at each iteration, then split per count
        return all(_grid_stores_disjoint(grids, n) for n in counts)
    return all(_stores_disjoint(_split_boxes(boxes, n), n) for n in counts)


def _store_grids(boxes: dict) -> dict[int, list] | None:
    """Per parameter, each store's byte range at every iteration of its loops, or None if one has too many.

    ``{param: [(where, axis, lo, hi), ...]}``: ``lo``/``hi`` shaped as the loop
    ranges of the access (outermost first), ``axis`` the parallel loop's axis
    in them. :func:`_access_ranges` evaluates each iteration on its own where
    it enumerates every loop (``exact``), so a task's ranges are the rows of
    its chunk: the same ranges as the access with its loop narrowed to the
    chunk, evaluated once for all counts instead of once per count. Where
    the loops have more than :data:`_POINTS` iterations a chunk may still be
    enumerated when the whole range is not (None: decided per count).
    """
    out: dict[int, list] = {}
    for (param, where, store), accesses in boxes.items():
        if not store:
            continue
        for buffer, starts, last, extra, dom in accesses:
            sizes = [hi - lo + 1 for lo, hi in dom.values()]
            if math.prod(sizes) > _POINTS:
                return None
            lo, hi, _total = _access_ranges(buffer, starts, last, extra, dom, unit=1, exact=True)
            # One range (an index in no loop variable, or the whole buffer) is every iteration's.
            lo, hi = (np.broadcast_to(x, (math.prod(sizes),)).reshape(sizes) for x in (lo, hi))
            axis = None if where is None else list(dom).index(where[1])
            out.setdefault(param, []).append((where, axis, lo, hi))
    return out


def _grid_stores_disjoint(grids: dict[int, list], threads: int) -> bool:
    """:func:`_stores_disjoint` for ``threads`` from :func:`_store_grids`: the rows of each task's chunk (:func:`_split_boxes`)."""
    for stores in grids.values():
        tasks: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(threads)]
        for where, axis, lo, hi in stores:
            if where is None:  # outside every parallel loop: task 0's
                tasks[0].append((lo.ravel(), hi.ravel()))
                continue
            first, _var, extent = where
            for t, (begin, end) in enumerate(_chunks(extent, threads)):
                if end > begin and (t == 0) == first:
                    rows = slice(begin, end)
                    tasks[t].append((np.moveaxis(lo, axis, 0)[rows].ravel(), np.moveaxis(hi, axis, 0)[rows].ravel()))
        if not _tasks_disjoint(tasks):
            return False
    return True


def _split_boxes(boxes: dict, threads: int) -> dict[tuple[int, int, bool], list]:
    """The accesses :class:`_Walker` ``(func, threads)`` records, from those of ``_Walker(func, None)``.

    Task 0 takes the accesses of the first walk of a parallel loop's body,
    every other task with iterations those of the second, each with the
    loop's range narrowed to the task's chunk (:func:`_chunks`); the order of
    the loop variables in the ranges, and so the masks, are the same.
    """
    out: dict[tuple[int, int, bool], list] = {}
    for (param, where, store), accesses in boxes.items():
        if where is None:  # outside every parallel loop: task 0's
            out.setdefault((param, 0, store), []).extend(accesses)
            continue
        first, var, extent = where
        for t, (lo, hi) in enumerate(_chunks(extent, threads)):
            if hi > lo and (t == 0) == first:
                out.setdefault((param, t, store), []).extend(
                    (buffer, starts, last, extra, {**dom, var: (lo, hi - 1)})
                    for buffer, starts, last, extra, dom in accesses
                )
    return out


def _stores_disjoint(boxes: dict, threads: int) -> bool:
    """True if no two tasks' stores (``(param, task, store) -> accesses``) cover one byte of a parameter."""
    for param in {p for (p, _t, store) in boxes if store}:
        tasks = [[_access_ranges(*access, unit=1, exact=True)[:2] for access in boxes.get((param, t, True), [])]
                 for t in range(threads)]  # fmt: skip
        if not _tasks_disjoint(tasks):
            return False
    return True


def _tasks_disjoint(tasks: list[list[tuple[np.ndarray, np.ndarray]]]) -> bool:
    """True if no two tasks' inclusive ranges (per task, ``(lo, hi)`` arrays) share a byte."""
    los, his = [], []
    for ranges in tasks:
        if ranges:  # one task's ranges may overlap each other: merged first
            lo, hi = _merged(np.concatenate([r[0] for r in ranges]), np.concatenate([r[1] for r in ranges]))
            los.append(lo)
            his.append(hi)
    if len(los) > 1:
        lo, hi = np.concatenate(los), np.concatenate(his)
        order = np.argsort(lo, kind="stable")
        # Each task's ranges are disjoint, so a range starting before the end of an earlier one is another task's.
        if (lo[order][1:] <= np.maximum.accumulate(hi[order])[:-1]).any():
            return False
    return True


def _union(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    """``a | b`` for masks of one parameter seen through views of different sizes."""
    if a is None:
        return b
    if len(a) != len(b):
        n = max(len(a), len(b))
        a, b = np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b)))
    return a | b


def local_fraction(writer: list[np.ndarray], reader: list[np.ndarray]) -> float:
    """Fraction of the lines ``reader``'s threads touch that the same thread of ``writer`` touched."""
    total = sum(len(r) for r in reader)
    if not total:
        return 1.0
    same = sum(len(np.intersect1d(w, r, assume_unique=True)) for w, r in zip(writer, reader))
    return same / total


def parallel_outer(func: Any, threads: int) -> Any | None:
    """``func`` with its outermost loop parallel, or None where that is not safe or not possible.

    For kernels written by hand with no parallel loop (a table lookup, a pad).
    Safe means: the loop is the first one of the function, every store inside
    goes to a parameter, no parameter is both read and written, and the
    threads' stores never meet for any split of the loop from 2 to 8 threads
    (each iteration writes its own elements).
    """
    import tvm_ffi
    from tvm import ir, tirx

    if has_parallel(func.body):
        return None
    loop = _first_loop(func.body)
    if loop is None or loop.kind != tirx.ForKind.SERIAL or _const(loop.min) != 0:
        return None
    extent = _const(loop.extent)
    if extent is None or extent < threads:
        return None
    params = _param_buffers(func)
    stores: set[int] = set()
    loads: set[int] = set()
    scratch: list[Any] = []

    def store(node: Any) -> None:
        stores.add(params.get(node.buffer, -1))

    def load(node: Any) -> None:
        loads.add(params.get(node.source, -1))

    def call(node: Any) -> None:
        if getattr(getattr(node, "op", None), "name", "") not in _PURE_CALLS:
            scratch.append(node)  # may write memory the stores do not show

    tvm_ffi.structural_walk(loop, [(tirx.BufferStore, store), (ir.TensorLoad, load), (ir.Call, call),
                                   (tirx.AllocBuffer, lambda n: scratch.append(n))])  # fmt: skip
    if scratch or not stores or -1 in stores or stores & loads:
        return None  # scratch shared by iterations, or an output read back: iterations may depend on each other
    new = func.with_body(_replace_loop(func.body, loop))
    if not written_elements_disjoint(new, range(2, 9)):
        return None
    return new


#: Calls that compute a value and write no memory: the only ones a loop :func:`parallel_outer` splits may make.
_PURE_CALLS = frozenset({"prim.if_then_else", "tirx.if_then_else", "tirx.buffer_data", "tirx.call_llvm_pure_intrin",
                         "tirx.reinterpret", "tirx.round", "tirx.shift_left", "tirx.shift_right", "tirx.bitwise_and",
                         "tirx.bitwise_or", "tirx.bitwise_xor", "tirx.bitwise_not"})  # fmt: skip


def _replace_loop(body: Any, loop: Any) -> Any:
    import tvm_ffi
    from tvm import tirx

    def visit(node: Any, mutator: Any) -> Any:
        if node.same_as(loop):
            return tirx.For(node.loop_var, node.min, node.extent, tirx.ForKind.PARALLEL, node.body,
                            node.thread_binding, node.annotations, node.step)  # fmt: skip
        return mutator.default_mutate(node)

    return tvm_ffi.structural_mutate(body, [(tirx.For, visit)])


def _first_loop(s: Any) -> Any | None:
    import tvm_ffi
    from tvm import tirx

    found: list[Any] = []

    def loop(node: Any) -> None:
        if not found:
            found.append(node)

    tvm_ffi.structural_walk(s, [(tirx.For, loop)], order="pre")
    return found[0] if found else None


def has_parallel(s: Any) -> bool:
    """True if statement ``s`` has a ``parallel`` loop anywhere."""
    import tvm_ffi
    from tvm import tirx

    found: list[bool] = []
    tvm_ffi.structural_walk(s, [(tirx.For, lambda f: found.append(f.kind == tirx.ForKind.PARALLEL))])
    return any(found)


@dataclass
class _Call:
    """One kernel call of ``main``: the kernel's name and, per tensor argument, (parameter index, tensor key)."""

    name: str
    reads: list[tuple[int, Any]]
    writes: list[tuple[int, Any]]


def _calls(main: Any) -> tuple[list[_Call], dict[Any, int]]:
    """The ``call_tir`` calls of ``main`` in order, and the bytes of every tensor they pass.

    A reshape, an alias or a tuple element stands for the tensor it views
    (same bytes), so the key is the tensor that was written.
    """
    from tvm import relax

    root: dict[Any, Any] = {}
    nbytes: dict[Any, int] = {}
    calls: list[_Call] = []

    def key(e: Any) -> Any:
        if isinstance(e, relax.TupleGetItem):
            return (key(e.tuple_value), int(e.index))
        return root.get(e, e)

    for block in main.body.blocks:
        for b in block.bindings:
            v = b.value
            op = getattr(getattr(v, "op", None), "name", "")
            if op == "relax.call_tir":
                args = [key(a) for a in v.args[1].fields]
                outs = [(b.var, i) for i in range(len(b.var.ty.fields))] if isinstance(b.var.ty, relax.TupleType) else [b.var]
                types = list(b.var.ty.fields) if isinstance(b.var.ty, relax.TupleType) else [b.var.ty]
                for k, ty in zip(outs, types):
                    nbytes[k] = _tensor_bytes(ty)
                calls.append(_Call(v.args[0].name_hint, list(enumerate(args)),
                                   [(len(args) + i, k) for i, k in enumerate(outs)]))  # fmt: skip
            elif op in ("relax.reshape", "relax.memory.view") or isinstance(v, (relax.Var, relax.TupleGetItem)):
                source = v.args[0] if op else v
                root[b.var] = key(source)
    return calls, nbytes


def _tensor_bytes(ty: Any) -> int:
    try:
        shape = [int(d) for d in ty.shape.values]
        dtype = ty.dtype.dtype
        return math.prod(shape) * max(1, int(dtype.bits) * int(dtype.lanes) // 8)
    except (AttributeError, TypeError, ValueError):
        return 0


def aligned_parallel(mod: Any, threads: int, small: dict[str, Any], parallel: set[str]) -> set[str]:
    """The small kernels to run in parallel on a board of ``threads`` cores (see the module doc).

    Args:
        mod: The scheduled module (``main`` in Relax, ``call_tir`` calls).
        threads: The board's cores.
        small: Kernels that may run in parallel though their own work would
            not pay for it: name -> the kernel with its parallel loops.
        parallel: Names of the kernels that run in parallel anyway.

    A small kernel is chosen when, over every tensor of at least
    :data:`SHARED_MIN_BYTES` it reads from or writes to another kernel, the
    cache lines one thread touches and another touched last or touches next
    are fewer by :data:`SHARED_MIN_BYTES` (in lines) with the kernel in
    parallel than with it on the calling thread. Every small kernel starts
    in parallel; those that do not pay are dropped, with their neighbours
    as they then are, until none is (two small kernels in a row may only pay
    together).
    """
    if threads < 2 or not small or "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        return set()
    calls, nbytes = _calls(mod["main"])
    writer: dict[Any, tuple[str, int]] = {}
    readers: dict[Any, list[tuple[str, int]]] = {}
    for c in calls:
        for p, k in c.reads:
            readers.setdefault(k, []).append((c.name, p))
        for p, k in c.writes:
            writer[k] = (c.name, p)
    funcs = {gv.name_hint: f for gv, f in mod.functions_items()}
    cache: dict[tuple[str, bool], dict[int, list[np.ndarray]]] = {}
    walks: dict[str, dict] = {}  # one walk of a kernel gives its lines in parallel and on one thread

    def lines(name: str, par: bool) -> dict[int, list[np.ndarray]]:
        if (name, par) not in cache:
            if name not in walks:
                walks[name] = _walk(small.get(name, funcs[name]))
            if par:  # thread_lines(func, threads)
                cache[(name, par)] = _lines(_split_boxes(walks[name], threads), threads)
            else:  # on the calling thread alone: thread_lines(func, 1)
                one = _lines(_split_boxes(walks[name], 1), 1)
                cache[(name, par)] = {p: v + [np.zeros(0, np.int64)] * (threads - 1) for p, v in one.items()}
        return cache[(name, par)]

    empty = [np.zeros(0, np.int64)] * threads

    def aligned(name: str, chosen: set[str]) -> bool:
        """Whether ``name`` in parallel leaves enough fewer lines of its large tensors to cross between threads."""
        score = {True: 0.0, False: 0.0}
        total = {True: 0, False: 0}
        for c in (c for c in calls if c.name == name):
            pairs = [(writer[k], p, k, True) for p, k in c.reads if k in writer]
            pairs += [(r, p, k, False) for p, k in c.writes for r in readers.get(k, [])]
            for (other, other_p), p, k, reading in pairs:
                if nbytes.get(k, 0) < SHARED_MIN_BYTES or other == name:
                    continue
                theirs = lines(other, other in parallel or other in chosen).get(other_p, empty)
                for par in (True, False):
                    mine = lines(name, par).get(p, empty)
                    w, r = (theirs, mine) if reading else (mine, theirs)
                    n = sum(len(x) for x in r)
                    score[par] += local_fraction(w, r) * n
                    total[par] += n
        crossing = {par: total[par] - score[par] for par in (True, False)}
        return crossing[False] - crossing[True] >= SHARED_MIN_BYTES // _LINE

    chosen = set(small)
    while True:
        drop = {name for name in chosen if not aligned(name, chosen)}
        if not drop:
            break
        chosen -= drop
    logger.debug("%d small kernels run in parallel with their neighbours' split: %s", len(chosen), sorted(chosen))
    return chosen

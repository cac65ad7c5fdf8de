"""Channel concatenations of ragged channel counts as vector row copies.

A structured-pruned SqueezeNet's fire modules concatenate two NHWC tensors of
45 channels each (64 before pruning). TVM's concat reads ``c < 45 ? A : B``
per output channel; with a boundary inside a vector the loop is not
vectorized: the eight concats took 653 us of the pruned model's 2.70 ms
against 152 us of the unpruned model's 3.11 ms (one Zen 5 core), and ate
most of what the pruning saved in the convolutions.

Here a concat of two tensors with at least :data:`STEP` channels each is
one hand-written kernel: per pixel, each input row is copied in ``STEP``-wide
vectors, its last copy overlapping the previous one when its channel count
is not a multiple of ``STEP`` (every copy reads and writes inside that
input's own row and its own range of the output row). TVM has no schedule
that splits the channel axis at the inputs' boundary, hence by hand (as
:mod:`edgekit.compiler.backends.llvm.pad`).

Concats of whole vectors take the same kernel. TVM's concat reads ``c < 64
? A : B`` per 16-element vector; on one thread LLVM puts the vectors back
together, but inside the closure of a parallel loop it does not: SqueezeNet
int8's 55 x 55 x (64 + 64) concat compiled there to one byte load and store
per element (znver4, haswell, znver2 and cortex-a72 alike), and split on two
threads by :mod:`edgekit.compiler.backends.llvm.thread_shares` it took 75 us
against 18 us serial (Zen 4). The row copies stay vector moves in either
form, as wide as both inputs' rows allow (up to :data:`WIDE_BYTES`: an int8
row of 64 channels is one 64-byte copy). Their index arithmetic is written
as expressions (``T.meta_var``), not named scalars: a scalar is a buffer,
and inside a parallel loop TVM takes it from the heap
(``TVMBackendAllocWorkspace``) on every iteration -- the first form of this
kernel did, and its parallel form ran 138 us on one thread against 7.7 us
serial. The concat alone (55 x 55 x 64 + 64 int8, znver4, Zen 4, 10th
percentile): TVM's 74.6 us parallel on two threads and 14.0 serial, the
row copies 5.2 and 8.0.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgekit.compiler.relax_rewrite import bound_value, calls_rewrite_pass

__all__ = ["concat_pass"]

logger = logging.getLogger(__name__)

#: Elements per copy step.
STEP = 16
#: Bytes per copy at most, where both inputs' rows are whole multiples of it (one AVX-512 register).
WIDE_BYTES = 64
#: Element types the kernel copies (what the host pipelines concatenate).
DTYPES = ("float32", "int8", "uint8")


def _copy_step(ca: int, cb: int, dtype: str) -> int:
    """Elements per copy: :data:`STEP`, or up to :data:`WIDE_BYTES` where both channel counts are whole
    multiples of that (int8 rows of 64 channels: one 64-byte copy instead of four 16-byte ones)."""
    step = STEP
    while (step * 2 * np.dtype(dtype).itemsize <= WIDE_BYTES and ca % (step * 2) == 0 and cb % (step * 2) == 0):
        step *= 2
    return step


def _concat_func(a: tuple[int, ...], b: tuple[int, ...], dtype: str) -> Any:
    """A PrimFunc ``Y = concat([A, B], axis=3)`` for NHWC tensors of ``>= STEP`` channels each."""
    from tvm.script import tirx as T

    n, h, w, ca = a
    cb = b[3]
    c = ca + cb
    pixels = n * h * w
    step = _copy_step(ca, cb, dtype)
    vec = f"{dtype}x{step}"

    @T.prim_func(private=True, s_tir=True)
    def concat(As: T.Buffer(a, dtype), Bs: T.Buffer(b, dtype), Ys: T.Buffer((n, h, w, c), dtype)) -> None:
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            A = T.decl_buffer((pixels * ca,), dtype, data=As.data)
            B = T.decl_buffer((pixels * cb,), dtype, data=Bs.data)
            Y = T.decl_buffer((pixels * c,), dtype, data=Ys.data)
            for p in T.parallel(pixels):
                # meta_var: an expression, not a scalar buffer (inside a parallel loop TVM allocates
                # that from the heap, TVMBackendAllocWorkspace, on every iteration)
                for k in range(-(-ca // step)):
                    first = T.meta_var(T.min(k * step, ca - step))  # the last step of a ragged row overlaps
                    Y[T.ramp(p * c + first, 1, step)] = A.vload([p * ca + first], vec)
                for k in range(-(-cb // step)):
                    first = T.meta_var(T.min(k * step, cb - step))
                    Y[T.ramp(p * c + ca + first, 1, step)] = B.vload([p * cb + first], vec)

    return concat


def _shape(expr: Any) -> tuple[tuple[int, ...], str] | None:
    from tvm import relax

    t = expr.ty
    if not isinstance(t, relax.TensorType) or t.shape is None or str(t.dtype) not in DTYPES:
        return None
    try:
        return tuple(int(v) for v in t.shape.values), str(t.dtype)
    except (TypeError, AttributeError):
        return None


def _rows_concat(m: Any, call: Any) -> Any:
    """The channel concat ``call`` of two NHWC tensors as :func:`_concat_func`, or None."""
    from tvm import relax

    axis = call.attrs.axis
    parts = call.args[0]
    if not isinstance(parts, relax.Tuple):
        parts = bound_value(m, parts)
    if axis is None or not isinstance(parts, relax.Tuple) or len(parts.fields) != 2:
        return None
    typed = [_shape(f) for f in parts.fields]
    if any(t is None for t in typed):
        return None
    (a, dtype), (b, dtype_b) = typed  # type: ignore[misc]
    if len(a) != 4 or int(axis) not in (3, -1) or dtype != dtype_b or a[:3] != b[:3]:
        return None
    if min(a[3], b[3]) < STEP:
        return None
    key = (a, b, dtype)
    if key not in m.concats:
        m.concats[key] = m.builder_.add_func(_concat_func(a, b, dtype), "concat_rows")
    out = relax.TensorType((*a[:3], a[3] + b[3]), dtype)
    return relax.call_tir(m.concats[key], relax.Tuple(list(parts.fields)), out)


def concat_pass() -> Any:
    """Channel concatenations of two NHWC tensors with a ragged channel count as row copies
    (see the module docstring for the measured cost)."""

    def setup(mutator: Any) -> None:
        mutator.concats = {}  # (shape a, shape b, dtype) -> GlobalVar of its kernel

    return calls_rewrite_pass({"relax.concat": _rows_concat}, "EdgekitConcatRows", setup)

"""Channel concats that ``ConvertLayout`` left in NCHW between NHWC layers, moved to NHWC.

PP-OCR det's int8 graph concatenates in NCHW twice, between NHWC convs: its
stem (two table lookups, NHWC, each transposed to NCHW first) and its neck
(four 24-channel maps at 80x80, three of them nearest-upsampled by a float
``resize2d`` that stays NCHW, each through a requantizing lookup). The integer
lowering's lookups are ``take`` calls, which ``ConvertLayout`` has no rule for,
and :func:`edgekit.compiler.backends.llvm.layout.cancel_transposes_pass` moves
transposes forward only where *every* operand carries the same one: here
``permute_dims(pad(concat(parts, axis=1)), [0, 2, 3, 1])`` stayed, fused by
TVM into a kernel of transposes and per-byte selects (one Zen 5 core: 656
and 237 us of det's 7.6 ms).

:func:`nhwc_concat_pass` rewrites that to ``pad(concat(nhwc(parts), axis=3))``,
where ``nhwc(p)`` is ``x`` for ``p = permute_dims(x, [0, 3, 1, 2])``, moves
the transpose back through a lookup (``take`` of a 1-D table) and its index
arithmetic (casts, a scalar add) to the value they read, and is a transpose
of ``p`` otherwise -- TVM fuses that into the kernel computing ``p`` (det: the
upsampling's). :mod:`edgekit.compiler.backends.llvm.pad` then writes the padded
NHWC concat with row copies. TVM's layout passes do not do this: ConvertLayout
stops at the ``take``, and no pass moves a transpose backward through its
producers.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekit.compiler.relax_rewrite import (
    TO_NCHW,
    TO_NHWC,
    bound_value,
    calls_rewrite_pass,
    const_value,
    is_call,
    permuted,
    static_shape,
    use_counts,
)

__all__ = ["nhwc_concat_pass"]

logger = logging.getLogger(__name__)

#: Producers a transpose is moved back through (one operand; the other a scalar constant).
_SCALAR_OPS = ("relax.add", "relax.subtract")


def _axes(call: Any) -> list[int] | None:
    return None if call.attrs.axes is None else [int(v) for v in call.attrs.axes]


def _is_scalar_const(expr: Any) -> bool:
    value = const_value(expr)
    return value is not None and value.size == 1 and value.ndim <= 1


def _nhwc(m: Any, x: Any, depth: int = 0) -> Any:
    """``x`` (4-D NCHW) in NHWC: its source where it is a transpose from NHWC, the transpose moved back
    through a lookup and its index arithmetic where each value has one reader, else a transpose of ``x``."""
    from tvm import relax
    from tvm.relax import op as R

    source = permuted(m, x)
    if source is not None and source[1] == TO_NCHW:
        return source[0]
    value = bound_value(m, x)
    if depth < 6 and m.uses.get(x, 0) == 1 and isinstance(value, relax.Call):
        if is_call(value, "relax.take") and value.args[0].ty.ndim == 1:
            index = _nhwc(m, value.args[1], depth + 1)
            return m.builder_.emit(R.take(value.args[0], index, axis=0, mode=value.attrs.mode))
        if is_call(value, "relax.astype"):
            return m.builder_.emit(R.astype(_nhwc(m, value.args[0], depth + 1), value.attrs.dtype))
        if any(is_call(value, op) for op in _SCALAR_OPS) and _is_scalar_const(value.args[1]):
            return m.builder_.emit(relax.Call(value.op, [_nhwc(m, value.args[0], depth + 1), value.args[1]]))
    return m.builder_.emit(R.permute_dims(x, TO_NHWC))


def _concat_to_nhwc(m: Any, call: Any) -> Any:
    """``permute_dims(pad(concat(parts, axis=1)), [0, 2, 3, 1])`` (or without the pad) of 4-D tensors as
    ``pad(concat(nhwc(parts), axis=3))``, where the concat (and the pad) have no other reader -- or, without a
    pad, where every reader of the concat transposes it so (one NHWC concat for all); else None."""
    from tvm import relax
    from tvm.relax import op as R

    if _axes(call) != TO_NHWC or call.ty.ndim != 4:
        return None
    inner = call.args[0]
    pad = bound_value(m, inner)
    cat_var = inner
    if is_call(pad, "relax.nn.pad"):
        if str(pad.attrs.pad_mode) != "constant" or m.uses.get(inner, 0) != 1:
            return None
        cat_var = pad.args[0]
    else:
        pad = None
    cat = bound_value(m, cat_var)
    if not is_call(cat, "relax.concat") or cat.attrs.axis is None or int(cat.attrs.axis) not in (1, -3):
        return None
    parts = cat.args[0]
    parts = bound_value(m, parts) if isinstance(parts, relax.Var) else parts
    readers = m.uses.get(cat_var, 0)
    if not isinstance(parts, relax.Tuple) or (readers != 1 and (pad is not None or m.nhwc_reads.get(cat_var) != readers)):
        return None
    if cat_var not in m.nhwc_of:  # a concat every reader of which transposes it (YOLOX's CSP blocks: two convs)
        m.nhwc_of[cat_var] = m.builder_.emit(R.concat([_nhwc(m, p) for p in parts.fields], axis=3))
    nhwc = m.nhwc_of[cat_var]
    if pad is None:
        return nhwc
    w = [int(v) for v in pad.attrs.pad_width]
    return R.nn.pad(nhwc, [w[0], w[1], w[4], w[5], w[6], w[7], w[2], w[3]], pad_value=float(pad.attrs.pad_value))


def _pixel_rows(m: Any, part: Any, split: tuple[int, int], depth: int = 0) -> Any:
    """``part`` = ``reshape(permute_dims(x, [0, 3, 1, 2]), (1, C, H*W))`` of an NHWC ``x`` (through a lookup and its
    index arithmetic, each value with one reader) as ``reshape(x, (1, H*W, *split))``, or None."""
    from tvm import relax
    from tvm.relax import op as R

    value = bound_value(m, part)
    if depth > 6 or m.uses.get(part, 0) != 1 or not isinstance(value, relax.Call):
        return None
    if is_call(value, "relax.reshape"):
        source = permuted(m, value.args[0])
        shape = None if source is None or source[1] != TO_NCHW else static_shape(source[0])
        if shape is None or len(shape) != 4 or shape[0] != 1 or shape[3] != split[0] * split[1]:
            return None
        return m.builder_.emit(R.reshape(source[0], (1, shape[1] * shape[2], *split)))
    inner = None
    if is_call(value, "relax.take") and value.args[0].ty.ndim == 1:
        inner = _pixel_rows(m, value.args[1], split, depth + 1)
        return None if inner is None else m.builder_.emit(R.take(value.args[0], inner, axis=0, mode=value.attrs.mode))
    if is_call(value, "relax.astype"):
        inner = _pixel_rows(m, value.args[0], split, depth + 1)
        return None if inner is None else m.builder_.emit(R.astype(inner, value.attrs.dtype))
    if any(is_call(value, op) for op in _SCALAR_OPS) and _is_scalar_const(value.args[1]):
        inner = _pixel_rows(m, value.args[0], split, depth + 1)
        return None if inner is None else m.builder_.emit(relax.Call(value.op, [inner, value.args[1]]))
    return None


def _anchor_rows(m: Any, call: Any) -> Any:
    """``permute_dims(reshape(concat(parts, axis=2), (1, A, B, N)), [0, 3, 1, 2])``, each part a conv's NHWC output
    ``(1, H, W, A*B)`` transposed and flattened to ``(1, A*B, H*W)``, as ``concat(reshape(x, (1, H*W, A, B)), axis=1)``.

    A YOLOv8 head's DFL input: the box convs of three scales as ``(1, 64,
    pixels)``, concatenated over the 21,504 anchors, then ``(1, anchors, 4,
    16)`` for the softmax -- a transpose there and back, the second reading
    every byte 21,504 apart (one Zen 5 core, int8: 2.3 ms of the 42 ms
    kernels; the first transposes another 0.5). Element ``(n, a, b)`` of
    both is channel ``a*B + b`` of anchor ``n``'s pixel: the NHWC rows
    themselves.
    """
    from tvm import relax
    from tvm.relax import op as R

    reshape = bound_value(m, call.args[0])
    if _axes(call) != TO_NCHW or not is_call(reshape, "relax.reshape") or m.uses.get(call.args[0], 0) != 1:
        return None
    out = static_shape(reshape)
    cat = bound_value(m, reshape.args[0])
    if out is None or len(out) != 4 or out[0] != 1 or not is_call(cat, "relax.concat") or m.uses.get(reshape.args[0], 0) != 1:
        return None
    parts = cat.args[0]
    parts = bound_value(m, parts) if isinstance(parts, relax.Var) else parts
    if cat.attrs.axis is None or int(cat.attrs.axis) not in (2, -1) or not isinstance(parts, relax.Tuple):
        return None
    rows = [_pixel_rows(m, p, (out[1], out[2])) for p in parts.fields]
    return None if any(r is None for r in rows) else R.concat(rows, axis=1)


def _nhwc_reads(mod: Any) -> dict[Any, int]:
    """How many ``permute_dims(v, [0, 2, 3, 1])`` read each variable ``v`` of ``mod``'s Relax functions."""
    from tvm import relax

    reads: dict[Any, int] = {}
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            for value in relax.analysis.get_var2val(func).values():
                if is_call(value, "relax.permute_dims") and _axes(value) == TO_NHWC and isinstance(value.args[0], relax.Var):
                    reads[value.args[0]] = reads.get(value.args[0], 0) + 1
    return reads


def _permute(m: Any, call: Any) -> Any:
    new = _concat_to_nhwc(m, call)
    return _anchor_rows(m, call) if new is None else new


def nhwc_concat_pass() -> Any:
    """NCHW channel concats whose result is transposed to NHWC, concatenated in NHWC instead
    (see the module docstring); a YOLOv8 DFL input built from NHWC rows directly (:func:`_anchor_rows`)."""

    def setup(mutator: Any) -> None:
        mutator.uses = use_counts(mutator.builder_.get())
        mutator.nhwc_reads, mutator.nhwc_of = _nhwc_reads(mutator.builder_.get()), {}

    return calls_rewrite_pass({"relax.permute_dims": _permute}, "EdgekitNhwcConcat", setup)

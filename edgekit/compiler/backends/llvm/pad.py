"""int8 NHWC pads as vector row copies: depthwise inputs, and dense conv inputs with their concat and u8 conversion.

An int8 depthwise convolution reads its input padded twice: spatially with
the input's zero point (the integer lowering) and to whole vectors of
channels with 0 (:func:`edgekit.compiler.backends.llvm.int8.depthwise_on_vectors`).
TVM fuses the two pads into one kernel whose vector lanes straddle the
channel boundary, so its guarded loads are not vectorized: every byte was a
scalar load and store (PP-OCR cls int8: 75 of 480 us on one Zen 5 core, the
5x5 depthwise layers' pads as long as the convolutions themselves).

Here such a pad is one hand-written kernel: per output pixel, a 16-byte
store of the channel fill at the end of the row, then 16-byte copies of the
source row (the last one overlapping the previous one when the channel
count is not a multiple of 16) or of the border value. No loop of it
depends on a lane condition. TVM has no schedule that splits a pad this
way, hence by hand. Where the padded tensor is an AVX2 table lookup's and the
pad its one consumer, the lookup writes the padded tensor itself
(:func:`edgekit.compiler.backends.llvm.lookup.lookup_pad_avx2_func`, 32 channels
or more); on AVX512-VBMI targets a lookup's channel pad to a ``vpdpbusd``
conv's step (what structured pruning leaves: 6 -> 8 channels) is the lookup
writing the padded rows, several pixels per vector
(:func:`edgekit.compiler.backends.llvm.lookup.lookup_rows_vbmi_func`).

The same kernel takes two more steps where the pad's neighbours allow
(PP-OCR det int8 on one Zen 5 core: its three largest "pad" kernels,
1,072 of 1,172 us, were these, fused by TVM):

* **A channel concat** the pad reads (and nothing else does) is copied
  row by row into the padded tensor, each input into its own range of
  channels: no concatenated tensor in between. TVM fuses concat and pad into
  one loop with a ``c < C0 ? A : (c < C0 + C1 ? B : ...)`` select per
  byte, not vectorized (:mod:`edgekit.compiler.backends.llvm.concat` says the
  same of concat alone). :mod:`edgekit.compiler.backends.llvm.concat_layout`
  first moves det's NCHW concats to NHWC.
* **The u8 conversion** of a ``vpdpbusd`` convolution's input
  (``astype(astype(x, int16) + 128, uint8)``,
  :meth:`edgekit.compiler.backends.llvm.int8._Rewriter.activations`), when it
  is the pad's one consumer, is applied in the copy (``x ^ 0x80``, the same
  byte; border and fill written as their u8 values): the padded int8 tensor
  and the conversion's second pass over it are gone.
* **The int16 widening** of a 16-bit dot product's input (``astype(x, int16)``
  on AVX2-only targets), when it is the pad's one consumer, is applied in the
  copy (``vpmovsxbw``): it was a ``cast`` kernel after every padded conv input.
* The same conversion of an AVX-512 VBMI **table lookup**'s output (its one
  reader) is the lookup writing ``table ^ 0x80`` as uint8
  (:func:`_u8_lookup`): det's lookups feeding 1x1 convs had a conversion
  kernel each, which FuseOps cannot put into a hand-written lookup.
* A lookup read only by a ``vpdpbusd`` depthwise conv's blocked input copy
  writes that layout itself (:mod:`edgekit.compiler.backends.llvm.depthwise_input`).

No TVM pass merges these: FuseOps fuses the injective ops into one loop nest
over the output, which is exactly the per-byte select above.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgekit.compiler.backends.llvm.depthwise_input import blocked_epilogue, blocked_lookup
from edgekit.compiler.backends.llvm.lookup import (
    AVX2_LOOKUP,
    VBMI_LOOKUP,
    avx2_live_slices,
    lookup_pad_avx2_func,
    lookup_rows_vbmi_func,
    lookup_vbmi_func,
)
from edgekit.compiler.relax_rewrite import const_value, is_call, mutator_pass, use_counts

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = ["int8_pad_pass"]

logger = logging.getLogger(__name__)

#: Bytes per copy step (one SSE register; any x86-64 or aarch64 CPU has it).
STEP = 16
#: Narrower steps for rows of fewer than ``STEP`` channels (what structured
#: pruning leaves: 12 of 16): 8 and 4 bytes, one general-purpose or SSE move each.
NARROW_STEPS = (8, 4)
#: Name prefix of :mod:`edgekit.compiler.backends.llvm.concat`'s kernels (that pass runs first).
CONCAT_ROWS = "concat_rows"


def _row_steps(Y: Any, at: list[Any], first: int, width: int, value: Any, step: int = STEP) -> None:
    """Stores ``value(c)`` (``step`` lanes from channel ``c`` of the source) at channels ``[first, first + width)``
    of pixel ``at`` in ``Y``; the last step overlaps the previous one when ``width`` is not a multiple of ``step``."""
    from tvm.script.ir_builder import tirx as T

    full, tail = divmod(width, step)
    with T.serial(0, full) as k:
        T.buffer_store(Y, value(k * step), [*at, T.ramp(first + k * step, 1, step)])
    if tail:
        T.buffer_store(Y, value(width - step), [*at, T.ramp(first + width - step, 1, step)])


def _converted(v: Any, dtype: str, out_dtype: str, lanes: int) -> Any:
    """``v`` (``lanes`` values of ``dtype``) as ``out_dtype``: the same bytes, ``^ 0x80`` for int8 -> uint8
    (plus 128, a ``vpdpbusd`` operand), sign-extended for int8 -> int16 (a 16-bit dot product's operand)."""
    from tvm import tirx
    from tvm.script.ir_builder import tirx as T

    if out_dtype == dtype:
        return v
    if out_dtype == "int16":
        return T.Cast(f"int16x{lanes}", v)
    return T.reinterpret(f"{out_dtype}x{lanes}", v) ^ T.broadcast(tirx.const(128, out_dtype), lanes)


def row_step(channels: int, fill: int) -> int | None:
    """Bytes per copy step of a row of ``channels`` channels and ``fill`` channels of fill after them:
    ``STEP``, or for a ragged row of fewer channels the widest of :data:`NARROW_STEPS` that fits both
    (the last step of a row overlaps the one before; the fill is one step ending at the row's end); None
    when none fits.

    TVM's own pad of 12 channels (the digits CNN's first conv pruned 30 %) was
    a lane-guarded loop LLVM left scalar: 0.29 us per call against 0.04 for
    the 16-channel row copy (kernels built alone, one Zen 4 core).
    """
    for step in (STEP, *NARROW_STEPS):
        if channels >= step and fill <= step:
            return step
    return None


def _pad_func(parts: list[tuple[int, ...]], top: int, left: int, out: tuple[int, int, int, int],
              border: int, fill: int, dtype: str, out_dtype: str, step: int = STEP) -> Any:  # fmt: skip
    """A PrimFunc ``Y = pad(concat(parts, axis=3))``: ``border`` outside the image, ``fill`` in channels
    ``[C, C_out)``; with ``out_dtype`` uint8 for int8 parts, every copied byte plus 128 (``^ 0x80``),
    with int16, every value widened (:func:`_converted`).
    Copies of ``step`` bytes (:func:`row_step`); every part at least ``step`` channels wide.

    ``border`` and ``fill`` are values of ``out_dtype``. Built with TVM's IR
    builder, not TVMScript: one buffer argument per concatenated input.
    """
    from tvm import tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    n, h, w = parts[0][:3]
    _, ho, wo, cp = out
    c = sum(p[3] for p in parts)

    def constant(v: int) -> Any:
        return T.broadcast(tirx.const(v, out_dtype), step)

    with IRBuilder() as ib:
        with T.prim_func(private=True):
            T.func_name("pad_rows")
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            xs = [T.arg(f"X{i}", T.buffer(p, dtype)) for i, p in enumerate(parts)]
            Y = T.arg("Y", T.buffer(out, out_dtype))
            with T.sblock("root"):
                with T.parallel(0, n * ho) as nh:
                    with T.serial(0, wo) as x:
                        b, y = nh // ho, nh % ho
                        if cp > c:
                            T.buffer_store(Y, constant(fill), [b, y, x, T.ramp(cp - step, 1, step)])
                        with T.If(tirx.all(top <= y, y < top + h, left <= x, x < left + w)):
                            with T.Then():
                                first = 0
                                for X, p in zip(xs, parts):

                                    def copy(k: Any, X: Any = X) -> Any:
                                        v = X.vload([b, y - top, x - left, k], f"{dtype}x{step}")
                                        return _converted(v, dtype, out_dtype, step)

                                    _row_steps(Y, [b, y, x], first, p[3], copy, step)
                                    first += p[3]
                            with T.Else():
                                _row_steps(Y, [b, y, x], 0, c, lambda _k: constant(border), step)
    return ib.get()


def _flat_pad_func(shape: tuple[int, ...], top: int, left: int, out: tuple[int, int, int, int], border: int,
                   dtype: str, out_dtype: str) -> Any:  # fmt: skip
    """:func:`_pad_func` for one input of fewer than ``STEP`` channels and no channel fill, row by row.

    Without channel fill, an image row of the input is one contiguous run of
    ``W * C`` bytes in the output: it is copied in ``STEP``-byte steps (the
    last one overlapping), and the border columns and rows are runs of the
    border value; a 12-channel row of 8 pixels is 6 steps of 16 bytes, not 16
    of 8.
    """
    from tvm import tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    n, h, w, c = shape
    _, ho, wo, _ = out
    right = wo - left - w

    def run(Yf: Any, base: Any, width: int, value: Any) -> None:
        """``value(k, step)`` (``step`` lanes) at ``[base, base + width)`` of the flat ``Yf``."""
        step = STEP if width >= STEP else row_step(width, 0)
        _row_steps(Yf, [], base, width, lambda k: value(k, step), step)  # type: ignore[arg-type]

    def constant(v: int, step: int) -> Any:
        return T.broadcast(tirx.const(v, out_dtype), step)

    with IRBuilder() as ib:
        with T.prim_func(private=True):
            T.func_name("pad_rows")
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            X = T.arg("X0", T.buffer(shape, dtype))
            Y = T.arg("Y", T.buffer(out, out_dtype))
            with T.sblock("root"):
                Xf = T.decl_buffer((n * h * w * c,), dtype, data=X.data)
                Yf = T.decl_buffer((n * ho * wo * c,), out_dtype, data=Y.data)
                with T.parallel(0, n * ho) as nh:
                    b, y = nh // ho, nh % ho
                    row = nh * (wo * c)
                    with T.If(tirx.all(top <= y, y < top + h)):
                        with T.Then():
                            if left:
                                run(Yf, row, left * c, lambda _k, step: constant(border, step))
                            if right:
                                run(Yf, row + (left + w) * c, right * c, lambda _k, step: constant(border, step))
                            src = (b * h + y - top) * (w * c)

                            def copy(k: Any, step: int) -> Any:
                                return _converted(Xf.vload([src + k], f"{dtype}x{step}"), dtype, out_dtype, step)

                            run(Yf, row + left * c, w * c, copy)
                        with T.Else():
                            run(Yf, row, wo * c, lambda _k, step: constant(border, step))
    return ib.get()


def _static_bytes(expr: Any) -> tuple[int, ...] | None:
    """The static shape of an int8/uint8 Relax tensor, None for anything else."""
    from tvm import relax

    t = expr.ty
    if not isinstance(t, relax.TensorType) or t.shape is None or str(t.dtype) not in ("int8", "uint8"):
        return None
    try:
        return tuple(int(v) for v in t.shape.values)
    except (TypeError, AttributeError):
        return None


def _pad_value(call: Any, dtype: str) -> int | None:
    """A constant pad's value as an integer of ``dtype``, None if it is not one."""
    import numpy as np

    if str(call.attrs.pad_mode) != "constant":
        return None
    v = float(call.attrs.pad_value)
    info = np.iinfo(np.dtype(dtype))
    return int(v) if v == int(v) and info.min <= v <= info.max else None


def _through_aliases(x: Any, lookup: Any) -> Any:
    """The value bound to ``x`` (``lookup(var)``), past alias bindings (``y = x``); None if none."""
    from tvm import relax

    inner = lookup(x) if isinstance(x, relax.Var) else None
    while isinstance(inner, relax.Var):
        inner = lookup(inner)
    return inner


def _compose(call: Any, inner: Any) -> tuple[Any, list[int], int] | None:
    """``(x, widths, border)`` when the pad ``call`` of the pad ``inner`` is one pad of ``x``.

    pad(channels, f) of pad(spatial, z), or two pads of one value (a
    depthwise conv's extra column and channels on the lowering's
    zero-point pad, int8.depthwise_pairs).
    """
    if not is_call(inner, "relax.nn.pad") or _static_bytes(inner) is None:
        return None
    dtype = str(call.ty.dtype)
    widths = [int(v) for v in call.attrs.pad_width]
    inner_widths = [int(v) for v in inner.attrs.pad_width]
    inner_value = _pad_value(inner, dtype)
    channels_only = widths[:7] == [0] * 7 and inner_widths[6:] == [0, 0]
    if inner_widths[:2] != [0, 0] or inner_value is None or not (channels_only or inner_value == _pad_value(call, dtype)):
        return None
    return inner.args[0], [a + b for a, b in zip(inner_widths, widths)], inner_value


def _concat_parts(m: Any, x: Any) -> list[Any]:
    """The inputs of the channel concat ``x`` is bound to when the pad is its one reader, else ``[x]``.

    A ``relax.concat`` on axis 3 of NHWC tensors, or the row-copy kernel
    :mod:`edgekit.compiler.backends.llvm.concat` made of one; every input
    at least :data:`STEP` channels wide (each is copied in whole steps).
    """
    from tvm import relax

    value = _through_aliases(x, m.lookup_binding)
    parts = None
    if m.uses.get(x, 0) != 1:
        return [x]
    if is_call(value, "relax.concat") and value.attrs.axis is not None and int(value.attrs.axis) in (3, -1):
        fields = value.args[0]
        fields = _through_aliases(fields, m.lookup_binding) if isinstance(fields, relax.Var) else fields
        parts = list(fields.fields) if isinstance(fields, relax.Tuple) else None
    elif is_call(value, "relax.call_tir") and value.args[0].name_hint.startswith(CONCAT_ROWS):
        parts = list(value.args[1].fields)
    shapes = [_static_bytes(p) for p in parts or []]
    if not parts or any(s is None or len(s) != 4 or s[3] < STEP for s in shapes):
        return [x]
    return parts


def _pad_rows(m: Any, call: Any, convert: str = "") -> Any:
    """The NHWC int8 pad ``call`` (merged with a pad it reads, :func:`_compose`, and a concat it reads,
    :func:`_concat_parts`) as a :func:`_pad_func` kernel, or None; ``convert`` "uint8": plus 128, as
    uint8 (:func:`_u8_of_pad`); "int16": widened (:func:`_i16_of_pad`)."""
    from tvm import relax

    out = _static_bytes(call)
    if out is None or len(out) != 4:
        return None
    dtype = str(call.ty.dtype)
    widths = [int(v) for v in call.attrs.pad_width]
    fill = _pad_value(call, dtype)
    border = fill
    x = call.args[0]
    composed = _compose(call, _through_aliases(x, m.lookup_binding))
    if composed is not None:
        x, widths, border = composed
    shape = _static_bytes(x)
    if shape is None or fill is None or border is None or widths[:2] != [0, 0] or widths[6] != 0:
        return None
    c, cp = shape[3], out[3]
    rows = _lookup_rows(m, x, shape, widths, out, fill, convert)
    if rows is not None:
        return rows
    step = row_step(c, cp - c)
    if step is None:
        return None
    parts = _concat_parts(m, x) if step == STEP else [x]
    if convert == "uint8":
        border, fill, out_dtype = border + 128, fill + 128, "uint8"
    elif convert == "int16":
        out_dtype = "int16"
    else:
        out_dtype = dtype
        fused = _lookup_pad(m, x, shape, widths, out, border, fill) if len(parts) == 1 else None
        if fused is not None:
            return fused
    shapes = tuple(_static_bytes(p) for p in parts)
    key = (shapes, widths[2], widths[4], out, border, fill, dtype, out_dtype, step)
    if key not in m.funcs and step < STEP and cp == c and shape[2] * c >= STEP:
        m.funcs[key] = m.builder_.add_func(_flat_pad_func(shape, widths[2], widths[4], out, border, dtype, out_dtype),
                                           "pad_rows")  # fmt: skip
    if key not in m.funcs:
        func = _pad_func(list(shapes), widths[2], widths[4], out, border, fill, dtype, out_dtype, step)  # type: ignore[arg-type]
        m.funcs[key] = m.builder_.add_func(func, "pad_rows")
    return relax.call_tir(m.funcs[key], relax.Tuple(parts), relax.TensorType(out, out_dtype))


def _lookup_pad(m: Any, x: Any, shape: tuple[int, ...], widths: list[int], out: tuple[int, ...], border: int,
                fill: int) -> Any:  # fmt: skip
    """The pad of ``x`` as one kernel with the AVX2 table lookup that computes ``x``, or None.

    Only where the pad is that lookup's one consumer and there are at least 32
    channels (one lookup step); see :func:`edgekit.compiler.backends.llvm.lookup.lookup_pad_avx2_func`.
    """
    from tvm import relax

    lookup = _through_aliases(x, m.lookup_binding)
    if not is_call(lookup, "relax.call_tir") or m.uses.get(x, 0) != 1 or shape[3] < 32:
        return None
    if not lookup.args[0].name_hint.startswith(AVX2_LOOKUP) or str(x.ty.dtype) != "int8":
        return None
    src, table = lookup.args[1].fields
    live = avx2_live_slices(m.lookup_target, const_value(table))
    key = ("lookup", shape, widths[2], widths[4], out, border, fill, live)
    if key not in m.funcs:
        func = lookup_pad_avx2_func(shape, widths[2], widths[4], out, border, fill, live)
        m.funcs[key] = m.builder_.add_func(func, "lookup_pad_avx2")
    return relax.call_tir(m.funcs[key], relax.Tuple([src, table]), relax.TensorType(out, "int8"))


def _lookup_rows(m: Any, x: Any, shape: tuple[int, ...], widths: list[int], out: tuple[int, ...], fill: int,
                 convert: str) -> Any:  # fmt: skip
    """The channel pad of ``x`` (no spatial pad; ``convert`` "uint8": and its u8 conversion) as one kernel with
    the VBMI table lookup that computes ``x``, or None.

    Only where the pad is that lookup's one consumer and the padded row fits one vector (``C < C_out <= 64``);
    see :func:`edgekit.compiler.backends.llvm.lookup.lookup_rows_vbmi_func`. The lookup may already write
    uint8 (:func:`_u8_lookup`: its table flipped), the pad then being of that operand.
    """
    import numpy as np
    from tvm import relax

    c, cp = shape[3], out[3]
    if convert == "int16" or any(widths[:6]) or not c < cp <= 64 or m.uses.get(x, 0) != 1:
        return None
    found = _vbmi_lookup(m, x)
    if found is None:
        return None
    src, values = found
    out_dtype = str(x.ty.dtype)
    if convert == "uint8":
        if out_dtype != "int8":
            return None
        values, fill, out_dtype = values ^ np.int8(-128), fill + 128, "uint8"
    key = ("lookup_rows", shape, cp, fill, out_dtype)
    if key not in m.funcs:
        m.funcs[key] = m.builder_.add_func(lookup_rows_vbmi_func(shape, cp, fill, out_dtype), "lookup_rows_vbmi")
    return relax.call_tir(m.funcs[key], relax.Tuple([src, relax.const(values, "int8")]),
                          relax.TensorType(out, out_dtype))  # fmt: skip


def _u8_source(call: Any, lookup: Any, uses: dict[Any, int]) -> Any:
    """The int8 value ``t`` (a variable) when ``call`` is ``astype(astype(t, int16) + 128, uint8)``
    (the u8 conversion of a ``vpdpbusd`` input) and each step its predecessor's one reader, else None."""
    if not is_call(call, "relax.astype") or str(call.attrs.dtype) != "uint8":
        return None
    add = _through_aliases(call.args[0], lookup)
    if not is_call(add, "relax.add") or uses.get(call.args[0], 0) != 1:
        return None
    widen, offset = add.args
    value = const_value(offset)
    if value is None or value.size != 1 or int(value.reshape(-1)[0]) != 128 or uses.get(widen, 0) != 1:
        return None
    widen = _through_aliases(widen, lookup)
    if not is_call(widen, "relax.astype") or str(widen.attrs.dtype) != "int16" or uses.get(widen.args[0], 0) != 1:
        return None
    return widen.args[0] if str(widen.args[0].ty.dtype) == "int8" else None


def _i16_of_pad(call: Any, lookup: Any, uses: dict[Any, int]) -> Any:
    """The int8 pad the int16 widening ``call`` (``astype(pad, int16)``: a 16-bit dot product's operand on
    AVX2-only targets, :meth:`edgekit.compiler.backends.llvm.int8._Rewriter.activations`) reads when it
    is the pad's one reader, else None: the pad kernel writes int16 itself (it was a ``cast`` kernel
    after every padded conv input)."""
    if not is_call(call, "relax.astype") or str(call.attrs.dtype) != "int16" or uses.get(call.args[0], 0) != 1:
        return None
    pad = _through_aliases(call.args[0], lookup)
    return pad if is_call(pad, "relax.nn.pad") and str(pad.ty.dtype) == "int8" else None


def _u8_of_pad(call: Any, lookup: Any, uses: dict[Any, int]) -> Any:
    """The int8 pad the u8 conversion ``call`` reads (:func:`_u8_source`), else None."""
    t = _u8_source(call, lookup, uses)
    pad = None if t is None else _through_aliases(t, lookup)
    return pad if is_call(pad, "relax.nn.pad") else None


def _vbmi_lookup(m: Any, x: Any) -> tuple[Any, Any] | None:
    """``(source, table values)`` when ``x`` is bound to a VBMI table lookup (its int8 or uint8 form), else None."""
    import numpy as np

    lookup = _through_aliases(x, m.lookup_binding)
    if not is_call(lookup, "relax.call_tir") or not lookup.args[0].name_hint.startswith(VBMI_LOOKUP):
        return None
    src, table = lookup.args[1].fields
    values = const_value(table)
    if values is None or values.dtype != np.int8 or values.shape != (256,):
        return None
    return src, values


def _u8_lookup(m: Any, call: Any) -> Any:
    """The u8 conversion ``call`` of a VBMI table lookup as that lookup writing uint8, or None.

    The table ``t ^ 0x80`` written as uint8 is ``t + 128`` byte for byte:
    the lookup kernel writes the conv's operand, no conversion kernel after it
    (FuseOps cannot put the conversion into a hand-written lookup kernel).
    """
    import numpy as np
    from tvm import relax

    t = _u8_source(call, m.lookup_binding, m.uses)
    found = None if t is None else _vbmi_lookup(m, t)
    if found is None:
        return None
    src, values = found
    shape = tuple(int(v) for v in t.ty.shape.values)
    key = ("lookup_u8", shape)
    if key not in m.funcs:
        m.funcs[key] = m.builder_.add_func(lookup_vbmi_func(shape, "uint8"), VBMI_LOOKUP)
    flipped = relax.const(values ^ np.int8(-128), "int8")
    return relax.call_tir(m.funcs[key], relax.Tuple([src, flipped]), relax.TensorType(shape, "uint8"))


def _u8_concat(m: Any, call: Any) -> Any:
    """The u8 conversion ``call`` of a channel concat (its one reader) as one :func:`_pad_func` kernel with no
    padding: each input row copied ``^ 0x80`` into the conv's uint8 operand (YOLOv8's C2f concats feed 1x1
    convs: TVM fused concat and conversion into a per-byte select), or None."""
    from tvm import relax

    t = _u8_source(call, m.lookup_binding, m.uses)
    parts = [] if t is None else _concat_parts(m, t)
    if len(parts) < 2:
        return None
    shapes = tuple(_static_bytes(p) for p in parts)
    out = (*shapes[0][:3], sum(s[3] for s in shapes))  # type: ignore[index]
    key = (shapes, 0, 0, out, 128, 128, "int8", "uint8")
    if key not in m.funcs:
        m.funcs[key] = m.builder_.add_func(_pad_func(list(shapes), 0, 0, out, 128, 128, "int8", "uint8"), "pad_rows")  # type: ignore[arg-type]
    return relax.call_tir(m.funcs[key], relax.Tuple(parts), relax.TensorType(out, "uint8"))


def _find_data_and_merged(mutator: Any) -> None:
    """Sets ``mutator.data`` (vars computed from the model's inputs), ``mutator.merged``
    (spatial pads a channel pad reads: left for that pad to absorb; pads a u8 or int16 conversion
    reads, and the u8 conversion's inner widening: left for the conversion) and ``mutator.uses``."""
    from tvm import relax

    mutator.funcs, mutator.merged, mutator.data = {}, [], set()
    mutator.uses = use_counts(mutator.builder_.get())
    for func in mutator.builder_.get().functions.values():
        if not isinstance(func, relax.Function):
            continue
        attrs = func.attrs or {}
        n_in = int(attrs["num_input"]) if "num_input" in attrs else len(func.params)
        mutator.data.update(func.params[:n_in])
        var2val = relax.analysis.get_var2val(func)
        for var, val in var2val.items():
            if any(v in mutator.data for v in relax.analysis.free_vars(val)):
                mutator.data.add(var)
        for val in var2val.values():
            if is_call(val, "relax.nn.pad") and _static_bytes(val) is not None:
                inner = _through_aliases(val.args[0], var2val.get)
                if _compose(val, inner) is not None:
                    mutator.merged.append(inner)
            converted = _u8_of_pad(val, var2val.get, mutator.uses)
            if converted is not None:
                # The conversion's own widening astype(pad, int16) is not an int16 operand (_i16_of_pad).
                widen = _through_aliases(_through_aliases(val.args[0], var2val.get).args[0], var2val.get)
                mutator.merged.append(widen)
            else:
                converted = _i16_of_pad(val, var2val.get, mutator.uses)
            if converted is not None:
                mutator.merged.append(converted)


def int8_pad_pass(target: tvm.target.Target) -> Any:
    """Rewrites NHWC int8 ``pad`` (and a channel pad of a spatial pad, or a pad of a pad of the
    same value; with the channel concat it reads and the u8 conversion that reads it) to
    :func:`_pad_func` kernels.

    Only pads this kernel handles exactly: constant mode, batch axis
    unpadded, at least 16 channels (each concat input too), at most 16
    channels of fill; integral pad values in the dtype's range. CPU (LLVM)
    targets only.
    """
    import tvm
    from tvm import relax

    if target.kind.name != "llvm":
        return tvm.transform.Sequential([], name="EdgekitInt8Pad")

    @relax.expr_functor.mutator
    class Pads(relax.PyExprMutator):
        #: Which slices an AVX2 lookup-pad reads depends on the target (lookup.avx2_live_slices).
        lookup_target = target

        def visit_call_(self, call: Any) -> Any:
            # Weight pads are lifted out to run once at compile time, as Relax.
            data = bool(call.args) and isinstance(call.args[0], relax.Var) and call.args[0] in self.data
            merged = any(call.same_as(m) for m in self.merged)
            call = super().visit_call_(call)
            if is_call(call, "relax.call_tir"):  # a depthwise conv's blocked input copy of a lookup
                new = blocked_lookup(self, call)
                new = blocked_epilogue(self, call) if new is None else new
                return call if new is None else new
            if merged or not data:
                return call
            if is_call(call, "relax.astype"):
                pad, convert = _u8_of_pad(call, self.lookup_binding, self.uses), "uint8"
                if pad is None:
                    pad, convert = _i16_of_pad(call, self.lookup_binding, self.uses), "int16"
                # (A pad left for a conversion that no kernel takes fails the same checks alone.)
                new = None if pad is None or pad.args[0] not in self.data else _pad_rows(self, pad, convert)
                new = _u8_lookup(self, call) if pad is None else new
                new = _u8_concat(self, call) if pad is None and new is None else new
                return call if new is None else new
            if not is_call(call, "relax.nn.pad"):
                return call
            new = _pad_rows(self, call)
            return call if new is None else new

    return mutator_pass(Pads, "EdgekitInt8Pad", _find_data_and_merged)

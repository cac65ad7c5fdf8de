"""int8 NHWC pads as vector row copies (the input of every int8 depthwise convolution).

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
(:func:`edgekit.compiler.backends.llvm.lookup.lookup_pad_avx2_func`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgekit.compiler.backends.llvm.lookup import AVX2_LOOKUP, lookup_pad_avx2_func
from edgekit.compiler.relax_rewrite import is_call, mutator_pass, use_counts

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = ["int8_pad_pass"]

logger = logging.getLogger(__name__)

#: Bytes per copy step (one SSE register; any x86-64 or aarch64 CPU has it).
STEP = 16


def _pad_func(shape: tuple[int, int, int, int], top: int, left: int, out: tuple[int, int, int, int],
              border: int, fill: int, dtype: str) -> Any:  # fmt: skip
    """A PrimFunc ``Y = pad(X)``: ``border`` outside the image, ``fill`` in channels ``[C, C_out)``."""
    from tvm.script import tirx as T

    n, h, w, c = shape
    _, ho, wo, cp = out
    vec = f"{dtype}x{STEP}"
    full, tail = divmod(c, STEP)

    @T.prim_func(private=True, s_tir=True)
    def pad(Xs: T.Buffer(shape, dtype), Ys: T.Buffer(out, dtype)) -> None:
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            X = T.decl_buffer((n * h * w * c,), dtype, data=Xs.data)
            Y = T.decl_buffer((n * ho * wo * cp,), dtype, data=Ys.data)
            for nh in T.parallel(n * ho):
                for x in range(wo):
                    row = (nh * wo + x) * cp
                    if cp > c:
                        Y[T.ramp(row + cp - STEP, 1, STEP)] = T.broadcast(T.Cast(dtype, fill), STEP)
                    y = nh % ho
                    if top <= y and y < top + h and left <= x and x < left + w:
                        src = (((nh // ho) * h + y - top) * w + x - left) * c
                        for k in range(full):
                            Y[T.ramp(row + k * STEP, 1, STEP)] = X.vload([src + k * STEP], vec)
                        if tail > 0:
                            Y[T.ramp(row + c - STEP, 1, STEP)] = X.vload([src + c - STEP], vec)
                    else:
                        for k in range(full):
                            Y[T.ramp(row + k * STEP, 1, STEP)] = T.broadcast(T.Cast(dtype, border), STEP)
                        if tail > 0:
                            Y[T.ramp(row + c - STEP, 1, STEP)] = T.broadcast(T.Cast(dtype, border), STEP)

    return pad


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


def _pad_rows(m: Any, call: Any) -> Any:
    """The NHWC int8 pad ``call`` (merged with a pad it reads, :func:`_compose`) as a :func:`_pad_func` kernel, or None."""
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
    if c < STEP or cp - c > STEP:
        return None
    fused = _lookup_pad(m, x, shape, widths, out, border, fill)
    if fused is not None:
        return fused
    key = (shape, widths[2], widths[4], out, border, fill, dtype)
    if key not in m.funcs:
        m.funcs[key] = m.builder_.add_func(_pad_func(shape, widths[2], widths[4], out, border, fill, dtype), "pad_rows")
    return relax.call_tir(m.funcs[key], relax.Tuple([x]), relax.TensorType(out, dtype))


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
    key = ("lookup", shape, widths[2], widths[4], out, border, fill)
    if key not in m.funcs:
        func = lookup_pad_avx2_func(shape, widths[2], widths[4], out, border, fill)
        m.funcs[key] = m.builder_.add_func(func, "lookup_pad_avx2")
    return relax.call_tir(m.funcs[key], relax.Tuple([src, table]), relax.TensorType(out, "int8"))


def _find_data_and_merged(mutator: Any) -> None:
    """Sets ``mutator.data`` (vars computed from the model's inputs), ``mutator.merged``
    (spatial pads a channel pad reads: left for that pad to absorb) and ``mutator.uses``."""
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


def int8_pad_pass(target: tvm.target.Target) -> Any:
    """Rewrites NHWC int8 ``pad`` (and a channel pad of a spatial pad, or a pad of a pad of the
    same value) to :func:`_pad_func` kernels.

    Only pads this kernel handles exactly: constant mode, batch axis
    unpadded, at least 16 channels, at most 16 channels of fill; integral
    pad values in the dtype's range. CPU (LLVM) targets only.
    """
    import tvm
    from tvm import relax

    if target.kind.name != "llvm":
        return tvm.transform.Sequential([], name="EdgekitInt8Pad")

    @relax.expr_functor.mutator
    class Pads(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            # Weight pads are lifted out to run once at compile time, as Relax.
            data = bool(call.args) and isinstance(call.args[0], relax.Var) and call.args[0] in self.data
            merged = any(call.same_as(m) for m in self.merged)
            call = super().visit_call_(call)
            if merged or not data or not is_call(call, "relax.nn.pad"):
                return call
            new = _pad_rows(self, call)
            return call if new is None else new

    return mutator_pass(Pads, "EdgekitInt8Pad", _find_data_and_merged)

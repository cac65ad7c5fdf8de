"""int8 convolutions and matrix products on the CPU's integer dot-product instructions.

After the integer-only lowering (:mod:`edgekit.compiler.integer`) a quantized
layer is ``conv2d``/``matmul`` of int8 x int8 with an int32 accumulator. Left
to TVM's generic schedule, every int8 is widened to int32 and multiplied one
lane at a time: on an AVX2 CPU that is half the MACs per instruction of fp32,
and int8 ran 2-4x *slower* than fp32. This module gives those layers the
instructions CPUs have for exactly this product, chosen by the **target's**
features (never the build machine's):

================  ===============================================  =====================
ISA               instruction                                      MACs / instruction
================  ===============================================  =====================
AVX512-VNNI       ``vpdpbusd zmm`` (u8 x s8, 4 products -> s32)     64
AVX-VNNI          ``vpdpbusd ymm`` (VEX)                             32
AVX512BW, u8 x s8 ``vpmaddubsw zmm`` + ``vpmaddwd zmm`` (1s)         64 per 2
AVX2, u8 x s8     ``vpmaddubsw`` + ``vpmaddwd`` (1s)                 32 per 2
AVX512BW / AVX2   ``vpmaddwd`` (s16 x s16, 2 products -> s32)        32 / 16
================  ===============================================  =====================

Activations are converted once per layer (fused into a small copy kernel,
together with the spatial padding): to ``u8 = x + 128`` for the u8 x s8
instructions, whose result is then corrected by ``128 * sum(w)`` per output
channel (a compile-time constant, lifted with the other weight transforms),
or to int16. All of these are exact integer arithmetic, so results are
bit-identical with the generic integer kernels -- except ``vpmaddubsw``,
whose pairwise 16-bit sum saturates (onnxruntime's AVX2 u8s8 kernels accept
that error; edgekit does not): it is used only for a layer whose weights are
proven at compile time never to saturate it (e.g. 7-bit weights), other
layers use the exact ``vpmaddwd`` form.

Weights are blocked ``[O/L, KH, KW, I/k, L, k]`` (``L`` int32 lanes, ``k``
products per lane), so the weights of one instruction are one contiguous
vector; the micro-kernel keeps a ``rows x (vectors * L)`` accumulator tile in
registers and broadcasts ``k`` input bytes per instruction, the ``L x k``
step tensorized with the instruction's intrinsic
(:mod:`edgekit.compiler.backends.llvm.intrin`).

Depthwise convolutions on AVX512-VNNI targets (VBMI's ``vpermb`` or, without
it, ``vpermd`` + ``vpshufb`` for the operands' byte permutation) and on AVX-VNNI
targets take four kernel taps per ``vpdpbusd`` lane on a channel-blocked copy of
the input (:mod:`edgekit.compiler.backends.llvm.depthwise_vnni`). Other AVX-512 targets
take two taps of one channel per int32 lane: the int8 inputs of two
neighbouring pixels are widened to int16 and interleaved, and one
``vpmaddwd`` (``vpdpwssd`` where LLVM folds the add) multiplies and adds both,
exactly -- about 4 instructions per 32 MACs where the generic kernel
(``vpmullw`` on int16, then widening) took 8. AVX2-only targets (Haswell,
Zen 2) do the same on 8 channels per ``vpmaddwd ymm``, the two pixels'
bytes interleaved (``vpunpcklbw``) before one ``vpmovsxbw``, and a register
tile of up to :data:`~edgekit.compiler.backends.llvm.depthwise_pairs.AVX2_DEPTHWISE_ROWS` pixels sharing those operands;
there the two taps of a lane are two kernel rows of one column where that
builds fewer pairs (:func:`~edgekit.compiler.backends.llvm.depthwise_pairs.vertical_pairs`:
stride-1 kernels).
Grouped convolutions keep the generic integer kernels.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.compiler.backends.llvm.intrin import (
    DW_I16_256,
    DW_I16_512,
    DW_ROWS_256,
    I16_256,
    I16_512,
    U8S8_256,
    U8S8_512,
    VNNI256,
    VNNI512,
    DotIsa,
    dot_isa,
    has_feature,
    register_intrinsics,
)
from edgekit.compiler.backends.llvm.depthwise_avx2 import DW_PAIRS_X16, lower_depthwise
from edgekit.compiler.backends.llvm.depthwise_pairs import depthwise_rows, lower_pairs
from edgekit.compiler.backends.llvm.depthwise_vnni import BLOCK as DW_VNNI_BLOCK
from edgekit.compiler.backends.llvm.depthwise_vnni import lower_depthwise_vnni, schedule_depthwise_vnni
from edgekit.compiler.backends.llvm.depthwise_vnni import lanes_of as depthwise_vnni_lanes
from edgekit.compiler.backends.llvm.depthwise_vnni import placed
from edgekit.compiler.relax_rewrite import bound_value, calls_rewrite_pass, is_call, round_up, static_shape
from edgekit.compiler.backends.llvm.schedule import (
    block_kinds,
    inline_epilogue,
    loop_extent,
    schedule_rest,
    schedule_tiled_reduction,
    vector_registers,
)

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = [
    "DOT_BLOCK_PREFIX",
    "depthwise_nhwc",
    "depthwise_on_vectors",
    "dot_schedule_rule",
    "int8_dot_pass",
    "pmaddubsw_exact",
    "schedule_dot",
]

logger = logging.getLogger(__name__)


#: Name prefix of the TE blocks :func:`int8_dot_pass` creates; the schedule rule finds them by it.
DOT_BLOCK_PREFIX = "ek_dot_"

#: The same instruction on half-width vectors (AVX-512VL), for layers with few output channels.
_HALF = {VNNI512: VNNI256, U8S8_512: U8S8_256, I16_512: I16_256}
#: The ``vpmaddubsw`` form of each int16 form, for layers whose weights cannot saturate it.
_U8S8 = {I16_256: U8S8_256, I16_512: U8S8_512}

def pmaddubsw_exact(w: np.ndarray) -> bool:
    """True if ``vpmaddubsw`` of any u8 activations with these weights cannot saturate.

    ``w`` is ``[..., K, N]`` (reduction axis, then output channels). The
    instruction multiplies 4 consecutive ``K`` per lane and sums the pairs
    ``(k0, k1)``, ``(k2, k3)`` in 16 bits; with activations in ``[0, 255]``
    a pair's sum lies in ``255 * [neg(w0) + neg(w1), pos(w0) + pos(w1)]``,
    which must stay inside ``[-32768, 32767]``. True for any 7-bit weights.
    """
    kdim = w.shape[-2]
    k_p = round_up(kdim, 2)
    pad = [(0, 0)] * w.ndim
    pad[-2] = (0, k_p - kdim)
    pairs = np.pad(w.astype(np.int64), pad)
    pairs = pairs.reshape(*w.shape[:-2], k_p // 2, 2, w.shape[-1])
    pos = np.clip(pairs, 0, None).sum(axis=-2)
    neg = np.clip(pairs, None, 0).sum(axis=-2)
    return bool(np.all(255 * pos <= 32767) and np.all(255 * neg >= -32768))


# --------------------------------------------------------------------------- #
# TE computes
# --------------------------------------------------------------------------- #


def _conv2d_dot(x: Any, wp: Any, strides: Any, dilation: Any, isa_name: str) -> Any:
    """``y[n, oy, ox, f] = sum x[n, oy*sh + ry*dh, ox*sw + rx*dw, c] * w[f, ry, rx, c]`` on blocked weights.

    ``x`` is the converted, already padded NHWC input (channels a multiple
    of ``k``); ``wp`` is ``[O/L, KH, KW, I/k, L, k]``.
    """
    from tvm import te

    n, h, w, _c = x.shape
    ob, kh, kw, cb, lanes, k = (int(v) for v in wp.shape)
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    oh = (int(h) - (kh - 1) * dh - 1) // sh + 1
    ow = (int(w) - (kw - 1) * dw - 1) // sw + 1
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rc = te.reduce_axis((0, cb), name="rc")
    rk = te.reduce_axis((0, k), name="rk")
    return te.compute(
        (n, oh, ow, ob * lanes),
        lambda nn, yy, xx, ff: te.sum(
            x[nn, yy * sh + ry * dh, xx * sw + rx * dw, rc * k + rk].astype("int32")
            * wp[ff // lanes, ry, rx, rc, ff % lanes, rk].astype("int32"),
            axis=[ry, rx, rc, rk],
        ),
        name=f"{DOT_BLOCK_PREFIX}{isa_name}_conv2d",
    )


def _depthwise_geometry(x: Any, w: Any, strides: Any, dilation: Any) -> tuple[Any, ...]:
    """``(n, c, (kh, kw), (sh, sw), (dh, dw), (oh, ow))`` of a depthwise conv of the padded NHWC ``x``."""
    n, h, wd, c = (int(v) for v in x.shape)
    kh, kw = int(w.shape[0]), int(w.shape[1])
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    return n, c, (kh, kw), (sh, sw), (dh, dw), ((h - (kh - 1) * dh - 1) // sh + 1, (wd - (kw - 1) * dw - 1) // sw + 1)


def depthwise_nhwc(x: Any, w: Any, strides: Any, dilation: Any, product: str = "int16", out: str = "int32") -> Any:
    """Depthwise NHWC conv of ``x`` (already padded) and ``w`` ``[KH, KW, 1, C]``.

    For int8 operands the products are taken in ``int16`` (an int8 x int8
    product always fits), so the multiply runs on twice the lanes of an
    int32 one (``vpmullw``/``smull``) and only the sum is widened. Float
    convolutions pass ``product = out = "float32"``.
    """
    from tvm import te

    n, c, (kh, kw), (sh, sw), (dh, dw), (oh, ow) = _depthwise_geometry(x, w, strides, dilation)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, oh, ow, c),
        lambda nn, yy, xx, cc: te.sum(
            (x[nn, yy * sh + ry * dh, xx * sw + rx * dw, cc].astype(product) * w[ry, rx, 0, cc].astype(product)).astype(
                out
            ),
            axis=[ry, rx],
        ),
        name=f"depthwise_conv2d_{product}",
    )


def depthwise_on_vectors(b: Any, call: Any, x: Any, w: Any, padded: int, product: str, out: str, name: str) -> Any:
    """An NHWC/HWIO depthwise ``conv2d`` call as :func:`depthwise_nhwc` on ``padded`` channels.

    The spatial padding and the extra channels (zero filters) are one pad of
    the input; the extra output channels are sliced off again.
    """
    from tvm.relax import op as R

    a = call.attrs
    c = int(w.ty.shape.values[3])
    pt, pl, pb, pr = (int(v) for v in a.padding)
    xp = x
    if any((pt, pl, pb, pr)) or padded != c:
        xp = b.emit(R.nn.pad(x, [0, 0, pt, pb, pl, pr, 0, padded - c], pad_value=0.0))
    wp = b.emit(R.nn.pad(w, [0, 0, 0, 0, 0, 0, 0, padded - c])) if padded != c else w
    y = b.emit(
        b.call_te(
            depthwise_nhwc, xp, wp, strides=list(a.strides), dilation=list(a.dilation), product=product, out=out,
            primfunc_name_hint=name,
        )
    )  # fmt: skip
    return R.strided_slice(y, axes=[3], begin=[0], end=[c]) if padded != c else y


def _matmul_dot(x: Any, wp: Any, isa_name: str) -> Any:
    """``y[..., f] = sum x[..., c] * w[c, f]`` with ``wp`` blocked ``[N/L, K/k, L, k]``."""
    from tvm import te

    *lead, _kdim = x.shape
    nb, kb, lanes, k = (int(v) for v in wp.shape)
    rc = te.reduce_axis((0, kb), name="rc")
    rk = te.reduce_axis((0, k), name="rk")
    return te.compute(
        (*lead, nb * lanes),
        lambda *i: te.sum(
            x[(*i[:-1], rc * k + rk)].astype("int32") * wp[i[-1] // lanes, rc, i[-1] % lanes, rk].astype("int32"),
            axis=[rc, rk],
        ),
        name=f"{DOT_BLOCK_PREFIX}{isa_name}_matmul",
    )


# --------------------------------------------------------------------------- #
# Relax rewrite
# --------------------------------------------------------------------------- #


class _Rewriter:
    """Builds the dot-product form of one int8 conv2d/matmul call."""

    #: Depthwise convolutions as four taps per ``vpdpbusd`` lane on blocks of this many channels
    #: (:mod:`edgekit.compiler.backends.llvm.depthwise_vnni`; 0: not on this target).
    dw_vnni = 0
    #: Depthwise convolutions of AVX2-only targets as two taps per ``vpmaddwd`` lane
    #: (``DW_I16_256``); False: the int16 tap pairs of :mod:`~edgekit.compiler.backends.llvm.depthwise_avx2`.
    dw_pairs_avx2 = True

    def __init__(self, isa: DotIsa, u8s8: DotIsa | None, resolve: Any = None, half_width: bool = False,
                 binding: Any = None) -> None:  # fmt: skip
        self.isa = isa
        self.u8s8 = u8s8  # the vpmaddubsw variant, for layers whose weights allow it
        self.resolve = resolve
        self.half_width = half_width  # AVX-512VL: each instruction's ymm form (_HALF), for layers of few outputs
        self.binding = binding  # the value bound to a variable (through aliases), if any

    def pick(self, weight: np.ndarray | None, channels: int) -> DotIsa:
        """The instruction for one layer with ``weight`` (``[..., K, N]``) and ``channels`` outputs.

        ``vpmaddubsw`` where provably exact (7-bit weights,
        :mod:`edgekit.compress.weight_bits`), unless its 4 products per lane
        would pad input channels that ``vpmaddwd``'s 2 do not: PP-OCR cls's
        squeeze-excite convs (2, 10, 22, 26, 50 channels, one pixel) then cost
        a pad kernel each and gain nothing (haswell code, one Zen 5 core:
        pads 14.2 -> 6.8 us, all kernels 547 -> 541 us). Half-width vectors
        only where they take no more instructions (8 channels: one vector
        either way). Choosing them whenever they padded fewer channels (200
        channels: 25 8-lane vectors instead of 13 16-lane ones) made PP-OCR
        cls's wide 1x1 convs 1.8x slower on Zen 5. A ``vpmaddubsw zmm``
        layer (AVX512BW) takes the ``ymm`` form by the same rule.
        """
        wide = self.isa
        if self.u8s8 is not None and weight is not None and pmaddubsw_exact(weight):
            reduction = weight.shape[-2]
            if not reduction % self.u8s8.k or reduction % self.isa.k:
                wide = self.u8s8
        narrow = _HALF.get(wide) if self.half_width else None
        if narrow is not None and -(-channels // narrow.lanes) <= -(-channels // wide.lanes):
            return narrow
        return wide

    def activations(self, b: Any, x: Any, isa: DotIsa, axis_pad: list[int]) -> Any:
        """Converts int8 activations to the ISA's operand type and pads them (``axis_pad`` as nn.pad).

        Where only channels are padded and ``x`` is itself a constant pad (the
        lowering's spatial pad with the zero point), they are padded in int8 before the
        conversion, so the two pads are one pad kernel
        (:mod:`edgekit.compiler.backends.llvm.pad`): padded after it, a
        ragged channel count (23 channels of a pruned layer) cost a third
        kernel. Elsewhere the conversion comes first (the first layer's
        input kernel, :mod:`edgekit.compiler.backends.llvm.int8_input`,
        matches that order).
        """
        from tvm import relax
        from tvm.relax import op as R

        inner = self.binding(x) if self.binding is not None else None
        channels_only = any(axis_pad) and not any(axis_pad[:-1])
        if channels_only and is_call(inner, "relax.nn.pad") and str(inner.attrs.pad_mode) == "constant":
            # Any value in the extra channels meets zero weights; the inner pad's
            # value lets the pad pass merge the two.
            x = b.emit(R.nn.pad(x, axis_pad, pad_value=float(inner.attrs.pad_value)))
            axis_pad = [0] * len(axis_pad)
        if isa.operand == "uint8":
            xu = b.emit(R.astype(R.add(R.astype(x, "int16"), relax.const(128, "int16")), "uint8"))
        else:
            xu = b.emit(R.astype(x, "int16"))
        if any(axis_pad):
            # Padding means int8 0, i.e. isa.offset in the converted operand
            # (the lowering pads with the zero point itself when it is not 0).
            xu = b.emit(R.nn.pad(xu, axis_pad, pad_value=float(isa.offset)))
        return xu

    @staticmethod
    def finish(b: Any, y: Any, w: Any, isa: DotIsa, reduce_axes: list[int], channels: int) -> Any:
        """Removes the activation offset's share of ``y`` and slices the padded output channels off.

        ``sum((x + 128) * w) = sum(x * w) + 128 * sum(w)``: the second term is
        a weight-only constant per output channel (lifted to compile time).
        """
        from tvm import relax
        from tvm.relax import op as R

        padded = int(y.ty.shape.values[-1])
        if isa.offset:
            wsum = b.emit(R.sum(R.astype(w, "int32"), axis=reduce_axes))
            correction = R.nn.pad(R.multiply(wsum, relax.const(isa.offset, "int32")), [0, padded - channels])
            y = b.emit(R.subtract(y, correction))
        if padded != channels:
            y = b.emit(R.strided_slice(y, axes=[int(y.ty.ndim) - 1], begin=[0], end=[channels]))
        return y

    def weight(self, expr: Any) -> np.ndarray | None:
        """The compile-time value of a weight expression (a parameter, possibly transposed), or None."""
        return self.resolve(expr) if self.resolve is not None else None

    def conv2d(self, b: Any, call: Any) -> Any:
        from tvm.relax import op as R

        a = call.attrs
        if (a.data_layout, a.kernel_layout, a.out_layout) != ("NHWC", "HWIO", "NHWC") or int(a.groups) != 1:
            return None
        if str(a.out_dtype) != "int32":
            return None
        x, w = call.args
        xs, ws = static_shape(x, "int8"), static_shape(w, "int8")
        if xs is None or ws is None:
            return None
        kh, kw, ci, co = ws
        isa = self.pick(self.weight(w), co)
        lanes, k = isa.lanes, isa.k
        ci_p, co_p = round_up(ci, k), round_up(co, lanes)
        pt, pl, pb, pr = (int(v) for v in a.padding)
        # Extra input channels meet zero weights.
        xu = self.activations(b, x, isa, [0, 0, pt, pb, pl, pr, 0, ci_p - ci])
        wq = w if isa.weight_dtype == "int8" else b.emit(R.astype(w, "int16"))
        if ci_p != ci or co_p != co:
            wq = b.emit(R.nn.pad(wq, [0, 0, 0, 0, 0, ci_p - ci, 0, co_p - co]))
        w6 = b.emit(R.reshape(wq, (kh, kw, ci_p // k, k, co_p // lanes, lanes)))
        wp = b.emit(R.permute_dims(w6, [4, 0, 1, 2, 5, 3]))
        y = b.emit(
            b.call_te(
                _conv2d_dot, xu, wp, strides=list(a.strides), dilation=list(a.dilation), isa_name=isa.name,
                primfunc_name_hint=f"conv2d_{isa.name}",
            )
        )  # fmt: skip
        return self.finish(b, y, w, isa, [0, 1, 2], co)

    def depthwise(self, b: Any, call: Any) -> Any:
        """Depthwise int8 conv: channels padded to whole vectors, int16 products."""
        a = call.attrs
        if (a.data_layout, a.kernel_layout, a.out_layout) != ("NHWC", "HWIO", "NHWC") or str(a.out_dtype) != "int32":
            return None
        x, w = call.args
        xs, ws = static_shape(x, "int8"), static_shape(w, "int8")
        if xs is None or ws is None:
            return None
        _kh, _kw, one, c = ws
        if one != 1 or int(a.groups) != c or xs[3] != c:
            return None
        if self.dw_vnni:
            vnni = lower_depthwise_vnni(b, call, x, w, self.binding, self.dw_vnni)
            if vnni is not None:
                return vnni
        # Two taps per vpmaddwd lane, on AVX-512 (16 lanes) and on AVX2-only
        # targets (8 lanes: DW_I16_256). On AVX2 the two pixels' bytes are
        # interleaved before the one widening and a register tile of pixels of
        # one channel vector shares the interleaved pairs (depthwise_pairs.depthwise_rows);
        # widening each pixel and interleaving int16 vectors per output, as
        # first tried, cost as much as it saved (PP-OCR cls's depthwise
        # kernels, haswell code on Zen 5: 185 us against 170 us multiplying
        # in int16). Dilated kernels keep the int16 tap pairs (depthwise_avx2).
        if [int(v) for v in a.dilation] == [1, 1] and self.isa.lanes == 16:
            return self.depthwise_pairs(b, call, x, w)
        if [int(v) for v in a.dilation] == [1, 1] and self.isa is I16_256 and self.dw_pairs_avx2:
            return self.depthwise_pairs(b, call, x, w, DW_I16_256)
        weight = self.weight(w)
        if weight is not None:
            paired = lower_depthwise(b, call, x, w, weight, self.merged_pad_value(x), self.isa.lanes)
            if paired is not None:
                return paired
        return depthwise_on_vectors(b, call, x, w, round_up(c, self.isa.lanes), "int16", "int32", "depthwise_conv2d_i16")

    def merged_pad_value(self, x: Any) -> float:
        """The value of the constant pad ``x`` is (the lowering's zero-point pad), else 0.

        A pad of a pad with the same value is one pad kernel (:mod:`edgekit.compiler.backends.llvm.pad`);
        what the extra column and channels hold does not matter (they meet zero weights).
        """
        inner = self.binding(x) if self.binding is not None else None  # through alias bindings (y = x)
        if is_call(inner, "relax.nn.pad") and str(inner.attrs.pad_mode) == "constant":
            return float(inner.attrs.pad_value)
        return 0.0

    def depthwise_pairs(self, b: Any, call: Any, x: Any, w: Any, isa: DotIsa = DW_I16_512) -> Any:
        """Depthwise int8 conv, two taps per ``vpmaddwd`` lane (:func:`.depthwise_pairs.lower_pairs`)."""
        return lower_pairs(b, call, x, w, isa, self.merged_pad_value(x), DOT_BLOCK_PREFIX)

    def matmul(self, b: Any, call: Any) -> Any:
        from tvm.relax import op as R

        if str(call.attrs.out_dtype) != "int32":
            return None
        x, w = call.args
        xs, ws = static_shape(x, "int8"), static_shape(w, "int8")
        if xs is None or ws is None or len(ws) != 2:
            return None
        kdim, n = ws
        isa = self.pick(self.weight(w), n)
        lanes, k = isa.lanes, isa.k
        # Fewer outputs than one vector (a classifier's last Gemm): the generic
        # kernel. Padded onto one vector, the digits CNN's 10-output Gemm made
        # the model 1.034x slower (Zen 5, tree_ab, outputs equal): its operand
        # conversion costs more than the products it saves.
        if n < lanes:
            return None
        k_p, n_p = round_up(kdim, k), round_up(n, lanes)
        pad = [0] * (2 * len(xs))
        pad[-1] = k_p - kdim
        xu = self.activations(b, x, isa, pad)
        wq = w if isa.weight_dtype == "int8" else b.emit(R.astype(w, "int16"))
        if k_p != kdim or n_p != n:
            wq = b.emit(R.nn.pad(wq, [0, k_p - kdim, 0, n_p - n]))
        w4 = b.emit(R.reshape(wq, (k_p // k, k, n_p // lanes, lanes)))
        wp = b.emit(R.permute_dims(w4, [2, 0, 3, 1]))
        y = b.emit(b.call_te(_matmul_dot, xu, wp, isa_name=isa.name, primfunc_name_hint=f"matmul_{isa.name}"))
        return self.finish(b, y, w, isa, [0], n)


def _weight_value(m: Any, expr: Any, values: dict[str, np.ndarray]) -> np.ndarray | None:
    """The value of a weight parameter (``values`` by name), possibly under ``permute_dims``; None if unknown."""
    from tvm import relax

    if isinstance(expr, relax.Var) and expr.name in values:
        value = values[expr.name]
        t = expr.ty
        shape = [int(v) for v in t.shape.values] if isinstance(t, relax.TensorType) and t.shape is not None else None
        return value if shape == list(value.shape) else None
    bound = bound_value(m, expr)
    if is_call(bound, "relax.permute_dims"):
        inner = _weight_value(m, bound.args[0], values)
        axes = bound.attrs.axes
        if inner is None:
            return None
        return np.transpose(inner, None if axes is None else [int(v) for v in axes])
    return None


def int8_dot_pass(target: tvm.target.Target, params: dict[str, np.ndarray] | None = None) -> Any:
    """A Relax pass rewriting int8 x int8 -> int32 NHWC conv2d and 2-D-weight matmul to dot-product kernels.

    Runs after ``ConvertLayout`` (convolutions NHWC/HWIO). A no-op when the
    target has no supported instruction (:func:`dot_isa` is None).

    Args:
        target: The compilation target.
        params: Weight values by ``main`` parameter name, if known: needed
            only to prove that a layer may use ``vpmaddubsw`` on AVX2 and AVX512BW.
    """
    import tvm

    isa = dot_isa(target)
    if isa is None:
        return tvm.transform.Sequential([], name="EdgekitInt8Dot")
    values = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in (params or {}).items()}

    def conv2d(m: Any, call: Any) -> Any:
        new = m.rw.conv2d(m.builder_, call)
        return m.rw.depthwise(m.builder_, call) if new is None else new

    def setup(mutator: Any) -> None:
        resolve = (lambda e: _weight_value(mutator, e, values)) if values else None
        mutator.rw = _Rewriter(isa, _U8S8.get(isa), resolve, isa in _HALF and has_feature(target, "avx512vl"),
                               lambda e: bound_value(mutator, e))  # fmt: skip
        mutator.rw.dw_vnni = depthwise_vnni_lanes(target)

    rewrites = {"relax.nn.conv2d": conv2d, "relax.matmul": lambda m, call: m.rw.matmul(m.builder_, call)}
    return calls_rewrite_pass(rewrites, "EdgekitInt8Dot", setup)


# --------------------------------------------------------------------------- #
# Schedule
# --------------------------------------------------------------------------- #

#: TVM places an accumulator tile on the stack only when it is smaller than this
#: (its ``kMaxStackAlloca``, compared with ``<``); a tile of exactly 1 KiB became a
#: workspace allocated and freed per tile.
STACK_TILE_BYTES = 1024

_ISAS = {i.name: i for i in (VNNI512, VNNI256, U8S8_512, U8S8_256, I16_512, I16_256, DW_I16_512, DW_I16_256, DW_ROWS_256)}


def _dot_block(sch: Any) -> tuple[Any, DotIsa] | None:
    from tvm.s_tir.dlight.analysis import get_root_block

    for block in sch.get_child_blocks(get_root_block(sch)):
        name = sch.get(block).name_hint
        if name.startswith(DOT_BLOCK_PREFIX):
            isa_name = name[len(DOT_BLOCK_PREFIX) :].rsplit("_", 1)[0]
            if isa_name in _ISAS:
                return block, _ISAS[isa_name]
    return None


def _has_block(sch: Any, name: str) -> bool:
    from tvm.s_tir.dlight.analysis import get_root_block

    return any(sch.get(b).name_hint == name for b in sch.get_child_blocks(get_root_block(sch)))


def _tile(vec_blocks: int, rows: int, isa: DotIsa) -> tuple[int, int]:
    """``(vectors, rows)`` of the accumulator tile.

    Rows must divide the row extent: tensorize cannot match a block under a
    tail predicate. Among those tiles: enough independent accumulators to
    hide the instruction's latency (about 12), then the fewest loads per
    instruction (``(rows + vectors) / (rows * vectors)``), within the
    registers left after the broadcast input and the tile's weight vectors
    (one per vector of the tile). With one weight register counted, AVX2's
    16 registers took 7 x 2 tiles (14 accumulators, 17 live vectors): LLVM
    spilled two accumulators per step and, once the dot-product operand was an
    expression (no longer a heap buffer), rotated the rest through register
    copies every iteration (ResNet-50 int8 in haswell code 1.21x slower).
    """
    # TVM keeps a tile under 1 KiB on the stack (LLVM then promotes it to
    # registers); from 1 KiB on it became a TVMBackendAllocWorkspace call per
    # tile ("local" scope measured 10x slower still). The depthwise tap pairs'
    # 4 x 4 tile was exactly 1 KiB: PP-OCR det's 192-channel 3x3 layer 23.7 ->
    # 15.8 us with 15 accumulators (one Zen 5 core); the dense convs' long
    # reductions hide the call (cls 0.99x, SqueezeNet 1.00x).
    best: tuple[float, float, int, int] = (-1.0, 0.0, 1, 1)
    for vectors in (4, 2, 1):
        if vec_blocks % vectors:
            continue
        budget = min(isa.registers - vectors - 1, (STACK_TILE_BYTES - 1) // (4 * isa.lanes))
        for r in range(1, min(rows, 14) + 1):
            acc = r * vectors
            if rows % r or acc > budget:
                continue
            key = (min(acc, 12) / 12.0, -(r + vectors) / acc)
            if key > best[:2]:
                best = (*key, vectors, r)
    return best[2], best[3]


#: Fewest output channels whose sliced epilogue goes into the write-back (:func:`_inline_sliced_epilogue`).
MIN_INLINED_CHANNELS = 8


def _inline_sliced_epilogue(sch: Any, acc: Any) -> None:
    """Moves the epilogue of a layer with ragged output channels into the tile's write-back.

    The padded output channels are sliced off in the epilogue, which
    :func:`~edgekit.compiler.backends.llvm.schedule.inline_epilogue` leaves
    as a loop of its own (TVM 0.27 drops the row bound of a tile that does
    not divide the rows): the whole padded int32 result went through memory
    once more (issue #14 item 6). Here the tile's rows divide the rows and
    its vectors the vectors (:func:`_tile`), so the channel bound is the
    only one, and TVM keeps it. Called only where one tile spans all
    channels, so that bound is known per lane at compile time: with several
    tiles across the channels LLVM masked every tile's loads and stores
    (PP-OCR cls's 88- and 200-channel layers 5-18 % slower). LLVM writes a
    ragged vector as power-of-two pieces, those under 4 lanes one by one: a
    layer of fewer than :data:`MIN_INLINED_CHANNELS` channels keeps the
    separate loop, which runs over whole rows of pixels. One Zen 5 core,
    1x1 convs at 12x96: 12 and 14 of 16 channels 2.3 -> 1.8 us, 20 of 32
    5.2 -> 4.6; 7 of 8 2.5 -> 3.4 and 6 of 8 2.7 -> 4.1 (hence the limit).
    """
    consumers = list(sch.get_consumers(acc))
    if len(consumers) != 1:
        return
    if int(sch.get(consumers[0]).writes[0].source.shape[-1]) < MIN_INLINED_CHANNELS:
        return
    try:
        sch.reverse_compute_inline(consumers[0])
    except Exception as exc:  # the separate epilogue loop stands, exact and slower
        logger.debug("sliced epilogue not inlined (%s)", str(exc).splitlines()[0][:200])


def schedule_dot(sch: Any, block: Any, isa: DotIsa) -> None:
    """Register-tiles a dot-product block and tensorizes its innermost ``L x k`` step."""
    loops = sch.get_loops(block)
    kinds = block_kinds(sch, block)
    spatial = [lp for lp, kd in zip(loops, kinds) if kd == "S"]
    reduce_ = [lp for lp, kd in zip(loops, kinds) if kd == "R"]
    vec_loop = spatial[-1]
    rk = reduce_[-1]
    vec_ext = loop_extent(sch, vec_loop)
    row_loop = spatial[-2] if len(spatial) >= 2 else None
    row_ext = loop_extent(sch, row_loop) if row_loop is not None else 1
    vectors, rows = _tile(vec_ext // isa.lanes, row_ext or 1, isa)
    if isa in (DW_I16_256, DW_ROWS_256):
        vectors, rows = 1, depthwise_rows(row_ext or 1)
    vo, vv, vi = sch.split(vec_loop, factors=[None, vectors, isa.lanes])
    outer = spatial[:-2] if row_loop is not None else spatial[:-1]
    if row_loop is not None:
        ro, ri = sch.split(row_loop, factors=[None, rows])
        outer = outer + [ro]
        inner = [ri, vv]
    else:
        inner = [vv]
    sch.reorder(*outer, vo, *reduce_[:-1], *inner, vi, rk)
    fused = sch.fuse(*outer, vo)
    acc = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, fused, preserve_unit_loops=True)
    inline_epilogue(sch, acc)
    if vectors * isa.lanes == vec_ext or placed(sch, acc):
        # One tile spans the channels (its bound on them is per lane, static), or the
        # epilogue writes a depthwise conv's blocked input over the conv's own domain.
        _inline_sliced_epilogue(sch, acc)
    schedule_rest(sch, isa.lanes, skip=block)
    acc_loops = sch.get_loops(acc)[1:]
    if acc_loops:
        last = acc_loops[-1]
        ext = loop_extent(sch, last)
        if ext and ext % isa.lanes == 0:
            if ext > isa.lanes:
                last = sch.split(last, factors=[None, isa.lanes])[1]
            sch.vectorize(last)
    for lp in inner:
        if (loop_extent(sch, lp) or 1) > 1:
            sch.unroll(lp)
    if isa in (DW_I16_256, DW_ROWS_256) and len(reduce_) == 3:
        # The taps of one kernel row (or row pair) unrolled: a pixel's tap and its
        # neighbour's next tap read the same input pair, which LLVM builds once.
        sch.unroll(reduce_[1])
    sch.parallel(fused)
    sch.decompose_reduction(block, reduce_[0] if len(reduce_) > 1 else vi)
    sch.tensorize(vi, isa.intrin, preserve_unit_iters=True)


def dot_schedule_rule() -> Any:
    """A dlight rule scheduling the functions :func:`int8_dot_pass` created (None for any other)."""
    from tvm import s_tir, tirx
    from tvm.s_tir import dlight

    class CpuDotProduct(dlight.ScheduleRule):
        def apply(self, func: Any, target: Any, tunable: bool) -> Any:
            if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
                return None
            sch = s_tir.Schedule(func)
            if _has_block(sch, DW_VNNI_BLOCK):
                try:
                    schedule_depthwise_vnni(sch, sch.get_sblock(DW_VNNI_BLOCK))
                except Exception as exc:  # the default rule schedules it then (slow, still exact)
                    logger.warning("vpdpbusd depthwise schedule failed (%s); default schedule used", exc)
                    return None
                return sch
            if _has_block(sch, DW_PAIRS_X16):
                # 16 channels per step: each accumulator takes two ymm registers.
                try:
                    return sch if schedule_tiled_reduction(sch, 16, vector_registers(target) // 2) else None
                except Exception as exc:  # the default rule (8 lanes) schedules it then
                    logger.warning("16-channel depthwise schedule failed (%s); 8 lanes used", exc)
                    return None
            found = _dot_block(sch)
            if found is None:
                return None
            register_intrinsics()
            block, isa = found
            try:
                schedule_dot(sch, block, isa)
            except Exception as exc:
                logger.warning("int8 dot-product schedule failed (%s); generic integer kernel used", exc)
                return None
            return sch

    return CpuDotProduct()

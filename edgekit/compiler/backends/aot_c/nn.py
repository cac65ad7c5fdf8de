"""Route int8 conv2d / depthwise / matmul chains to edgekit's C kernels.

The integer lowering (:mod:`edgekit.compiler.integer`) turns a quantized
layer into ``conv2d|matmul (int8 -> int32) + offset``, the requantization of
:func:`~edgekit.compiler.integer.requant.emit_requantize` and a clamp. TVM
compiles that chain for a microcontroller into plain loop nests (no SMLAD, no
register blocking, a separate pad kernel). :func:`offload_int8` replaces each
such chain, before legalization, by one ``call_dps_packed`` of ``ek_nn_s8``
(``firmware_stubs/nn/ek_nn_s8.c``) with three constant arguments: the
weights packed for the target's inner kernel, an int32 parameter block
(shapes, strides, padding, the input zero point, clamp) followed by the
per-channel offset, multiplier and shift, and a scratch output for the
im2col columns. The arithmetic is the chain's own, so outputs stay bit-exact
with the integer lowering. A chain the kernels do not cover (dilation, NHWC,
batch > 1, other groups) stays with TVM.

:mod:`~edgekit.compiler.backends.aot_c.graph` records the call as an extern kernel and
:mod:`~edgekit.compiler.backends.aot_c.emit` appends the C source to ``model.c``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.compiler.backends.aot_c.fold import fold_int8_chains
from edgekit.compiler.backends.aot_c.nn_rv64 import RVV_BLOCK, dw_scratch_bytes, pack_rows, pack_rvv, run_length
from edgekit.core.fixedpoint import dot_bound, ties_possible
from edgekit.core.resources import data_dir

__all__ = [
    "EXTERN_KERNEL",
    "LUT_KERNEL",
    "SUM_KERNEL",
    "QUANTIZE_KERNEL",
    "MUL_KERNEL",
    "IN_PLACE",
    "NP",
    "uses_dsp",
    "uses_neon",
    "uses_sdot",
    "uses_rv64",
    "uses_rvv",
    "offload_int8",
    "kernel_source",
]

logger = logging.getLogger(__name__)

#: Symbols of the C entry points (packed-call signature, like TVM's kernels).
EXTERN_KERNEL = "ek_nn_s8"
LUT_KERNEL = "ek_nn_lut_s8"
SUM_KERNEL = "ek_nn_sum_s8"
QUANTIZE_KERNEL = "ek_nn_quantize_s8"
MUL_KERNEL = "ek_nn_mul_s8"
#: Kernels that may write their output over their input: name -> (input
#: argument, output argument). The arena planner places the output within
#: the input when the input dies at that call (layout.arena_buffers).
IN_PLACE = {QUANTIZE_KERNEL: (0, 2)}
#: Pixels per register block of the generic kernel (``EK_NN_NP`` in the C source).
NP = 6
#: Largest reduction the float-accumulating generic kernel takes exactly
#: (|x * w| <= 2^14, partial sums stay integers below 2^24).
MAX_FLOAT_K = 1024
#: The generic kernel's fast (MAC-type) im2col columns are used unless they
#: would add more than this share of the model's activation bytes to the arena.
MAX_SCRATCH_SHARE = 0.25

_CONV, _DEPTHWISE, _MATMUL = 0, 1, 2
_HDR = 22  # EK_NN_HDR
_LUT_FIELD = 20  # EK_NN_LUT: where the output table starts in the block (0: none)
_COLS_FIELD = 21  # EK_NN_COLS: 1 = int8 im2col columns (generic kernel)


def uses_dsp(tvm_target: Any) -> bool:
    """True when the target is a Cortex-M with the DSP extension (SMLAD)."""
    attrs = tvm_target.attrs
    triple = str(attrs.get("mtriple", ""))
    mattr = [str(a) for a in attrs.get("mattr", [])]
    if "-dsp" in mattr:
        return False
    if triple.startswith("thumbv7em"):
        return True
    mcpu = str(attrs.get("mcpu", ""))
    return triple.startswith("thumbv8m.main") and ("+dsp" in mattr or mcpu in ("cortex-m33", "cortex-m35p", "cortex-m55", "cortex-m85"))


def uses_neon(tvm_target: Any) -> bool:
    """True when the target is aarch64 with NEON (the C kernels' integer inner kernels, exact for any K)."""
    attrs = tvm_target.attrs
    mattr = [str(a) for a in attrs.get("mattr", [])]
    return str(attrs.get("mtriple", "")).startswith("aarch64") and "-neon" not in mattr


def uses_sdot(tvm_target: Any) -> bool:
    """True when the target is aarch64 with NEON and the dot-product extension
    (TVM's ``feature.has_dotprod`` from its mcpu/mattr, e.g. cortex-a76): the
    C kernels' SDOT conv/matmul inner kernels and their weight layout."""
    return uses_neon(tvm_target) and bool(tvm_target.attrs.get("feature.has_dotprod", False))


def uses_rv64(tvm_target: Any) -> bool:
    """True when the target is riscv64 (the C kernels' packed-int64 conv/matmul kernels, nn_rv64)."""
    return str(tvm_target.attrs.get("mtriple", "")).startswith("riscv64")


def uses_rvv(tvm_target: Any) -> bool:
    """True when the target is riscv64 with the V extension and vectors of 256 bits or more
    (LLVM's features of its mcpu/mattr, e.g. spacemit-x60: ``v``, ``zvl256b``): the C kernels'
    RVV conv/matmul kernels and their weight layout (:func:`~edgekit.compiler.backends.aot_c.nn_rv64.pack_rvv`)."""
    from tvm.target import codegen

    return uses_rv64(tvm_target) and bool(codegen.target_has_features(["v", "zvl256b"], tvm_target))


def kernel_source(dsp: bool, neon: bool = False, rv64: bool = False, sdot: bool = False, rvv: bool = False) -> str:
    """The C text appended to ``model.c`` when a model calls the kernels."""
    path = data_dir("firmware_stubs") / "nn" / "ek_nn_s8.c"
    # The weights were packed for one inner kernel: a model.c compiled for
    # another core (no DSP where DSP was assumed, or the reverse) must not build;
    # nor one routed as NEON or RV64 (reductions over MAX_FLOAT_K) built without it;
    # nor SDOT-packed weights (or NEON-packed ones) built for a CPU without (with) dot products.
    return (
        f"#define EK_NN_NP {NP}\n#define EK_NN_EXPECT_DSP {int(dsp)}\n#define EK_NN_EXPECT_NEON {int(neon)}\n"
        f"#define EK_NN_EXPECT_RV64 {int(rv64)}\n#define EK_NN_EXPECT_SDOT {int(sdot)}\n#define EK_NN_EXPECT_RVV {int(rvv)}\n"
        f"{path.read_text(encoding='utf-8')}\n"
        "#if EK_NN_DSP != EK_NN_EXPECT_DSP || EK_NN_NEON != EK_NN_EXPECT_NEON || EK_NN_RV64 != EK_NN_EXPECT_RV64 || \\\n"
        "    EK_NN_SDOT != EK_NN_EXPECT_SDOT || EK_NN_RVV != EK_NN_EXPECT_RVV\n"
        '#error "ek_nn_s8: weights were packed for another kernel; compile model.c with the target\'s -mcpu"\n'
        "#endif\n"
    )


@dataclass
class _Chain:
    kind: int
    x: Any
    w: np.ndarray  # OIHW (conv) or [K, N] (matmul), int8
    out: Any  # the final astype call (for its struct info)
    pads: tuple[int, int]  # top, left
    pad_value: int
    strides: tuple[int, int]
    offset: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    zero_point: int
    qmin: int
    qmax: int


def _call(expr: Any, var2val: dict, name: str) -> Any:
    from tvm import relax

    if isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == name:
        return expr
    return None


def _const(expr: Any, var2val: dict) -> np.ndarray | None:
    import tvm
    from tvm import relax

    if isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    perm = _call(expr, {}, "relax.permute_dims")
    if perm is not None:
        inner = _const(perm.args[0], var2val)
        if inner is None:
            return None
        axes = perm.attrs.axes
        return np.transpose(inner, None if axes is None else [int(a) for a in axes])
    return None


def _round_shift(expr: Any, var2val: dict) -> tuple[Any, np.ndarray | None]:
    """``(x, shift)`` if ``expr`` is the lowering's rounding shift of ``x`` (half to even), else ``(expr, None)``."""
    from tvm import relax

    from edgekit.compiler.integer.requant import match_round_shift

    def bound(e: Any) -> Any:
        return var2val[e] if isinstance(e, relax.Var) and e in var2val else e

    found = match_round_shift(expr, bound, lambda e: _const(e, var2val))
    return (expr, None) if found is None else found


def _kernel_shifts(mult: np.ndarray, shift: np.ndarray, acc_bound: np.ndarray | int) -> np.ndarray:
    """The shifts as the C kernels take them: ``n``, or ``n + 64`` for ``n > 32``
    where a product of an accumulator ``|a| <= acc_bound`` can be exactly
    half-way (:func:`~edgekit.core.fixedpoint.ties_possible`).

    Flagged channels round from the product's words, ties to even; every other
    ``n > 32`` rounds the product's high word half up, one add (SMMLA), which
    is then the same value. The bound is the layer's own, as the integer
    lowering's (a conv's :func:`~edgekit.core.fixedpoint.dot_bound`, a
    multiply's ``255**2``), not an int32's.
    """
    n = np.asarray(shift, dtype=np.int64)
    return np.where((n > 32) & ties_possible(mult, n, acc_bound), n + 64, n)


def _acc_bound(chain: _Chain) -> np.ndarray:
    """Largest ``|acc + offset|`` of a conv/matmul chain, per output channel."""
    from edgekit.compiler.integer.requant import value_bound  # imports tvm (the package's lowering)

    axis = 0 if chain.kind == _MATMUL else (1, 2, 3)
    return dot_bound(chain.w, axis, value_bound(chain.x), chain.offset)


def _per_channel(v: np.ndarray | None, channels: int, default: int) -> np.ndarray | None:
    if v is None:
        return np.full(channels, default, np.int64)
    flat = np.asarray(v).reshape(-1)
    if flat.size == 1:
        return np.full(channels, int(flat[0]), np.int64)
    if flat.size == channels:
        return flat.astype(np.int64)
    return None


def _optional(expr: Any, var2val: dict, op: str) -> tuple[Any, np.ndarray | None]:
    """``(input, constant)`` if ``expr`` is ``op(input, constant)``, else ``(expr, None)``."""
    call = _call(expr, var2val, op)
    if call is not None:
        c = _const(call.args[1], var2val)
        if c is not None:
            return call.args[0], c
    return expr, None


def _match(out: Any, var2val: dict, dsp: bool, any_k: bool = False) -> _Chain | None:
    """The conv2d/matmul requantization chain ending in ``out`` (an astype to int8), or None."""
    if str(out.attrs.dtype) != "int8":
        return None
    clip = _call(out.args[0], var2val, "relax.clip")
    if clip is None:
        return None
    qmin, qmax = int(clip.args[1].value), int(clip.args[2].value)  # prim values (IntImm)
    e, zp = _optional(clip.args[0], var2val, "relax.add")
    e, shift = _round_shift(e, var2val)
    e, mult = _optional(e, var2val, "relax.multiply")
    cast = _call(e, var2val, "relax.astype")
    if mult is None or cast is None or str(cast.attrs.dtype) != "int64":
        return None
    e, offset = _optional(cast.args[0], var2val, "relax.add")
    conv = _call(e, var2val, "relax.nn.conv2d")
    mm = _call(e, var2val, "relax.matmul")
    core = conv if conv is not None else mm
    if core is None or str(core.attrs.out_dtype) != "int32":
        return None
    x, w_expr = core.args
    w = _const(w_expr, var2val)
    if w is None or w.dtype != np.int8 or str(x.ty.dtype) != "int8":
        return None
    if zp is not None and np.asarray(zp).size != 1:
        return None
    pads, pad_value, strides = (0, 0), 0, (1, 1)
    if conv is not None:
        a = conv.attrs
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW"):
            return None
        if any(int(d) != 1 for d in a.dilation) or int(x.ty.shape[0]) != 1:
            return None
        groups, cin = int(a.groups), int(x.ty.shape[1])
        if groups == 1:
            kind = _CONV
        elif groups == cin == w.shape[0] and w.shape[1] == 1:
            kind = _DEPTHWISE
        else:
            return None
        top, left, bottom, right = (int(v) for v in a.padding)
        pad = _call(x, var2val, "relax.nn.pad")
        if pad is not None:
            if any((top, left, bottom, right)) or str(pad.attrs.pad_mode) != "constant":
                return None
            widths = [int(v) for v in pad.attrs.pad_width]
            if any(widths[:4]) or len(widths) != 8:
                return None
            top, bottom, left, right = widths[4:]
            pad_value = int(float(pad.attrs.pad_value))
            x = pad.args[0]
        pads, strides = (top, left), (int(a.strides[0]), int(a.strides[1]))
        channels = w.shape[0]
    else:
        if w.ndim != 2 or len(x.ty.shape) < 1:
            return None
        kind, channels = _MATMUL, w.shape[1]
    per = [_per_channel(v, channels, d) for v, d in ((offset, 0), (mult, 0), (shift, 0))]
    if any(p is None for p in per):
        return None
    offset_v, mult_v, shift_v = per
    # The C kernel derives the tie constants from the shift, as core/fixedpoint.py does
    # (_round_shift checked that the chain's constants are those).
    if np.any(np.abs(mult_v) >= 2**31) or np.any((shift_v < 0) | (shift_v > 62)):
        return None
    k = int(np.prod(w.shape[1:])) if conv is not None else w.shape[0]
    # The generic kernel accumulates in float32 (exact up to MAX_FLOAT_K); the
    # DSP, NEON and RV64 ones in int32 (``any_k``).
    if not dsp and not any_k and kind != _DEPTHWISE and k > MAX_FLOAT_K:
        return None
    return _Chain(kind, x, w, out, pads, pad_value, strides, offset_v, mult_v, shift_v,
                  0 if zp is None else int(np.asarray(zp).reshape(-1)[0]), qmin, qmax)  # fmt: skip


def _pack_weights(chain: _Chain, dsp: bool, sdot: bool = False) -> tuple[np.ndarray, int, int]:
    """Weights in the inner kernel's order; returns ``(packed, K, K padded)``."""
    if chain.kind == _DEPTHWISE:
        return np.ascontiguousarray(chain.w).reshape(-1), int(np.prod(chain.w.shape[1:])), 0
    rows = chain.w.reshape(chain.w.shape[0], -1) if chain.kind == _CONV else chain.w.T  # [OC, K]
    oc, k = rows.shape
    if dsp:  # [ceil(OC/2)][KP/4][2][4]
        kp = -(-k // 4) * 4
        full = np.zeros((-(-oc // 2) * 2, kp), np.int8)
        full[:oc, :k] = rows
        packed = full.reshape(-1, 2, kp // 4, 4).transpose(0, 2, 1, 3)
        return np.ascontiguousarray(packed).reshape(-1), k, kp
    if sdot:  # [ceil(OC/4)][KP/4][4 channels][4 k]: one SDOT operand per 16 bytes
        kp = -(-k // 4) * 4
        full = np.zeros((-(-oc // 4) * 4, kp), np.int8)
        full[:oc, :k] = rows
        packed = full.reshape(-1, 4, kp // 4, 4).transpose(0, 2, 1, 3)
        return np.ascontiguousarray(packed).reshape(-1), k, kp
    full = np.zeros((-(-oc // 4) * 4, k), np.int8)  # [ceil(OC/4)][K][4]
    full[:oc] = rows
    packed = full.reshape(-1, 4, k).transpose(0, 2, 1)
    return np.ascontiguousarray(packed).reshape(-1), k, k


def _gather_table(chain: _Chain, xs: list[int], k: int, kp: int, dsp: bool) -> np.ndarray:
    """im2col table: input offset of each k from the window's corner, then
    its kernel row | column << 16, in the order the inner kernel reads k
    (for DSP each group of four as k0, k2, k1, k3; padding entries read
    offset 0 and a row far outside the input)."""
    if chain.kind == _MATMUL:
        off = np.arange(k, dtype=np.int64)
        rs = np.zeros(k, np.int64)
    else:
        cin, kh, kw = chain.w.shape[1], chain.w.shape[2], chain.w.shape[3]
        c, r, s = np.meshgrid(np.arange(cin), np.arange(kh), np.arange(kw), indexing="ij")
        off = (c * xs[2] * xs[3] + r * xs[3] + s).reshape(-1).astype(np.int64)
        rs = (r | (s << 16)).reshape(-1).astype(np.int64)
    off = np.concatenate([off, np.zeros(kp - k, np.int64)])
    rs = np.concatenate([rs, np.full(kp - k, 0x7FFF, np.int64)])
    if dsp:
        order = (np.arange(kp).reshape(-1, 4)[:, [0, 2, 1, 3]]).reshape(-1)
        off, rs = off[order], rs[order]
    return np.concatenate([off, rs])


def _params(chain: _Chain, k: int, kp: int, out_shape: tuple[int, ...], dsp: bool) -> np.ndarray:
    """The int32 parameter block: header, per-channel offset / multiplier /
    shift, and (conv, matmul) the im2col table."""
    xs = [int(v) for v in chain.x.ty.shape]
    if chain.kind == _MATMUL:
        oc = chain.w.shape[1]
        pixels = int(np.prod(xs[:-1]))
        cin, h, w, oh, ow, kh, kw = xs[-1], 1, 1, pixels, 1, 1, 1
    else:
        oc, cin, h, w = chain.w.shape[0], xs[1], xs[2], xs[3]
        oh, ow = out_shape[2], out_shape[3]
        kh, kw = chain.w.shape[2], chain.w.shape[3]
        pixels = oh * ow
    hdr = [chain.kind, cin, h, w, oc, oh, ow, kh, kw, chain.strides[0], chain.strides[1], chain.pads[0],
           chain.pads[1], chain.pad_value, chain.qmin, chain.qmax, chain.zero_point, k, kp, pixels, 0, 0]  # fmt: skip
    assert len(hdr) == _HDR
    shifts = _kernel_shifts(chain.mult, chain.shift, _acc_bound(chain))
    parts = [np.asarray(hdr, np.int64), chain.offset, chain.mult, shifts]
    if chain.kind != _DEPTHWISE:
        parts.append(_gather_table(chain, xs, k, kp, dsp))
    block = np.concatenate(parts)
    if np.any(np.abs(block) >= 2**31):
        raise ValueError("parameter out of int32 range")
    return block.astype(np.int32)


def _scratch_bytes(hdr: np.ndarray, dsp: bool, sdot: bool = False) -> int:
    """Bytes of the kernel's scratch for the parameter block's header (see
    the C source: columns, then accumulators; a depthwise plane, a row of
    accumulators and the weights)."""
    kind, oc, kh, kw, oh, ow = (int(hdr[i]) for i in (0, 4, 7, 8, 5, 6))
    k, kp, pixels = int(hdr[17]), int(hdr[18]), int(hdr[19])
    if kind == _DEPTHWISE:
        sh, sw = int(hdr[9]), int(hdr[10])
        plane = ((oh - 1) * sh + kh) * ((ow - 1) * sw + kw) * (2 if dsp else 4)
        return -(-plane // 4) * 4 + ow * 4 + kh * kw * 4
    if dsp:
        return 4 * kp + 4 * 2 * (-(-oc // 2) * 2)
    block = NP if pixels >= NP else 1
    if sdot:  # int8 columns [KP/4][block][4], then the accumulators
        return kp * block + 4 * block * (-(-oc // 4) * 4)
    if hdr[_COLS_FIELD]:
        return k * block
    return 4 * k * block + 4 * block * (-(-oc // 4) * 4)


def _replacement(chain: _Chain, dsp: bool, rv64: bool = False, sdot: bool = False, rvv: bool = False) -> Any:
    """``call_dps_packed(ek_nn_s8, x, packed weights, parameters)[0]`` (output 1 is the scratch)."""
    from tvm import relax

    out_ty = chain.out.ty
    out_shape = tuple(int(v) for v in out_ty.shape)
    packed, k, kp = _pack_weights(chain, dsp, sdot)
    params = _params(chain, k, kp, out_shape, dsp)
    rows = chain.w.reshape(chain.w.shape[0], -1) if chain.kind == _CONV else chain.w.T
    if rvv and chain.kind != _DEPTHWISE:  # int8 columns, 32-channel weight vectors per k
        packed = pack_rvv(rows)
        params[_COLS_FIELD] = 1
    elif rv64 and chain.kind != _DEPTHWISE:  # int8 columns, three channels per int64, run length after the table
        packed = pack_rows(rows)
        params[_COLS_FIELD] = 1
        params = np.append(params, np.int32(run_length(rows)))
    scratch = _scratch_bytes(params[:_HDR], dsp, sdot)
    if rvv and chain.kind != _DEPTHWISE:  # a block's columns (a word-rounded K * NP), then its int32 sums
        scratch = -(-k * NP // 4) * 4 + 4 * NP * RVV_BLOCK
    if rv64 and not rvv and chain.kind == _DEPTHWISE:  # packed rows for 5x5, 7x7 (RVV: the int16 plane)
        kh, kw, sw, ow = (int(params[i]) for i in (7, 8, 10, 6))
        scratch = dw_scratch_bytes(kh, kw, sw, ow) or scratch
    call = relax.call_dps_packed(
        relax.ExternFunc(EXTERN_KERNEL),
        relax.Tuple([chain.x, relax.const(packed, "int8"), relax.const(params, "int32")]),
        [out_ty, relax.TensorType((scratch,), "int8")],
    )
    return relax.TupleGetItem(call, 0)


def _lut_replacement(take: Any, var2val: dict) -> Any:
    """``take(table, astype(x, int32) + 128)`` of integer/lut.py as one int8 -> int8 gather.

    TVM runs it as separate kernels that put an int32 index tensor (4 bytes
    per element) in the arena: for a HardSwish between int8 layers that made
    the int8 arena as large as the fp32 one.
    """
    from tvm import relax

    table = _const(take.args[0], var2val)
    if table is None or table.shape != (256,) or table.dtype not in (np.int8, np.uint8) or int(take.attrs.axis) != 0:
        return None
    index, bias = _optional(take.args[1], var2val, "relax.add")
    cast = _call(index, var2val, "relax.astype")
    if cast is None or bias is None or np.asarray(bias).size != 1 or int(np.asarray(bias).reshape(-1)[0]) != 128:
        return None
    x = cast.args[0]
    if str(x.ty.dtype) != "int8" or str(cast.attrs.dtype) != "int32":
        return None
    out_ty = relax.TensorType(x.ty.shape, str(table.dtype))
    return relax.call_dps_packed(
        relax.ExternFunc(LUT_KERNEL), relax.Tuple([x, relax.const(table, str(table.dtype))]), [out_ty]
    )


def _sum_replacement(total: Any, var2val: dict) -> Any:
    """``sum(astype(x int8, int32), trailing axes)`` (integer/pool.py's mean) without the int32 copy of ``x``.

    The copy is shared with the squeeze-excite multiply that also reads
    ``x``, so TVM materializes it: 4 bytes per element of the block's
    largest activation.
    """
    from tvm import relax

    cast = _call(total.args[0], var2val, "relax.astype")
    if cast is None or str(cast.attrs.dtype) != "int32" or str(total.ty.dtype) != "int32":
        return None
    x = cast.args[0]
    ndim = len(x.ty.shape)
    axes = sorted(int(a) % ndim for a in total.attrs.axis) if total.attrs.axis is not None else list(range(ndim))
    if str(x.ty.dtype) != "int8" or axes != list(range(ndim - len(axes), ndim)):
        return None
    return relax.call_dps_packed(relax.ExternFunc(SUM_KERNEL), relax.Tuple([x]), [total.ty])


def _int8_operand(expr: Any, var2val: dict) -> tuple[Any, int] | None:
    """``(x, z)`` if ``expr`` is ``astype(x int8, int32) - z`` (or without the subtraction), else None."""
    e, z = _optional(expr, var2val, "relax.subtract")
    cast = _call(e, var2val, "relax.astype")
    if cast is None or str(cast.attrs.dtype) != "int32" or str(cast.args[0].ty.dtype) != "int8":
        return None
    if z is not None and np.asarray(z).size != 1:
        return None
    return cast.args[0], 0 if z is None else int(np.asarray(z).reshape(-1)[0])


def _mul_replacement(out: Any, var2val: dict) -> Any:
    """``requantize((a - za) * (s - zs))`` of two int8 tensors, ``s``
    broadcast over the trailing axes of ``a`` (the squeeze-excite scaling of
    every channel), as one :data:`MUL_KERNEL` call: ``s - zs`` once per
    channel, the products in int32, the requantization of ``requant.py``
    from the high word (TVM's kernel did it all in 64-bit per element)."""
    from tvm import relax

    from edgekit.compiler.integer.requant import value_bound

    if str(out.attrs.dtype) != "int8":
        return None
    clip = _call(out.args[0], var2val, "relax.clip")
    if clip is None:
        return None
    e, zy = _optional(clip.args[0], var2val, "relax.add")
    e, shift = _round_shift(e, var2val)
    e, mult = _optional(e, var2val, "relax.multiply")
    cast = _call(e, var2val, "relax.astype")
    if mult is None or shift is None or cast is None or str(cast.attrs.dtype) != "int64":
        return None
    prod = _call(cast.args[0], var2val, "relax.multiply")
    if prod is None or str(prod.ty.dtype) != "int32":
        return None
    a, b = (_int8_operand(arg, var2val) for arg in prod.args)
    if a is None or b is None:
        return None
    (x, za), (sv, zs) = a, b
    xs, ss = [int(v) for v in x.ty.shape], [int(v) for v in sv.ty.shape]
    if len(xs) != len(ss) or [int(v) for v in out.ty.shape] != xs:
        x, za, sv, zs, xs, ss = sv, zs, x, za, ss, xs  # the broadcast operand may come first
    k = len(xs)
    while k > 0 and ss[k - 1] == 1 and xs[k - 1] != 1:
        k -= 1
    if len(ss) != len(xs) or ss[:k] != xs[:k] or any(v != 1 for v in ss[k:]) or [int(v) for v in out.ty.shape] != xs:
        return None
    if k == len(xs):  # two full tensors: per element this kernel would not beat TVM's
        return None
    consts = [np.asarray(c).reshape(-1) for c in (mult, shift, zy if zy is not None else 0)]
    if any(c.size != 1 for c in consts):
        return None
    m, n, z = (int(c[0]) for c in consts)
    if not (0 < n <= 62 and abs(m) < 2**31 and abs(z) < 2**31):
        return None
    outer = int(np.prod(xs[:k], dtype=np.int64))
    acc_bound = value_bound(x, centered=True) * value_bound(sv, centered=True)  # 255**2, as the lowering's
    n = int(_kernel_shifts(np.array([m]), np.array([n]), acc_bound)[0])
    params = np.array([outer, int(np.prod(xs, dtype=np.int64)) // max(outer, 1), za, zs, m, n, z,
                       int(clip.args[1].value), int(clip.args[2].value)], np.int64)  # fmt: skip
    return relax.call_dps_packed(
        relax.ExternFunc(MUL_KERNEL), relax.Tuple([x, sv, relax.const(params.astype(np.int32), "int32")]), [out.ty]
    )


def _quantize_replacement(call: Any, var2val: dict) -> Any:
    """``quantize(x float32, scalar scale, scalar zero point) -> int8`` as
    :data:`QUANTIZE_KERNEL`, which may run in place: the float input of an
    int8 model is then no longer alive next to its int8 copy."""
    from tvm import relax

    scale, zp = _const(call.args[1], var2val), _const(call.args[2], var2val)
    x = call.args[0]
    if scale is None or zp is None or scale.size != 1 or zp.size != 1 or str(x.ty.dtype) != "float32":
        return None
    if str(call.attrs.out_dtype) != "int8":
        return None
    params = np.array([scale.reshape(-1)[0], zp.reshape(-1)[0]], np.float32)
    return relax.call_dps_packed(
        relax.ExternFunc(QUANTIZE_KERNEL), relax.Tuple([x, relax.const(params, "float32")]), [call.ty]
    )


def _uses(func: Any) -> dict[Any, int]:
    """How many times each variable is read in ``func``."""
    from tvm import relax

    counts: dict[Any, int] = {}

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    for block in func.body.blocks:
        for binding in block.bindings:
            relax.analysis.post_order_visit(binding.value, visit)
    relax.analysis.post_order_visit(func.body.body, visit)
    return counts


def _fuse_output_table(lut: Any, var2val: dict, uses: dict) -> Any:
    """``lut(ek_nn_s8(x)[0], table)`` as one ``ek_nn_s8`` call that stores
    ``table[y]`` (the folded HardSwish after a conv: no pass over the tensor,
    no intermediate tensor in the arena)."""
    from tvm import relax

    y, table_expr = lut.args[1].fields
    table = _const(table_expr, var2val)
    item = var2val.get(y)
    if table is None or table.shape != (256,) or uses.get(y, 0) != 1 or not isinstance(item, relax.TupleGetItem):
        return None
    call = var2val.get(item.tuple_value, item.tuple_value)
    if item.index != 0 or _call(call, {}, "relax.call_dps_packed") is None:
        return None
    if str(call.args[0].global_symbol) != EXTERN_KERNEL:
        return None
    x, w, params_expr = call.args[1].fields
    params = _const(params_expr, var2val)
    if params is None or params[_LUT_FIELD] != 0:
        return None
    params = params.copy()
    params[_LUT_FIELD] = params.size
    words = np.ascontiguousarray(table.astype(np.int8)).view("<i4")
    fused = relax.call_dps_packed(
        relax.ExternFunc(EXTERN_KERNEL),
        relax.Tuple([x, w, relax.const(np.concatenate([params, words]).astype(np.int32), "int32")]),
        list(call.ty.fields),
    )
    return relax.TupleGetItem(fused, 0)


def _tensor_bytes(ty: Any) -> int:
    bits = int("".join(ch for ch in str(ty.dtype) if ch.isdigit()) or 8)
    return int(np.prod([int(v) for v in ty.shape], dtype=np.int64)) * max(bits // 8, 1)


def _touched_bytes(call: Any) -> int:
    """Bytes of the tensors an extern kernel call reads and writes (its
    scratch, the last output of ``ek_nn_s8``, left out)."""
    from tvm import relax

    outs = list(call.ty.fields) if isinstance(call.ty, relax.TupleType) else [call.ty]
    if str(call.args[0].global_symbol) == EXTERN_KERNEL:
        outs = outs[:1]
    ins = [a.ty for a in call.args[1].fields if isinstance(a, relax.Var)]
    return sum(_tensor_bytes(t) for t in [*ins, *outs])


def _compact_columns(func: Any, dsp: bool, sdot: bool = False) -> tuple[Any, int]:
    """Gives the generic conv/matmul kernels int8 im2col columns (a quarter
    of the scratch, no accumulators; about 15 % more instructions) where the
    fast columns would lift the arena by more than :data:`MAX_SCRATCH_SHARE`.

    The arena is at least the largest set of tensors one extern kernel call
    touches (all alive during the call): a layer's fast scratch costs
    nothing when its own tensors plus that scratch stay under this bound,
    and little when the scratch is a small share of it. On small models
    (the digits CNN) the float columns were the largest buffer of all.
    """
    from tvm import relax
    from tvm.relax.dpl import is_call_dps_packed, rewrite_call

    if dsp or sdot:  # SDOT: int8 columns already
        return func, 0
    calls = []
    relax.analysis.post_order_visit(func.body, lambda e: calls.append(e) if _call(e, {}, "relax.call_dps_packed")
                                    is not None and isinstance(e.args[0], relax.ExternFunc) else None)  # fmt: skip
    bound = max((_touched_bytes(c) for c in calls), default=0)
    count = 0

    def compact(call: Any, _matches: Any) -> Any:
        nonlocal count
        x, w, params_expr = call.args[1].fields
        params = _const(params_expr, {})
        if params is None or params[0] == _DEPTHWISE or params[_COLS_FIELD]:
            return call
        fast = _scratch_bytes(params[:_HDR], dsp)
        params = params.copy()
        params[_COLS_FIELD] = 1
        small = _scratch_bytes(params[:_HDR], dsp)
        if _touched_bytes(call) + fast <= bound or fast <= MAX_SCRATCH_SHARE * bound or small >= fast:
            return call
        count += 1
        out_ty = call.ty.fields[0]
        logger.debug("int8 columns for a layer writing %s: scratch %d B instead of %d B", out_ty, small, fast)
        return relax.call_dps_packed(
            relax.ExternFunc(EXTERN_KERNEL),
            relax.Tuple([x, w, relax.const(params, "int32")]),
            [out_ty, relax.TensorType((small,), "int8")],
        )

    return rewrite_call(is_call_dps_packed(EXTERN_KERNEL), compact, func), count


def offload_int8(mod: Any, tvm_target: Any) -> tuple[Any, int]:
    """Replaces the int8 conv2d/depthwise/matmul chains, lookup tables, sums and float -> int8 quantizations of ``mod["main"]``.

    Returns:
        The new module and how many chains were replaced.
    """
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_call_dps_packed, is_op, rewrite_call, wildcard

    dsp, neon, rv64, sdot = uses_dsp(tvm_target), uses_neon(tvm_target), uses_rv64(tvm_target), uses_sdot(tvm_target)
    rvv = uses_rvv(tvm_target)
    func = mod["main"]
    count = 0

    def layer(expr: Any, var2val: dict) -> Any:
        chain = _match(expr, var2val, dsp, any_k=neon or rv64)
        return None if chain is None else _replacement(chain, dsp, rv64, sdot, rvv)

    rules = (
        (is_op("relax.astype")(wildcard()), layer),
        (is_op("relax.take")(wildcard(), wildcard()), _lut_replacement),
        (is_op("relax.sum")(wildcard()), _sum_replacement),
        (is_op("relax.quantize")(wildcard(), wildcard(), wildcard()), _quantize_replacement),
    )
    for pattern, replace in rules:
        var2val = relax.analysis.get_var2val(func)

        def rewrite(expr: Any, _matches: Any, replace: Any = replace, var2val: dict = var2val) -> Any:
            nonlocal count
            try:
                new = replace(expr, var2val)
            except (ValueError, TypeError, AttributeError) as exc:  # an unexpected shape of IR: leave it to TVM
                logger.debug("left to TVM: %s", exc)
                return expr
            if new is None:
                return expr
            count += 1
            return new

        func = rewrite_call(pattern, rewrite, func)
    func, folded = fold_int8_chains(func, LUT_KERNEL)
    count += folded
    # after the folding: a product of x with a table of x (HardSwish) is one table, not a multiply
    var2val = relax.analysis.get_var2val(func)

    def mul(expr: Any, _matches: Any) -> Any:
        nonlocal count
        try:
            new = _mul_replacement(expr, var2val)
        except (ValueError, TypeError, AttributeError) as exc:
            logger.debug("int8 multiply left to TVM: %s", exc)
            return expr
        count += new is not None
        return expr if new is None else new

    func = relax.analysis.remove_all_unused(rewrite_call(is_op("relax.astype")(wildcard()), mul, func))
    var2val, uses = relax.analysis.get_var2val(func), _uses(func)

    def fuse(expr: Any, _matches: Any) -> Any:
        nonlocal count
        new = _fuse_output_table(expr, var2val, uses)
        count += new is not None
        return expr if new is None else new

    func = rewrite_call(is_call_dps_packed(LUT_KERNEL), fuse, func)
    func = relax.analysis.remove_all_unused(func)
    func, compacted = _compact_columns(func, dsp, sdot)
    logger.info("%d int8 layers use int8 im2col columns (a smaller arena)", compacted)
    if count:
        func = relax.analysis.remove_all_unused(func)
        mod = tvm.IRModule({gv: f for gv, f in mod.functions_items()}, attrs=mod.attrs)
        mod["main"] = func
    logger.info("%d int8 ops run on edgekit's C kernels (%s inner kernel)", count, "DSP" if dsp else "SDOT" if sdot else "NEON" if neon else "RVV" if rvv else "RV64" if rv64 else "generic")
    return mod, count

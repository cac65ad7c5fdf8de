"""Producers that write a ``vpdpbusd`` depthwise convolution's blocked input themselves.

:mod:`edgekit.compiler.backends.llvm.depthwise_vnni` reads its input as
channel blocks ``[N, C/L, H', W', L]`` of ``u8 = x + 128``, spatially padded
with the zero point, and copies it into that layout once per layer
(``pad_block``): PP-OCR det, znver5 code, 17 copies, 76 us per inference on
one Zen 5 core (of 5.4 ms). Where the copy is its input's one reader, the
producer writes the layout instead:

* **A table lookup** (hard-swish, :mod:`edgekit.compiler.backends.llvm.lookup`):
  :func:`blocked_lookup` makes it one hand-written kernel: per pixel, the
  lookup's steps over the channel row (64 values per two ``vpermi2b`` on
  AVX512-VBMI, 64 per four ``vpermi2w`` on AVX512-VNNI without VBMI (Cascade
  Lake), 32 per 16 ``vpshufb`` on AVX2), each step's result stored as
  ``L``-byte blocks, the border value outside the image and in the channels
  past ``C``. Both kernels it merges are hand-written (TVM has no byte gather;
  FuseOps does not fuse scheduled ``call_tir`` kernels), so the merge is too.
* **Relax operators** (a dense conv's requantizing epilogue, an elementwise
  chain): :func:`blocked_epilogue` replaces the copy by :func:`place_func`,
  TIR blocks TVM fuses and schedules: the block over the image stores each
  value at its blocked address, and the dot-product schedule makes it the
  conv's tile write-back
  (:func:`edgekit.compiler.backends.llvm.int8.schedule_dot`); a second block
  writes the border. No TVM pass does this: the padded, blocked tensor is a
  pad (injective, its domain larger than the conv's), which FuseOps does not
  fuse into a conv and ``reverse_compute_inline`` cannot put into a
  write-back; split into an image part (a bijection of the conv's output) and
  a border part, each can go where the conv's schedule puts it.

Kept (the copy stays): an input with another reader (a residual add, a
second conv: its producer must write its own layout for that one), ``C`` not
a whole number of blocks for a conv (the channel bound of a ragged tile would
straddle blocks), fewer than ``L`` channels for a lookup, inputs computed by
other hand-written kernels.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekit.compiler.backends.llvm.depthwise_vnni import PLACE_BLOCK, PLACEMENT
from edgekit.compiler.backends.llvm.layout import FUSE_AS_ELEMENTWISE
from edgekit.compiler.backends.llvm.lookup import AVX2_LOOKUP, VBMI_LOOKUP, ZMM_LOOKUP, lookup32, lookup64, lookup64_zmm
from edgekit.compiler.relax_rewrite import is_call, static_shape

__all__ = ["blocked_epilogue", "blocked_lookup", "lookup_block_func", "place_func", "windows"]

logger = logging.getLogger(__name__)

#: The lookup step (values per step, its TIR expression) by lookup kernel name (a name is a prefix of the
#: kernels' names: ZMM_LOOKUP's starts with AVX2_LOOKUP, and is looked for first).
_STEPS = {VBMI_LOOKUP: (64, lookup64), ZMM_LOOKUP: (64, lookup64_zmm), AVX2_LOOKUP: (32, lookup32)}


def windows(c: int, lanes: int, step: int) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """The lookups of one pixel's ``c`` channels: ``(start, width, blocks)``.

    Each reads ``width`` channels from ``start`` (``step`` of them, the last
    window moved left to end at ``c``; with fewer than ``step`` channels one
    window per block, ``lanes`` wide, the last one ending at ``c``) and
    writes ``blocks``: ``(block, channels)``, the block's channels lying in
    the window. Every read stays inside the row.
    """
    width = step if c >= step else lanes
    starts = sorted({min(k * width, c - width) for k in range(-(-c // width))})
    out = []
    for s in starts:
        out.append((s, width, []))
    for k in range(-(-c // lanes)):
        first, count = k * lanes, min(lanes, c - k * lanes)
        s = next(s for s in starts if s <= first and first + count <= s + width)
        out[starts.index(s)][2].append((k, count))
    return [w for w in out if w[2]]


def lookup_block_func(shape: tuple[int, int, int, int], out: tuple[int, ...], top: int, left: int, border: int,
                      kernel: str) -> Any:  # fmt: skip
    """``Y[n, c/L, y, x, c%L] = table[X[n, y - top, x - left, c] + 128] ^ 0x80`` (uint8), ``border`` outside
    the image and in channels past ``C``; the table in the layout ``kernel``'s lookup reads.

    Built with TVM's IR builder: the windows and blocks are unrolled in Python
    (constant shuffles per block).
    """
    from tvm import tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    n, h, w, c = shape
    _, cb, hp, wp, lanes = out
    step, lookup = _STEPS[kernel]
    if kernel == ZMM_LOOKUP and c < 64:  # 32-value steps, not a 64-value step per 16-channel block
        step, lookup = 32, lambda xv, Tb: lookup64_zmm(xv, Tb, 32)
    table_len = {VBMI_LOOKUP: 256, ZMM_LOOKUP: 768}.get(kernel, 512)

    def fill() -> Any:
        return T.broadcast(tirx.const(border, "uint8"), lanes)

    with IRBuilder() as ib:
        with T.prim_func(private=True):
            T.func_name("lookup_block")
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            X = T.arg("X", T.buffer(shape, "int8"))
            Tb = T.arg("Tb", T.buffer((table_len,), "int8"))
            Y = T.arg("Y", T.buffer(out, "uint8"))
            with T.sblock("root"):
                # Serial, as the lookup kernels are: threads.kernel_work rated the unrolled AVX2
                # lookups above its threshold (PP-OCR cls: 4 kernels of 2-3 us put on the pool).
                with T.serial(0, n * hp) as nh:
                    with T.serial(0, wp) as x:
                        b, y = nh // hp, nh % hp
                        with T.If(tirx.all(top <= y, y < top + h, left <= x, x < left + w)):
                            with T.Then():
                                for start, width, blocks in windows(c, lanes, step):
                                    xv = X.vload([b, y - top, x - left, start], f"int8x{width}")
                                    if width < step:  # one block's channels, repeated to a whole step
                                        xv = T.Shuffle([xv] * (step // width), list(range(step)))
                                    u8 = T.reinterpret(f"uint8x{step}", lookup(xv, Tb))
                                    u8 = u8 ^ T.broadcast(tirx.const(128, "uint8"), step)
                                    for k, count in blocks:
                                        at = k * lanes - start
                                        v = T.Shuffle([u8], [at + min(i, count - 1) for i in range(lanes)])
                                        if count < lanes:
                                            keep = T.ramp(0, 1, lanes) < T.broadcast(count, lanes)
                                            v = T.Select(keep, v, fill())
                                        T.buffer_store(Y, v, [b, k, y, x, T.ramp(0, 1, lanes)])
                            with T.Else():
                                for k in range(cb):
                                    T.buffer_store(Y, fill(), [b, k, y, x, T.ramp(0, 1, lanes)])
    return ib.get()


def _copy_of(m: Any, call: Any) -> tuple[Any, tuple[int, int, int]] | None:
    """``(x, (top, left, border))`` when ``call`` is a blocked input copy (``pad_block``) of ``x``, its one
    reader, else None."""
    func = m.builder_.get()[call.args[0]] if is_call(call, "relax.call_tir") else None
    attrs = getattr(func, "attrs", None) or {}
    if PLACEMENT not in attrs or len(call.args[1].fields) != 1 or m.uses.get(call.args[1].fields[0], 0) != 1:
        return None
    top, left, border = (int(v) for v in attrs[PLACEMENT])
    return call.args[1].fields[0], (top, left, border)


def blocked_lookup(m: Any, call: Any) -> Any:
    """The blocked input copy ``call`` (``pad_block``) merged into the table lookup it reads, or None.

    ``m`` is a Relax mutator with ``uses`` (use counts), ``funcs`` (kernels
    added, by key) and ``lookup_binding``.
    """
    from tvm import relax

    copy = _copy_of(m, call)
    if copy is None:
        return None
    x, (top, left, border) = copy
    inner = m.lookup_binding(x) if isinstance(x, relax.Var) else None
    while isinstance(inner, relax.Var):  # alias bindings (y = x)
        inner = m.lookup_binding(inner)
    kernel = next((k for k in _STEPS if is_call(inner, "relax.call_tir") and inner.args[0].name_hint.startswith(k)),
                  None)  # fmt: skip
    shape, out = static_shape(x, "int8"), static_shape(call, "uint8")
    if kernel is None or shape is None or out is None or shape[3] < out[4]:
        return None
    key = ("lookup_block", kernel, tuple(shape), tuple(out), top, left, border)
    if key not in m.funcs:
        func = lookup_block_func(tuple(shape), tuple(out), top, left, border, kernel)  # type: ignore[arg-type]
        m.funcs[key] = m.builder_.add_func(func, "lookup_block")
    return relax.call_tir(m.funcs[key], inner.args[1], call.ty)


def place_func(shape: tuple[int, int, int, int], out: tuple[int, ...], top: int, left: int, border: int) -> Any:
    """``Y[n, c/L, y + top, x + left, c%L] = uint8(X[n, y, x, c] + 128)``, ``border`` outside the image:
    the blocked input copy as blocks TVM fuses and schedules (``C`` a multiple of ``L``).

    One block per element of ``X``, marked elementwise
    (:data:`~edgekit.compiler.backends.llvm.layout.FUSE_AS_ELEMENTWISE`: TVM's
    analysis calls its stores opaque) so that FuseOps puts it into the
    producing kernel, where the dot-product schedule makes it the tile
    write-back; and one block writing the border only (its rows, then the
    columns beside the image).
    """
    from tvm import tirx
    from tvm.script import tirx as T

    # int64 extents, as LegalizeOps writes them: FuseTIR maps X to the producer's output buffer.
    n, h, w, c, cb, hp, wp, lanes, top, left = (tirx.IntImm("int64", v) for v in (*shape, *out[1:], top, left))
    bottom, right = hp - h - top, wp - w - left

    @T.prim_func(private=True, s_tir=True)
    def place(X: T.Buffer((n, h, w, c), "int8"), Y: T.Buffer((n, cb, hp, wp, lanes), "uint8")) -> None:
        T.func_attr({"tirx.noalias": True, FUSE_AS_ELEMENTWISE: True})
        for i0, i1, i2, i3 in T.grid(n, h, w, c):
            with T.sblock(PLACE_BLOCK):
                v0, v1, v2, v3 = T.axis.remap("SSSS", [i0, i1, i2, i3])
                T.reads(X[v0, v1, v2, v3])
                T.writes(Y[v0, v3 // lanes, v1 + top, v2 + left, v3 % lanes])
                Y[v0, v3 // lanes, v1 + top, v2 + left, v3 % lanes] = T.Cast(
                    "uint8", T.Cast("int16", X[v0, v1, v2, v3]) + T.int16(128)
                )
        with T.sblock("place_border"):
            T.reads()
            T.writes()
            # The border through an alias of Y: to TVM's analysis the block over the image stays
            # Y's one writer, which reverse_compute_inline requires (the regions are disjoint).
            Yb = T.decl_buffer((n * cb * hp * wp * lanes,), "uint8", data=Y.data)
            # Scalar stores LLVM makes one vector store each: a Broadcast here would make TVM's
            # FLOP estimate fail, and MetaSchedule's task extraction drop the conv (tuning.py).
            for i, r, x, j in T.grid(n * cb, top + bottom, wp, lanes):  # the rows above and below the image
                Yb[((i * hp + T.Select(r < top, r, r + h)) * wp + x) * lanes + j] = T.uint8(border)
            for i, y, r, j in T.grid(n * cb, h, left + right, lanes):  # the columns beside it
                Yb[((i * hp + y + top) * wp + T.Select(r < left, r, r + w)) * lanes + j] = T.uint8(border)

    return place


def blocked_epilogue(m: Any, call: Any) -> Any:
    """The blocked input copy ``call`` as :func:`place_func`, for FuseOps to put into the kernel that
    computes its input (a dense conv's requantizing epilogue, an elementwise chain), or None.

    Only where the copy is the input's one reader, the input is a Relax
    ``astype`` (the requantization's last step; not a hand-written kernel's
    output) and ``C`` a whole number of blocks.
    """
    from tvm import relax

    copy = _copy_of(m, call)
    if copy is None:
        return None
    x, (top, left, border) = copy
    value = m.lookup_binding(x) if isinstance(x, relax.Var) else None
    shape, out = static_shape(x, "int8"), static_shape(call, "uint8")
    if not is_call(value, "relax.astype") or shape is None or out is None or shape[3] % out[4] != 0:
        return None
    key = ("place", tuple(shape), tuple(out), top, left, border)
    if key not in m.funcs:
        m.funcs[key] = m.builder_.add_func(place_func(tuple(shape), tuple(out), top, left, border), "place_block")
    return relax.call_tir(m.funcs[key], relax.Tuple([x]), call.ty)


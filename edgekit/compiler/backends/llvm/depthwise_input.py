"""A table lookup that writes a ``vpdpbusd`` depthwise convolution's blocked input itself.

:mod:`edgekit.compiler.backends.llvm.depthwise_vnni` reads its input as
channel blocks ``[N, C/L, H', W', L]`` of ``u8 = x + 128``, spatially padded
with the zero point, and copies it into that layout once per layer
(``pad_block``). Where the input is a hand-written table lookup's output
(hard-swish: :mod:`edgekit.compiler.backends.llvm.lookup`) and the copy its
one reader, :func:`blocked_lookup` makes the lookup write that layout
directly: per pixel, the lookup's steps over the channel row (64 values per
two ``vpermi2b`` on AVX512-VBMI, 32 per 16 ``vpshufb`` on AVX2), each step's
result stored as ``L``-byte blocks, the border value outside the image and in
the channels past ``C``. PP-OCR cls, znver5 code: 8 of its 11 copies (the
other 3 read dense convs' epilogues).

Hand-written, as both kernels it merges are: TVM has no byte gather for the
lookup (it vectorizes one into scalar loads), and FuseOps does not fuse
``call_tir`` kernels that are already scheduled (``tirx.is_scheduled``), nor
would a fused pad be vectorized (its lanes straddle the border;
:mod:`edgekit.compiler.backends.llvm.pad`).

Not merged (the copy stays): a lookup with another reader (it must write its
own layout for that one), fewer than ``L`` channels, a dense conv's epilogue,
a model input.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekit.compiler.backends.llvm.depthwise_vnni import PLACEMENT
from edgekit.compiler.backends.llvm.lookup import AVX2_LOOKUP, VBMI_LOOKUP, lookup32, lookup64
from edgekit.compiler.relax_rewrite import is_call, static_shape

__all__ = ["blocked_lookup", "lookup_block_func", "windows"]

logger = logging.getLogger(__name__)

#: The lookup step (values per step, its TIR expression) by lookup kernel name.
_STEPS = {VBMI_LOOKUP: (64, lookup64), AVX2_LOOKUP: (32, lookup32)}


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
    table_len = 256 if kernel == VBMI_LOOKUP else 512

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
                with T.parallel(0, n * hp) as nh:
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


def blocked_lookup(m: Any, call: Any) -> Any:
    """The blocked input copy ``call`` (``pad_block``) merged into the table lookup it reads, or None.

    ``m`` is a Relax mutator with ``uses`` (use counts), ``funcs`` (kernels
    added, by key) and ``lookup_binding``.
    """
    from tvm import relax

    gv = call.args[0]
    func = m.builder_.get()[gv] if is_call(call, "relax.call_tir") else None
    attrs = getattr(func, "attrs", None) or {}
    if PLACEMENT not in attrs or len(call.args[1].fields) != 1:
        return None
    x = call.args[1].fields[0]
    inner = m.lookup_binding(x) if isinstance(x, relax.Var) else None
    while isinstance(inner, relax.Var):  # alias bindings (y = x)
        inner = m.lookup_binding(inner)
    kernel = next((k for k in _STEPS if is_call(inner, "relax.call_tir") and inner.args[0].name_hint.startswith(k)),
                  None)  # fmt: skip
    shape, out = static_shape(x, "int8"), static_shape(call, "uint8")
    if kernel is None or m.uses.get(x, 0) != 1 or shape is None or out is None or shape[3] < out[4]:
        return None
    top, left, border = (int(v) for v in attrs[PLACEMENT])
    key = ("lookup_block", kernel, tuple(shape), tuple(out), top, left, border)
    if key not in m.funcs:
        func = lookup_block_func(tuple(shape), tuple(out), top, left, border, kernel)  # type: ignore[arg-type]
        m.funcs[key] = m.builder_.add_func(func, "lookup_block")
    return relax.call_tir(m.funcs[key], inner.args[1], call.ty)

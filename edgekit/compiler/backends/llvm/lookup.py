"""int8 table lookups (hard-swish, sigmoid, requantized concat inputs) as hand-written x86 kernels.

The integer lowering computes an elementwise chain on one int8 tensor as a
256-entry table (:mod:`edgekit.compiler.integer.lut`), i.e.
``take(table, x + 128)``. x86 has no byte gather: left to TVM, a fused lookup
compiled to scalar byte loads (about 60 of the 95 instructions per 8 outputs
of PP-OCR's hard-swish layers) and kept the producing kernel's whole
epilogue scalar. :func:`lookup_pass` makes each lookup a kernel of its own
over the int8 tensor: AVX-512 VBMI targets look up 64 values per step with
two ``vpermi2b``, AVX512BW targets without VBMI (Skylake-SP, Cascade Lake)
64 per step with four ``vpermi2w`` on the table's 16-bit words (:class:`Zmm`),
other AVX2 targets 32 per step with 16 ``vpshufb``.
On AVX2-only targets (Haswell, Zen 2) a table with an exact int16
fixed-point form that costs fewer instructions is computed by that form
instead (:mod:`edgekit.compiler.backends.llvm.lookup_fixed`: hard-swish 21-27
instructions per 32 values against ~42 for the table).
For the CPUs in :data:`ARITHMETIC_MCPUS` (none so far) an AVX2 lookup whose
table has an exact float32 program is computed in the producer's epilogue
instead (:mod:`edgekit.compiler.backends.llvm.lookup_arith`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from edgekit.compiler.backends.llvm.intrin import I16_256, dot_isa, has_feature
from edgekit.compiler.backends.llvm.lookup_arith import arithmetic_lookup
from edgekit.compiler.backends.llvm.lookup_fixed import FixedForm, Live, decode, fixed_form, table_cost
from edgekit.compiler.integer.lut_program import LUT_PROGRAMS, Program, table_key
from edgekit.compiler.relax_rewrite import bound_value, calls_rewrite_pass, const_value, is_call, static_shape

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = ["ALL_SLICES", "ARITHMETIC_MCPUS", "AVX2_LOOKUP", "VBMI_LOOKUP", "ZMM_LOOKUP", "Zmm", "avx2_live_slices", "avx2_operand",
           "avx2_table", "lookup32", "lookup64", "lookup64_zmm", "lookup_pad_avx2_func", "lookup_pass",
           "lookup_rows_vbmi_func", "lookup_vbmi_func"]

logger = logging.getLogger(__name__)

#: Name of the AVX2 lookup kernels (:func:`_lookup_avx2_func`) in the module.
AVX2_LOOKUP = "lookup_avx2"
#: Name of the AVX512BW lookup kernels without VBMI (:class:`Zmm`; :data:`AVX2_LOOKUP`'s operand with the table
#: after it, and its name as a prefix: :mod:`edgekit.compiler.backends.llvm.pad` merges them into a pad alike).
ZMM_LOOKUP = "lookup_avx2_zmm"
#: Name of the VBMI lookup kernels (:func:`_lookup_vbmi_func`): their table operand is the table itself.
VBMI_LOOKUP = "lookup_vbmi"
#: LLVM CPU names (``mcpu``) of AVX2 targets whose lookups are computed
#: arithmetically in the producing kernel's epilogue, where a table has an
#: exact form (:mod:`edgekit.compiler.backends.llvm.lookup_arith`), instead of
#: by :func:`_lookup32`. None: with the telescoped ``vpshufb`` kernel the
#: table cost less on every AVX2 CPU measured (haswell code on Zen 5) or
#: modeled (llvm-mca: haswell, skylake, znver2, znver3); docs/performance.md.
#: ``benchmarks/int8_target.py --arithmetic-lookups`` adds its ``--mcpu``.
ARITHMETIC_MCPUS: set[str] = set()


def _lookup_vbmi_func(shape: tuple[int, ...], out_dtype: str = "int8") -> Any:
    """``y[i] = table[x[i] + 128]`` over ``n`` int8 values, 64 per step with two ``vpermi2b``.

    ``out_dtype`` ``uint8``: the table's bytes written as uint8 (with a table
    ``t ^ 0x80`` that is ``t + 128``, a ``vpdpbusd`` operand:
    :func:`edgekit.compiler.backends.llvm.pad.int8_pad_pass`).

    ``vpermi2b`` picks bytes of a 128-byte table by the low 7 bits of each
    index byte. For ``u = x + 128`` those are the low 7 bits of ``x``
    itself, and ``u < 128`` exactly when ``x < 0``: one lookup in the lower
    half of the table, one in the upper half, a select on the sign. TVM
    vectorizes a 256-entry gather into scalar byte loads (about 4
    instructions per element; no x86 byte gather exists) -- hand-written.
    """
    from tvm.script import tirx as T

    n = int(np.prod(shape))
    steps, tail = divmod(n, 64)

    def out(v: Any, lanes: int) -> Any:
        return v if out_dtype == "int8" else T.reinterpret(out_dtype if lanes == 1 else f"{out_dtype}x{lanes}", v)

    @T.prim_func(private=True)
    def lookup(Xs: T.Buffer(shape, "int8"), Tb: T.Buffer((256,), "int8"), Ys: T.Buffer(shape, out_dtype)) -> None:
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        # Flat views of the same memory: the lookup is elementwise.
        X = T.decl_buffer((n,), "int8", data=Xs.data)
        Y = T.decl_buffer((n,), out_dtype, data=Ys.data)
        for i in range(steps):
            Y[T.ramp(i * 64, 1, 64)] = out(lookup64(X.vload([i * 64], "int8x64"), Tb), 64)
        for j in range(tail):
            Y[steps * 64 + j] = out(Tb[T.Cast("int32", X[steps * 64 + j]) + 128], 1)

    return lookup


def lookup64(xv: Any, Tb: Any) -> Any:
    """The lookup of 64 int8 values ``xv`` (a TIR ``int8x64``) in the 256-entry table ``Tb`` (AVX512-VBMI,
    :func:`_lookup_vbmi_func`): two ``vpermi2b``, a select on the sign."""
    from tvm.script import tirx as T

    permute = "llvm.x86.avx512.vpermi2var.qi.512"
    lo = T.call_llvm_pure_intrin("int8x64", permute, Tb.vload([0], "int8x64"), xv, Tb.vload([64], "int8x64"))
    hi = T.call_llvm_pure_intrin("int8x64", permute, Tb.vload([128], "int8x64"), xv, Tb.vload([192], "int8x64"))
    return T.Select(xv < T.broadcast(T.int8(0), 64), lo, hi)


#: The VBMI lookup kernel, public for :mod:`edgekit.compiler.backends.llvm.pad` (its uint8 form).
lookup_vbmi_func = _lookup_vbmi_func


def lookup_rows_vbmi_func(shape: tuple[int, ...], cp: int, fill: int, out_dtype: str = "int8") -> Any:
    """``y = pad(table[x + 128])`` with the channels (the last axis, ``C``) padded to ``cp`` by ``fill``
    (AVX512-VBMI): the lookup writes the padded rows of a ``vpdpbusd`` conv's operand itself.

    Structured pruning leaves channel counts that are not a multiple of the 4
    a dot-product step reads (PP-OCR cls pruned 30 %, ``round_to 1``: a
    hard-swish over 6 channels feeding a 1x1 conv that reads 8); the channel
    pad was a row-copy kernel of its own after the lookup (:mod:`edgekit.compiler.backends.llvm.pad`,
    4-byte steps: 1.39 us for 24x96 pixels against 0.29 for the lookup; this kernel 0.40, kernels
    alone on one Zen 4 core). Here each step
    covers ``k = 64 // cp`` whole pixels: ``k * C`` input bytes, spread to the padded
    layout by one constant byte shuffle (``vpermb``), looked up (:func:`lookup64`), the pad lanes
    replaced by ``fill`` and ``k * cp`` bytes stored; the last step overlaps the one before. Per 64
    output bytes about the lookup's own instructions plus the shuffle and a blend, not a second pass
    over the tensor. ``out_dtype`` ``uint8``: the table's bytes (and ``fill``) written as uint8 (a
    flipped table, :func:`edgekit.compiler.backends.llvm.pad.int8_pad_pass`'s u8 lookups).
    Needs ``C < cp <= 64``.
    """
    from tvm import tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    c, pixels = shape[-1], int(np.prod(shape[:-1]))
    assert c < cp <= 64, "channels padded within one vector"
    k = max(1, min(64 // cp, pixels))
    steps = -(-pixels // k)
    # Lane j of a step is channel j % cp of pixel j // cp: input byte (j // cp) * C + j % cp, or fill.
    spread = [(j // cp) * c + min(j % cp, c - 1) if j < k * cp else 0 for j in range(64)]
    placed = [j if j % cp < c else 64 for j in range(k * cp)]
    out = (*shape[:-1], cp)
    signed_fill = fill - 256 if fill > 127 else fill
    with IRBuilder() as ib:
        with T.prim_func(private=True):
            T.func_name("lookup_rows_vbmi")
            # Opaque (kOpaque = 8): FuseOps must not merge the flat views below into a neighbour.
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
            Xs = T.arg("Xs", T.buffer(shape, "int8"))
            Tb = T.arg("Tb", T.buffer((256,), "int8"))
            Ys = T.arg("Ys", T.buffer(out, out_dtype))
            with T.sblock("root"):
                X = T.decl_buffer((pixels * c,), "int8", data=Xs.data)
                Y = T.decl_buffer((pixels * cp,), out_dtype, data=Ys.data)
                inputs = T.ramp(0, 1, 64) < T.broadcast(k * c, 64)
                with T.serial(0, steps) as i:
                    first = T.min(i * k, pixels - k)  # the last step ends at the last pixel
                    # One masked load of the step's k * C bytes (vmovdqu8 {k}{z}): a load of k * C lanes
                    # became pieces and byte inserts where k * C is not a power of two.
                    loaded = tirx.op.masked_load("int8x64", X, T.ramp(first * c, 1, 64), inputs)
                    xv = T.Shuffle([loaded], spread)
                    v = T.Shuffle([lookup64(xv, Tb), T.broadcast(tirx.const(signed_fill, "int8"), 64)], placed)
                    if out_dtype != "int8":
                        v = T.reinterpret(f"{out_dtype}x{k * cp}", v)
                    T.buffer_store(Y, v, [T.ramp(first * cp, 1, k * cp)])
    return ib.get()


#: Every slice of :func:`_avx2_slices`' layout: what :func:`_lookup32` reads unless told which are all zero.
ALL_SLICES: tuple[int, ...] = tuple(range(16))

#: ``vpshufb`` (an index byte with bit 7 set reads 0) and the saturating byte add that builds its indices.
_SHUFFLE, _ADD_SATURATED = "llvm.x86.avx2.pshuf.b", "llvm.uadd.sat"
#: ``vpermi2w``: 32 words picked from two 32-word tables by the low 6 bits of each index word (AVX512BW).
_PERMUTE_WORDS = "llvm.x86.avx512.vpermi2var.hi.512"
#: Where a :class:`Zmm` kernel's operand holds the 256-entry table itself (after :func:`_avx2_slices`).
_ZMM_TABLE = 512


@dataclass(frozen=True)
class Zmm:
    """The lookup of an AVX512BW target without VBMI (Skylake-SP, Cascade Lake): 64 values per step,
    :func:`_lookup_words` on the table's 16-bit words.

    No ``vpermb``/``vpermi2b`` (VBMI). The operand is :func:`_avx2_slices`' 512 bytes, which the step
    does not read (the kernels keep the AVX2 kernels' name and layout, so the lookup-pad and the
    squeeze-excite code treat them alike), then the table itself (:func:`avx2_operand`).
    """


#: What an AVX2-layout lookup kernel reads: its live slices 32 values per step, its int16 fixed form,
#: or (:class:`Zmm`) the table's words 64 values per step.
Reads = Union[Live, Zmm]


def _lookup_words(xv: Any, Tb: Any, lanes: int) -> Any:
    """The lookup of ``lanes`` (32 or 64) int8 values ``xv`` in the table at :data:`_ZMM_TABLE` of ``Tb`` (AVX512BW).

    The 256 table bytes are 128 little-endian words, word ``j`` holding entries ``2j`` and ``2j + 1``.
    Per 32 values: ``x`` sign-extended to words (``vpmovsxbw``); ``x >> 1`` has the low 6 bits of
    ``(x + 128) >> 1``, the word's index within each half of the table, and ``vpermi2w`` looks it up in
    both halves (64 words each: two registers); the sign of ``x`` picks the half (``x < 0`` exactly
    when ``x + 128 < 128``), its parity the byte (the high byte, shifted down, for odd ``x``), and
    ``vpmovwb`` narrows. About 16 instructions per 64 values where 16 ``vpshufb`` took 43 with their
    index adds and XORs: on a Zen 4 (512-bit shuffles in two halves) 1.00 against 1.88 us per 19,200
    values; llvm-mca's Skylake server model 16.5 against 16.1 cycles per 64 (both port-5 bound).
    """
    from tvm.script import tirx as T

    halves = []
    for h in range(lanes // 32):
        x = T.Shuffle([xv], list(range(32 * h, 32 * h + 32))) if lanes > 32 else xv
        w = T.Cast("int16x32", x)
        index = w >> T.broadcast(T.int16(1), 32)
        words = [T.reinterpret(Tb.vload([_ZMM_TABLE + 64 * k], "int8x64"), dtype="int16x32") for k in range(4)]
        low = T.call_llvm_pure_intrin("int16x32", _PERMUTE_WORDS, words[0], index, words[1])
        high = T.call_llvm_pure_intrin("int16x32", _PERMUTE_WORDS, words[2], index, words[3])
        pair = T.reinterpret(T.Select(w < T.broadcast(T.int16(0), 32), low, high), dtype="uint16x32")
        odd = (w & T.broadcast(T.int16(1), 32)) != T.broadcast(T.int16(0), 32)
        halves.append(T.Cast("int8x32", T.Select(odd, pair >> T.broadcast(T.uint16(8), 32), pair)))
    return halves[0] if lanes == 32 else T.Shuffle(halves, list(range(64)))


def _lookup32(xv: Any, Tb: Any, live: Reads = ALL_SLICES, lanes: int = 32) -> Any:
    """The table lookup of 32 int8 values ``xv`` (a TIR ``int8x32``) in :func:`_avx2_slices`' 16 slices ``Tb`` (AVX2).

    A :class:`Zmm` ``live``: ``lanes`` (32 or 64) values by :func:`_lookup_words` instead.

    ``vpshufb`` reads byte ``i & 15`` of a 16-byte slice, or 0 where bit 7
    of the index ``i`` is set. With ``u = x + 128`` and ``c_k = 112 - 16 k``
    (``k`` = 0..7), the saturating add ``u + c_k`` keeps bit 7 clear exactly
    when ``u < 16 (k + 1)``, i.e. for every slice ``k >= u >> 4`` of the
    lower half, and its low nibble is ``u & 15``; ``x + c_k`` does the same
    for the upper half (``u >= 128``; a negative ``x`` reads as 128 or
    more and saturates). The slices hold differences ``L_k = T_k ^ T_(k+1)``
    (``L_7 = T_7``, ``L_15 = T_15``), so the XOR of the active slices
    telescopes to ``T_(u >> 4)[u & 15]``: 16 adds, 16 shuffles and 15 XORs
    per 32 values. The earlier form (16 shuffles, each kept by a compare and
    a ``vpblendvb``) took 46 cycles per step on Haswell in llvm-mca's model
    (``vpblendvb`` is two uops there), this one 17 (docs/performance.md).

    Only the slices in ``live`` are read: a slice of zeros adds nothing to
    the XOR (:func:`avx2_live_slices`; where two neighbouring slices of the
    table are equal, e.g. hard-swish's zeros below -3 and hard-sigmoid's
    saturated ends). A :class:`~edgekit.compiler.backends.llvm.lookup_fixed.FixedForm`
    ``live`` computes the table's int16 form instead and reads no slice.
    """
    from tvm.script import tirx as T

    if isinstance(live, FixedForm):
        return live.step32(xv)
    if isinstance(live, Zmm):
        return _lookup_words(xv, Tb, lanes)

    xu = T.reinterpret(xv, dtype="uint8x32")
    u = xu ^ T.broadcast(T.uint8(128), 32)
    hits = []
    for k in live:
        index = T.call_llvm_pure_intrin("uint8x32", _ADD_SATURATED, u if k < 8 else xu,
                                        T.broadcast(T.uint8(112 - 16 * (k % 8)), 32))  # fmt: skip
        hits.append(T.call_llvm_pure_intrin("int8x32", _SHUFFLE, Tb.vload([32 * k], "int8x32"),
                                            T.reinterpret(index, dtype="int8x32")))  # fmt: skip
    if not hits:  # a table of zeros
        return T.broadcast(T.int8(0), 32)
    while len(hits) > 1:  # a balanced XOR tree: 4 steps of latency, not 15
        hits = [a ^ b for a, b in zip(hits[::2], hits[1::2])] + hits[len(hits) - len(hits) % 2 :]
    return hits[0]


#: The AVX2 32-value step, public for :mod:`edgekit.compiler.backends.llvm.depthwise_input`.
lookup32 = _lookup32


def lookup64_zmm(xv: Any, Tb: Any, lanes: int = 64) -> Any:
    """The AVX512BW step (:class:`Zmm`) of ``lanes`` values, for :mod:`edgekit.compiler.backends.llvm.depthwise_input`."""
    return _lookup_words(xv, Tb, lanes)


def _steps(n: int, step: int) -> tuple[int, list[tuple[int, int]]]:
    """``(whole, rest)``: ``whole`` steps of ``step`` values from 0, then ``rest``, ``(start, width)`` steps
    that end at ``n`` and overlap what came before (``n >= 32``): one of 32 where that covers the rest,
    else one of ``step``, or two of 32 when ``n`` is under one step."""
    whole, tail = divmod(n, step)
    if tail == 0:
        return whole, []
    if tail <= 32:
        return whole, [(n - 32, 32)]
    return whole, [(n - step, step)] if whole else [(0, 32), (n - 32, 32)]


def _lookup1(x: Any, Tb: Any) -> Any:
    """One int8 value ``x`` looked up in :func:`_avx2_slices`' layout (the XOR of the active slices' bytes)."""
    from tvm.script import tirx as T

    u = T.Cast("int32", x) + 128
    out = T.int8(0)
    for k in range(8):
        entry = Tb[(u // 128 * 8 + k) * 32 + u % 16]
        out = out ^ T.Select(u % 128 // 16 <= k, entry, T.int8(0))
    return out


def _operand_bytes(live: Reads) -> int:
    """Bytes of the AVX2 kernels' table operand: the slices, and a fixed form's encoding or (:class:`Zmm`)
    the table after them."""
    if isinstance(live, Zmm):
        return _ZMM_TABLE + 256
    return 512 + (live.encode().size if isinstance(live, FixedForm) else 0)


def _rest(n: int, step: int) -> tuple[int, int, int, int, int]:
    """:func:`_steps` as ``(whole, steps after, start and width of the first, of the second)``, for TVMScript."""
    whole, rest = _steps(n, step)
    (s0, w0), (s1, w1) = (rest + [(0, 32), (0, 32)])[:2]
    return whole, len(rest), s0, w0, s1, w1


def _lookup_avx2_func(shape: tuple[int, ...], live: Reads = ALL_SLICES) -> Any:
    """``y[i] = table[x[i] + 128]`` over int8 values, 32 per step with 16 ``vpshufb`` (AVX2, :func:`_lookup32`).

    ``live`` a :class:`Zmm` (AVX512BW, ``n >= 32``): 64 per step with four ``vpermi2w``
    (:func:`_lookup_words`), the rest in one overlapping step of 64 or 32 (:func:`_steps`).

    The kernel takes the table as :func:`_avx2_slices` lays it out and reads
    only the slices ``live`` (:func:`avx2_live_slices`), or computes their
    fixed form (then ``n >= 32``; the table operand has the form's bytes
    after the slices, :func:`avx2_operand`). A tail
    of fewer than 32 values is one more overlapping step, or scalar when the
    whole tensor is smaller than a step (a squeeze-excite gate). TVM
    vectorizes a gather into scalar byte loads, which also kept the
    producing kernel's epilogue scalar -- hand-written.
    """
    from tvm.script import tirx as T

    n = int(np.prod(shape))
    steps, tail = divmod(n, 32)
    size = _operand_bytes(live)
    assert steps > 0 or not isinstance(live, FixedForm), "a fixed form needs one whole step"
    if isinstance(live, Zmm):
        assert steps > 0, "a zmm lookup needs 32 values"
        return _lookup_zmm_func(shape)

    @T.prim_func(private=True)
    def lookup(Xs: T.Buffer(shape, "int8"), Tb: T.Buffer((size,), "int8"), Ys: T.Buffer(shape, "int8")) -> None:
        # Opaque to fusion: FuseTIR cannot merge the flat views below into a producer.
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
        X = T.decl_buffer((n,), "int8", data=Xs.data)
        Y = T.decl_buffer((n,), "int8", data=Ys.data)
        for i in range(steps):
            Y[T.ramp(i * 32, 1, 32)] = _lookup32(X.vload([i * 32], "int8x32"), Tb, live)
        if steps > 0 and tail > 0:
            Y[T.ramp(n - 32, 1, 32)] = _lookup32(X.vload([n - 32], "int8x32"), Tb, live)
        if steps == 0:
            for j in range(n):
                Y[j] = _lookup1(X[j], Tb)

    @T.prim_func(private=True, s_tir=True)
    def fixed(Xs: T.Buffer(shape, "int8"), Tb: T.Buffer((size,), "int8"), Ys: T.Buffer(shape, "int8")) -> None:
        # In a root block: a kernel that reads one of its two tensors (the form leaves the
        # table unread) is checked for a reshape pattern, which needs one (RewriteDataflowReshape).
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
        with T.sblock("root"):
            X = T.decl_buffer((n,), "int8", data=Xs.data)
            Y = T.decl_buffer((n,), "int8", data=Ys.data)
            for i in range(steps):
                Y[T.ramp(i * 32, 1, 32)] = _lookup32(X.vload([i * 32], "int8x32"), Tb, live)
            if tail > 0:
                Y[T.ramp(n - 32, 1, 32)] = _lookup32(X.vload([n - 32], "int8x32"), Tb, live)

    return fixed if isinstance(live, FixedForm) else lookup


def _lookup_zmm_func(shape: tuple[int, ...]) -> Any:
    """:func:`_lookup_avx2_func` for :class:`Zmm`: 64 values per step, then :func:`_steps`' rest (``n >= 32``)."""
    from tvm.script import tirx as T

    n = int(np.prod(shape))
    whole, more, s0, w0, s1, w1 = _rest(n, 64)
    size, live = _operand_bytes(Zmm()), Zmm()

    @T.prim_func(private=True)
    def lookup(Xs: T.Buffer(shape, "int8"), Tb: T.Buffer((size,), "int8"), Ys: T.Buffer(shape, "int8")) -> None:
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
        X = T.decl_buffer((n,), "int8", data=Xs.data)
        Y = T.decl_buffer((n,), "int8", data=Ys.data)
        for i in range(whole):
            Y[T.ramp(i * 64, 1, 64)] = _lookup32(X.vload([i * 64], "int8x64"), Tb, live, 64)
        if more > 0:
            Y[T.ramp(s0, 1, w0)] = _lookup32(X.vload([s0], f"int8x{w0}"), Tb, live, w0)
        if more > 1:
            Y[T.ramp(s1, 1, w1)] = _lookup32(X.vload([s1], f"int8x{w1}"), Tb, live, w1)

    return lookup


def lookup_pad_avx2_func(shape: tuple[int, int, int, int], top: int, left: int, out: tuple[int, int, int, int],
                         border: int, fill: int, live: Reads = ALL_SLICES) -> Any:  # fmt: skip
    """``Y = pad(table[X + 128])`` for NHWC int8 ``X`` with at least 32 channels, in one pass (AVX2).

    The pad is :func:`edgekit.compiler.backends.llvm.pad.int8_pad_pass`'s
    (``border`` outside the image, ``fill`` in channels ``[C, C_out)``, at most
    16 of them); inside the image each pixel's channels are looked up 32 at a
    time as :func:`_lookup_avx2_func` does, the last step overlapping the
    previous one when ``C`` is not a multiple of 32. A lookup whose only
    consumer is the pad of a depthwise convolution's input writes the padded
    tensor itself: no second pass over the activation (PP-OCR cls, haswell
    code: 8 pad kernels of 1.4-2.3 us each on one Zen 5 core). Only the
    slices ``live`` are read (:func:`avx2_live_slices`), or their fixed form computed; a :class:`Zmm`
    ``live``: 64 channels per step, the rest in one overlapping step of 64 or 32 (:func:`_steps`).
    Not under 32 channels (what structured pruning leaves: PP-OCR cls pruned 30 % with ``round_to 1``
    has hard-swish layers of 23 and 28 channels before depthwise convs): a pixel's channels as one
    32-value step (its first and last 16) measured slower than the lookup's flat steps and the pad's
    row copies (haswell code, kernels alone on one Zen 4 core: 23 -> 24 channels 3.15 against 1.72 +
    0.78 us, 28 -> 32 1.61 against 1.04 + 0.45); the lookup does 32 lanes of work per 23 values.
    """
    from tvm.script import tirx as T

    n, h, w, c = shape
    _, ho, wo, cp = out
    step, reads = (64 if isinstance(live, Zmm) else 32), live
    full, more, s0, w0, s1, w1 = _rest(c, step)
    size = _operand_bytes(reads)

    @T.prim_func(private=True, s_tir=True)
    def lookup_pad(Xs: T.Buffer(shape, "int8"), Tb: T.Buffer((size,), "int8"), Ys: T.Buffer(out, "int8")) -> None:
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            X = T.decl_buffer((n * h * w * c,), "int8", data=Xs.data)
            Y = T.decl_buffer((n * ho * wo * cp,), "int8", data=Ys.data)
            for nh in T.parallel(n * ho):
                for x in range(wo):
                    # meta_var: expressions, not named scalars (a scalar is a buffer, and inside
                    # a parallel loop TVM takes each from the heap on every iteration).
                    row = T.meta_var((nh * wo + x) * cp)
                    if cp > c:
                        Y[T.ramp(row + cp - 16, 1, 16)] = T.broadcast(T.int8(fill), 16)
                    y = T.meta_var(nh % ho)
                    if top <= y and y < top + h and left <= x and x < left + w:
                        src = T.meta_var((((nh // ho) * h + y - top) * w + x - left) * c)
                        for k in range(full):
                            Y[T.ramp(row + k * step, 1, step)] = _lookup32(X.vload([src + k * step], f"int8x{step}"),
                                                                           Tb, reads, step)  # fmt: skip
                        if more > 0:
                            Y[T.ramp(row + s0, 1, w0)] = _lookup32(X.vload([src + s0], f"int8x{w0}"), Tb, reads, w0)
                        if more > 1:
                            Y[T.ramp(row + s1, 1, w1)] = _lookup32(X.vload([src + s1], f"int8x{w1}"), Tb, reads, w1)
                    else:
                        for k in range(c // 16):
                            Y[T.ramp(row + k * 16, 1, 16)] = T.broadcast(T.int8(border), 16)
                        if c % 16 > 0:
                            Y[T.ramp(row + c - 16, 1, 16)] = T.broadcast(T.int8(border), 16)

    return lookup_pad


def _avx2_slices(table: np.ndarray) -> np.ndarray:
    """The 256-entry table as :func:`_lookup32` reads it: 16 slices ``L_k = T_k ^ T_(k+1)`` of 16 entries
    (``L_7 = T_7``, ``L_15 = T_15``), each twice (one per 128-bit lane): 512 bytes."""
    t = table.astype(np.int8).reshape(16, 16)
    diff = t.copy()
    for k in range(16):
        if k % 8 != 7:
            diff[k] = t[k] ^ t[k + 1]
    return np.repeat(diff.reshape(16, 1, 16), 2, axis=1).reshape(512)


def avx2_table(operand: np.ndarray) -> np.ndarray:
    """The 256-entry table of an AVX2 lookup kernel's operand: :func:`_avx2_slices` undone (its
    first 512 bytes; a fixed form after them, :func:`avx2_operand`, is not read)."""
    diff = np.asarray(operand, dtype=np.int8).reshape(-1)[:512].reshape(16, 2, 16)[:, 0, :]
    t = diff.copy()
    for k in range(15, -1, -1):
        if k % 8 != 7:
            t[k] = diff[k] ^ t[k + 1]
    return t.reshape(256)


def _zmm(target: tvm.target.Target) -> bool:
    """True when ``target``'s lookups take :class:`Zmm`: AVX512BW without VBMI (Skylake-SP, Cascade Lake)."""
    return has_feature(target, "avx512bw") and not has_feature(target, "avx512vbmi")


def avx2_live_slices(target: tvm.target.Target, slices: np.ndarray | None) -> Reads:
    """The slices of a table in :func:`_avx2_slices`' layout (512 bytes) the AVX2 lookup reads for ``target``.

    On AVX2-only targets (no AVX-512, no VNNI: Haswell, Zen 2) the slices that
    are all zero are left out, one add and one shuffle fewer each (PP-OCR
    cls: 44 of its tables' 432 slices); AVX512BW targets without VBMI read the
    table's words instead (:class:`Zmm`); other targets read all 16, their code unchanged. All 16 where ``slices`` is not known (None). An operand
    of :func:`avx2_operand` with a fixed form after the slices: that form
    (only :func:`lookup_pass` writes one, for AVX2-only targets).
    """
    if _zmm(target):
        return Zmm()
    if dot_isa(target) is not I16_256 or slices is None:
        return ALL_SLICES
    data = np.asarray(slices).reshape(-1)
    form = decode(data[512:]) if data.size > 512 else None
    if form is not None:
        return form
    rows = data[:512].reshape(16, 32)
    return tuple(k for k in ALL_SLICES if rows[k].any())


def avx2_operand(table: np.ndarray, live: Reads) -> np.ndarray:
    """The AVX2 kernels' table operand: :func:`_avx2_slices`, then a fixed form's encoding when ``live`` is one,
    or the table itself (:class:`Zmm`)."""
    slices = _avx2_slices(table)
    if isinstance(live, Zmm):
        return np.concatenate([slices, np.asarray(table, np.int8).reshape(256)])
    return np.concatenate([slices, live.encode()]) if isinstance(live, FixedForm) else slices


def _avx2_choice(target: tvm.target.Target, table: np.ndarray, program: str | None) -> Reads:
    """What an AVX2 lookup of ``table`` reads on ``target``: its live slices, or its fixed form where that is
    exact and costs fewer instructions per 32 values (AVX2-only targets; ``program``: the table's, as JSON)."""
    live = avx2_live_slices(target, _avx2_slices(table))
    if dot_isa(target) is not I16_256 or program is None:
        return live
    form = fixed_form(Program.from_json(program), table)
    if form is None or form.cost() >= table_cost(len(live)):
        logger.debug("table kept: %s", "no exact int16 form" if form is None else f"form {form.cost()} >= table")
        return live
    return form


def _int8_source(m: Any, index: Any) -> Any:
    """``x`` when ``index`` is ``astype(x: int8, int32) + 128``, else None."""
    add = bound_value(m, index)
    if not is_call(add, "relax.add"):
        return None
    cast, offset = add.args
    value = const_value(offset)
    if value is None or value.size != 1 or int(value.reshape(-1)[0]) != 128:
        return None
    cast = bound_value(m, cast)
    if not is_call(cast, "relax.astype"):
        return None
    x = cast.args[0]
    return x if static_shape(x, "int8") is not None else None


def _arithmetic(m: Any, x: Any, table: np.ndarray, shape: tuple[int, ...]) -> Any:
    """The lookup as float32 arithmetic (:func:`edgekit.compiler.backends.llvm.lookup_arith.arithmetic_lookup`)
    when the lowering recorded the table's program and an exact form exists, else None.

    Not for a per-channel gate (``[1, 1, 1, C]``, squeeze-excite): computed
    arithmetically, fusion put the gate's conv and activation into the
    broadcast multiply that reads it (PP-OCR cls, haswell code: 3 -> 22 us
    per gate on one Zen 5 core).
    """
    program = m.programs.get(table_key(table))
    if program is None or int(np.prod(shape[:-1])) <= 1:
        return None
    return arithmetic_lookup(m, x, table, Program.from_json(program))


def lookup_pass(target: tvm.target.Target) -> Any:
    """Rewrites the integer lowering's table lookups (``take(table, x + 128)``) to hand-written kernels.

    AVX-512 VBMI targets (Ice Lake and later, Zen 4 and later) get
    :func:`_lookup_vbmi_func` (two ``vpermi2b`` per 64 values), other AVX2
    targets :func:`_lookup_avx2_func` (16 ``vpshufb`` per 32 values; four
    ``vpermi2w`` per 64 on AVX512BW targets, :class:`Zmm`; on
    AVX2-only targets the table's int16 fixed-point form where one is exact
    and cheaper, :func:`_avx2_choice`) or, for the CPUs in
    :data:`ARITHMETIC_MCPUS`, float32 arithmetic fused into the producer
    (:func:`_arithmetic`); a no-op elsewhere. The lookup becomes
    its own kernel over int8 data instead of scalar loads in the producer's
    epilogue (PP-OCR cls int8: about 60 of the 95 instructions per 8 outputs
    of its hard-swish layers on VBMI; on a ``haswell`` target its
    200-channel layers spent 109 us each, on one Zen 5 core, in epilogues
    the gathers kept scalar).
    """
    import tvm
    from tvm import relax

    if target.kind.name != "llvm":
        return tvm.transform.Sequential([], name="EdgekitLookups")
    arithmetic = False
    if has_feature(target, "avx512vbmi") and has_feature(target, "avx512bw"):
        kernel, name, layout = _lookup_vbmi_func, VBMI_LOOKUP, (lambda t: t)
    elif dot_isa(target) is not None:  # an x86 target with AVX2
        kernel, name, layout = _lookup_avx2_func, AVX2_LOOKUP, _avx2_slices
        arithmetic = str(target.attrs.get("mcpu", "")) in ARITHMETIC_MCPUS
    else:
        return tvm.transform.Sequential([], name="EdgekitLookups")

    def rewrite(m: Any, call: Any) -> Any:
        table, index = call.args
        values = const_value(table)
        if values is None or values.dtype != np.int8 or values.shape != (256,):
            return None
        x = _int8_source(m, index)
        if x is None:
            return None
        # Tables over fewer values than one step (a squeeze-excite gate,
        # [1, 1, 1, C]) get the kernel too, its scalar tail: left to
        # fusion, the gather went into the consumer's broadcast multiply
        # and ran once per element of the activation instead of once per
        # channel (PP-OCR cls: 6-9 us per gate on one Zen 5 core).
        shape = tuple(static_shape(x, "int8"))
        new = _arithmetic(m, x, values, shape) if arithmetic else None
        if new is not None:
            return new
        args: tuple[Any, ...] = (shape,)  # the kernel's arguments, and its key among the kernels built
        operand = layout(values)
        # (Tensors under one step take the scalar path, which reads every slice: one kernel per shape.)
        whole = int(np.prod(shape)) >= 32
        if kernel is _lookup_avx2_func and whole:
            live = _avx2_choice(target, values, m.programs.get(table_key(values)))
            operand = avx2_operand(values, live)
            if live != ALL_SLICES:
                args = (shape, live)
        if args not in m.funcs:
            m.funcs[args] = m.builder_.add_func(kernel(*args), ZMM_LOOKUP if isinstance(args[-1], Zmm) else name)
        return relax.call_tir(m.funcs[args], relax.Tuple([x, relax.const(operand, "int8")]),
                              relax.TensorType(shape, "int8"))  # fmt: skip

    def setup(mutator: Any) -> None:
        mutator.funcs = {}
        attrs = mutator.builder_.get().attrs
        mutator.programs = {str(k): str(v) for k, v in (attrs or {}).get(LUT_PROGRAMS, {}).items()}

    return calls_rewrite_pass({"relax.take": rewrite}, "EdgekitLookups", setup)

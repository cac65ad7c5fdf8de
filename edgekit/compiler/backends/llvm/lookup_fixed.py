"""int8 lookups as int16 fixed-point arithmetic (AVX2 targets without VBMI), proven per table.

The AVX2 table kernel (:func:`edgekit.compiler.backends.llvm.lookup._lookup32`)
costs about three instructions per live 16-entry slice, ~14 live slices per
hard-swish table: ~42 per 32 values. Hard-swish and hard-sigmoid have a
cheaper int16 form. For the int8 input ``x`` (``t = x - zx``) and 16 lanes:

* ``w = 256 x + b0``: one ``vpunpck[lh]bw`` of a constant byte ``b0`` and ``x``;
* **swish** ``y = zo + R(m t clip(p x + q, lo, hi))`` (hard-swish, ``x * hard_sigmoid(x)``):
  ``v = (w >> 1) + Kv`` = ``128 t`` exactly (``vpsraw``, ``vpaddw``),
  ``c = clip(mulhrs(w, Mc) +s Kc, Lc, Hc)`` ~ ``2^(8+k) m clip(...)``
  (``vpmulhrsw``, ``vpaddsw``, ``vpmaxsw``, ``vpminsw``), ``p = mulhrs(v, c)``
  ~ ``2^k (y - zo)``, ``y = mulhrs(p +s zo 2^k, 2^(15-k))`` (a rounding shift):
  10 instructions per 16 values, 21 per 32 with the ``vpacksswb`` that saturates;
  **swish256** the same with ``v = w +s Kv`` = ``256 t``, saturating where
  ``|t| > 127`` (one ``vpsraw`` fewer: 19 per 32; exact only where the
  saturated lanes' outputs are unaffected, which the emulation decides);
* **linear** ``y = clamp(zo + R(p x + q), L, H)`` (hard-sigmoid, clips,
  requantizations): ``mulhrs(mulhrs(w, A) +s K, 2^(15-k))``, packed, and a
  byte ``vpmaxsb``/``vpminsb`` where ``[L, H]`` is narrower than int8: 9-11.

The constants come from the float32 program the lowering recorded for the
table (:mod:`edgekit.compiler.integer.lut_program`), read by
:func:`_shape_of` as an affine/clip/product expression. Sixteen-bit
intermediates carry ~2^-8 LSB of error, so the ideal constants may miss an
input whose exact value lies near a rounding boundary: :func:`fixed_form`
emulates the exact int16 arithmetic in numpy on all 256 inputs for a small
family of neighbouring constants (multiplier +-2, offsets +-1, ``b0``) and
takes the first that equals the **table** everywhere, or the one with fewest
misses, each miss patched after the pack (``vpcmpeqb``, ``vpand``,
``vpxor``: 3 instructions). The table is the truth; a form is only ever
accepted when its emulation equals the table on every input, and the
caller (:func:`edgekit.compiler.backends.llvm.lookup.lookup_pass`) keeps the
table kernel unless the form costs fewer instructions per 32 values
(:meth:`FixedForm.cost` against :func:`table_cost`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from edgekit.compiler.integer.lut_program import Program

__all__ = ["FixedForm", "MAX_PATCHES", "decode", "fixed_form", "table_cost"]

logger = logging.getLogger(__name__)

#: Most inputs a form may patch (each 3 instructions per 32 values).
MAX_PATCHES = 4
#: Magic bytes before a form's encoding in a lookup kernel's table operand (:meth:`FixedForm.encode`).
_MAGIC = b"EKFX"
#: ``b0`` choices (the low byte of ``w``; it moves the offset of ``mulhrs(w, M)`` by ``b0 M / 2^15``).
_LOW_BYTES = (0, 128, 64, 192)

_MULHRS = "llvm.x86.avx2.pmul.hr.sw"
_PACK = "llvm.x86.avx2.packsswb"
_ADD_SATURATED = "llvm.sadd.sat"

_X = np.arange(-128, 128, dtype=np.int64)
#: The forms' kinds, by their number in :meth:`FixedForm.encode`.
_KINDS = ("", "swish", "linear", "swish256")


def table_cost(live: int) -> int:
    """Instructions per 32 values of the table kernel reading ``live`` slices (an add, a shuffle, an XOR each)."""
    return 3 * live


# --------------------------------------------------------------------------- #
# The exact int16 arithmetic, in numpy
# --------------------------------------------------------------------------- #


def _wrap16(a: np.ndarray) -> np.ndarray:
    return (a + 32768) % 65536 - 32768


def _sat16(a: np.ndarray) -> np.ndarray:
    return np.clip(a, -32768, 32767)


def _mulhrs(a: np.ndarray, b: int | np.ndarray) -> np.ndarray:
    """``vpmulhrsw``: ``((a b >> 14) + 1) >> 1``, its low 16 bits."""
    return _wrap16((((np.asarray(a, np.int64) * b) >> 14) + 1) >> 1)


@dataclass(frozen=True)
class FixedForm:
    """One table as int16 arithmetic (module docstring), with its patched inputs.

    Attributes:
        kind: ``"swish"``, ``"swish256"`` or ``"linear"``.
        k: Fraction bits of the product before the final rounding shift (0: none).
        b0: The low byte of ``w = 256 x + b0``.
        consts: swish and swish256 ``(Kv, Mc, Kc, Lc, Hc, Z)``, linear ``(A, K, L, H)``
            (``Z = zo 2^k``; ``L``, ``H`` int8 bounds).
        patches: ``(x, d)``: the form's byte at input ``x`` XOR ``d`` is the table's.
    """

    kind: str
    k: int
    b0: int
    consts: tuple[int, ...]
    patches: tuple[tuple[int, int], ...] = ()

    def cost(self) -> int:
        """Instructions per 32 values (the cost model of :func:`edgekit.compiler.backends.llvm.lookup.lookup_pass`)."""
        if self.kind != "linear":  # unpack, (sra), add, mulhrs, adds, max, min, mulhrs, adds, (mulhrs)
            per16 = 8 + (self.kind == "swish") + (self.k > 0)
        else:
            per16 = 4 if self.k > 0 else 3  # unpack, mulhrs, adds, (mulhrs)
        clamps = 0 if self.kind != "linear" else (self.consts[2] > -128) + (self.consts[3] < 127)
        return 2 * per16 + 1 + clamps + 3 * len(self.patches)

    def evaluate(self, patched: bool = True) -> np.ndarray:
        """The form's int8 output for each input ``-128 .. 127``, as the kernel computes it."""
        w = 256 * _X + self.b0
        if self.kind != "linear":
            kv, mc, kc, lc, hc, z = self.consts
            v = _wrap16((w >> 1) + kv) if self.kind == "swish" else _sat16(w + kv)
            c = np.clip(_sat16(_mulhrs(w, mc) + kc), lc, hc)
            y = _sat16(_mulhrs(v, c) + z)
        else:
            a, kk, lo, hi = self.consts
            y = _sat16(_mulhrs(w, a) + kk)
        if self.k > 0:
            y = _mulhrs(y, 1 << (15 - self.k))
        y = np.clip(y, -128, 127)
        if self.kind == "linear":
            y = np.clip(y, self.consts[2], self.consts[3])
        y = y.astype(np.int8)
        if patched:
            for x, d in self.patches:
                y[x + 128] ^= np.int8(d)
        return y

    def encode(self) -> np.ndarray:
        """The form as int8 bytes (appended to the kernel's table operand; :func:`decode`)."""
        head = [_KINDS.index(self.kind), self.k, self.b0, len(self.consts), len(self.patches)]
        words = np.array(head + list(self.consts) + [v for p in self.patches for v in p], dtype="<i4")
        return np.frombuffer(_MAGIC + words.tobytes(), dtype=np.int8).copy()

    def step32(self, xv: Any) -> Any:
        """The TIR expression of 32 looked-up values for ``xv`` (an ``int8x32``): AVX2 int16 arithmetic."""
        from tvm.script import tirx as T

        def i16(v: int) -> Any:
            return T.broadcast(T.int16(v), 16)

        def call(name: str, *args: Any, dtype: str = "int16x16") -> Any:
            return T.call_llvm_pure_intrin(dtype, name, *args)

        low = T.broadcast(T.int8(self.b0 - 256 if self.b0 > 127 else self.b0), 32)
        halves = []
        # vpunpcklbw / vpunpckhbw within each 128-bit lane; vpacksswb puts the lanes back in order.
        for elems in ([*range(0, 8), *range(16, 24)], [*range(8, 16), *range(24, 32)]):
            order = [i for e in elems for i in (e, 32 + e)]
            w = T.reinterpret(T.Shuffle([low, xv], order), dtype="int16x16")
            if self.kind != "linear":
                kv, mc, kc, lc, hc, z = self.consts
                v = (w >> i16(1)) + i16(kv) if self.kind == "swish" else call(_ADD_SATURATED, w, i16(kv))
                c = T.min(T.max(call(_ADD_SATURATED, call(_MULHRS, w, i16(mc)), i16(kc)), i16(lc)), i16(hc))
                y = call(_ADD_SATURATED, call(_MULHRS, v, c), i16(z))
            else:
                a, kk, _lo, _hi = self.consts
                y = call(_ADD_SATURATED, call(_MULHRS, w, i16(a)), i16(kk))
            if self.k > 0:
                y = call(_MULHRS, y, i16(1 << (15 - self.k)))
            halves.append(y)
        out = call(_PACK, *halves, dtype="int8x32")
        if self.kind == "linear":
            lo, hi = self.consts[2], self.consts[3]
            if lo > -128:
                out = T.max(out, T.broadcast(T.int8(lo), 32))
            if hi < 127:
                out = T.min(out, T.broadcast(T.int8(hi), 32))
        for x, d in self.patches:
            out = out ^ T.Select(xv == T.broadcast(T.int8(x), 32), T.broadcast(T.int8(d), 32),
                                 T.broadcast(T.int8(0), 32))  # fmt: skip
        return out


def decode(data: np.ndarray) -> FixedForm | None:
    """The form encoded at the start of ``data`` (:meth:`FixedForm.encode`), or None."""
    raw = np.ascontiguousarray(data).astype(np.int8).tobytes()
    if not raw.startswith(_MAGIC):
        return None
    words = np.frombuffer(raw[len(_MAGIC) :], dtype="<i4")
    kind, k, b0, n, m = (int(v) for v in words[:5])
    consts = tuple(int(v) for v in words[5 : 5 + n])
    flat = [int(v) for v in words[5 + n : 5 + n + 2 * m]]
    return FixedForm(_KINDS[kind], k, b0, consts, tuple(zip(flat[::2], flat[1::2])))


# --------------------------------------------------------------------------- #
# Reading the program: affine, clip, product
# --------------------------------------------------------------------------- #

#: ``("aff", p, q)``: ``p x + q``; ``("clip", p, q, lo, hi)``; ``("prod", p1, q1, (p2, q2, lo, hi), m)``:
#: ``m (p1 x + q1) clip(p2 x + q2, lo, hi)``; ``("quant", inner, zo, lo, hi)``: ``clip(R(inner) + zo, lo, hi)``.
_Shape = tuple


def _shape_of(program: Program) -> _Shape | None:
    """The program's value as one of the shapes above (float64 coefficients), or None."""
    vals: list[Any] = []
    for op, args in program.steps:
        a = [vals[i] if isinstance(i, int) else ("c", float(i)) for i in args]
        out = _step(op, a)
        if out is None:
            return None
        vals.append(out)
    last = vals[-1]
    return last if last[0] == "quant" else None


def _step(op: str, a: list[Any]) -> Any:
    if op == "x":
        return ("aff", 1.0, 0.0)
    if op == "rint":
        return ("quant", a[0], 0.0, -np.inf, np.inf) if a[0][0] in ("aff", "clip", "prod") else None
    if len(a) != 2:
        return None
    u, c = a
    if u[0] == "c" and op in ("add", "mul", "max", "min"):
        u, c = c, u
    if c[0] != "c":
        if op == "mul" and {u[0], c[0]} == {"aff", "clip"}:
            aff, clip = (u, c) if u[0] == "aff" else (c, u)
            return ("prod", aff[1], aff[2], clip[1:], 1.0)
        return None
    k = c[1]
    kind = u[0]
    if kind == "aff" and op in ("add", "sub", "mul", "div"):
        _, p, q = u
        if op in ("add", "sub"):
            return ("aff", p, q + k if op == "add" else q - k)
        f = k if op == "mul" else (1.0 / k if k != 0 else np.nan)
        return ("aff", p * f, q * f) if np.isfinite(f) else None
    if kind in ("aff", "clip") and op in ("max", "min"):
        _, p, q, lo, hi = u if kind == "clip" else (*u, -np.inf, np.inf)
        return ("clip", p, q, max(lo, k), hi) if op == "max" else ("clip", p, q, lo, min(hi, k))
    if kind == "clip" and op in ("mul", "div") and k > 0:
        f = k if op == "mul" else 1.0 / k
        _, p, q, lo, hi = u
        return ("clip", p * f, q * f, lo * f, hi * f)
    if kind == "prod" and op in ("mul", "div"):
        return u[:4] + (u[4] * (k if op == "mul" else 1.0 / k),)
    if kind == "quant" and op == "add" and u[3] == -np.inf and u[4] == np.inf:
        return ("quant", u[1], u[2] + k, u[3], u[4])
    if kind == "quant" and op in ("max", "min"):
        _, inner, zo, lo, hi = u
        return ("quant", inner, zo, max(lo, k), hi) if op == "max" else ("quant", inner, zo, lo, min(hi, k))
    return None


# --------------------------------------------------------------------------- #
# The search
# --------------------------------------------------------------------------- #


def _best(candidates: Any, table: np.ndarray) -> FixedForm | None:
    """The first candidate equal to ``table`` everywhere, else the one with fewest misses (patched)."""
    best: tuple[int, FixedForm, np.ndarray] | None = None
    for form in candidates:
        diff = form.evaluate(patched=False) ^ table
        misses = int(np.count_nonzero(diff))
        if best is None or misses < best[0]:
            best = (misses, form, diff)
            if misses == 0:
                break
    if best is None or best[0] > MAX_PATCHES:
        return None
    _, form, diff = best
    patches = tuple((int(x), int(diff[x + 128])) for x in _X if diff[x + 128] != 0)
    return FixedForm(form.kind, form.k, form.b0, form.consts, patches)


def _finite(v: float) -> bool:
    return bool(np.isfinite(v))


def _swish_forms(shape: _Shape, kind: str = "swish") -> Any:
    """Candidate swish (or swish256) forms for ``clip(R(m (p1 x + q1) clip(p2 x + q2, lo, hi)) + zo, -128, 127)``."""
    _, (_, p1, q1, (p2, q2, lo, hi), m), zo, _lo, _hi = shape
    zx = -q1 / p1
    if p1 == 0 or abs(zx - round(zx)) > 1e-9 or abs(zx) > 128 or p2 <= 0 or not (_finite(lo) and _finite(hi)):
        return
    zx = int(round(zx))
    scale = m * p1  # value = scale * t * clip(...)
    if scale <= 0:
        return
    for k in range(7, -1, -1):
        g = scale * 2.0 ** (8 + k - (kind == "swish256"))  # c = g * clip(...): p = v c / 2^15 with v = 128 t or 256 t
        mc0 = 128 * g * p2
        if mc0 > 32765 or max(abs(g * lo), abs(g * hi)) > 32766 or abs(zo * 2**k) > 32767:
            continue
        lc = int(np.rint(g * lo))
        for dm in (0, -1, 1, -2, 2):
            mc = int(round(mc0)) + dm
            for b0 in _LOW_BYTES:
                kv = -128 * zx - (b0 >> 1) if kind == "swish" else max(-32768, min(32767, -256 * zx - b0))
                kc0 = int(np.rint(g * q2 - b0 * mc / 32768))
                for dk in (0, -1, 1):
                    for dh in (0, -1, 1):
                        hc = int(np.rint(g * hi)) + dh
                        yield FixedForm(kind, k, b0, (kv, mc, kc0 + dk, lc, hc, int(zo) * 2**k))
        return  # the largest k that fits only


def _linear_forms(shape: _Shape) -> Any:
    """Candidate linear forms for ``clip(R(clip(p x + q, lo, hi)) + zo, -128, 127)`` (``R`` monotone: the inner
    clip becomes a clamp of the result)."""
    _, inner, zo, _lo, _hi = shape
    _, p, q, lo, hi = inner if inner[0] == "clip" else (*inner, -np.inf, np.inf)
    bottom = max(-128, int(np.rint(lo)) + int(zo)) if _finite(lo) else -128
    top = min(127, int(np.rint(hi)) + int(zo)) if _finite(hi) else 127
    if bottom > top:
        return
    for k in range(7, -1, -1):
        a0 = p * 2.0 ** (7 + k)
        if abs(a0) > 32765:
            continue
        for da in (0, -1, 1, -2, 2):
            a = int(round(a0)) + da
            for b0 in _LOW_BYTES:
                k0 = int(np.rint((q + zo) * 2**k - b0 * a / 32768))
                for dk in (0, -1, 1):
                    if abs(k0 + dk) <= 32767:
                        yield FixedForm("linear", k, b0, (a, k0 + dk, bottom, top))
        return


def fixed_form(program: Program | None, table: np.ndarray) -> FixedForm | None:
    """The int16 form of ``table`` (module docstring) from its program, exact on all 256 inputs, or None."""
    if program is None:
        return None
    shape = _shape_of(program)
    if shape is None or (shape[3], shape[4]) != (-128.0, 127.0) or shape[2] != round(shape[2]):
        return None
    want = np.asarray(table).astype(np.int8)
    families = [_swish_forms(shape, "swish256"), _swish_forms(shape)] if shape[1][0] == "prod" else [_linear_forms(shape)]
    found = [f for f in (_best(forms, want) for forms in families) if f is not None]
    form = min(found, key=FixedForm.cost) if found else None
    if form is not None and not np.array_equal(form.evaluate(), want):  # pragma: no cover - by construction
        return None
    return form


#: What a lookup kernel reads: the table's live slices, or its int16 form.
Live = Union[tuple[int, ...], FixedForm]

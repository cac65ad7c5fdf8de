"""The integer dot-product instructions of x86 targets, as TVM tensor intrinsics.

:func:`dot_isa` picks, by the **target's** LLVM features (never the build
machine's), the instruction :mod:`edgekit.compiler.backends.llvm.int8` builds its int8
micro-kernels around (:class:`DotIsa`), and :func:`register_intrinsics`
registers each one's description and implementation with TVM for
``tensorize``.

TVM 0.27 ships a ``vpdpbusd`` tensor intrinsic (``tvm.s_tir.tensor_intrin.x86``)
but its call signature predates LLVM 21's (``<64 x i8>`` operands) and it
fails to build with the wheel's LLVM 22; the intrinsics here are written for
that signature, and the AVX2/VNNI-256 and int16 variants have no upstream
counterpart (the 512-bit u8 x s8 one, ``U8S8_512``, is TVM's
``dot_16x4_avx512``, written with the AVX2 variant's step at 16 lanes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = [
    "DW_I16_256",
    "DW_ROWS_256",
    "DW_I16_512",
    "DotIsa",
    "I16_256",
    "I16_512",
    "U8S8_256",
    "U8S8_512",
    "VNNI256",
    "VNNI512",
    "dot_isa",
    "has_feature",
    "register_intrinsics",
]

@dataclass(frozen=True)
class DotIsa:
    """One integer dot-product instruction the micro-kernel is built around.

    Attributes:
        name: Short name (``vnni512``, ``vnni256``, ``u8s8_512``, ``u8s8_256``, ``i16_512``, ``i16_256``).
        lanes: int32 accumulators per vector register.
        k: Products summed into each lane per instruction.
        operand: dtype activations and weights are converted to (``uint8``
            means activations ``x + 128`` and int8 weights).
        intrin: Registered tensor-intrinsic name.
        registers: Vector registers of the ISA (tile size limit).
    """

    name: str
    lanes: int
    k: int
    operand: str
    intrin: str
    registers: int

    @property
    def offset(self) -> int:
        """What is added to each int8 activation (128 for the u8 x s8 instructions)."""
        return 128 if self.operand == "uint8" else 0

    @property
    def weight_dtype(self) -> str:
        return "int8" if self.operand == "uint8" else "int16"


VNNI512 = DotIsa("vnni512", 16, 4, "uint8", "edgekit_vpdpbusd_16x4", 32)
VNNI256 = DotIsa("vnni256", 8, 4, "uint8", "edgekit_vpdpbusd_8x4", 16)
U8S8_256 = DotIsa("u8s8_256", 8, 4, "uint8", "edgekit_pmaddubsw_8x4", 16)
#: ``vpmaddubsw zmm`` + ``vpmaddwd zmm`` by ones (AVX512BW without VNNI: Skylake-SP), for the
#: layers whose weights cannot saturate it, as ``U8S8_256`` on AVX2.
U8S8_512 = DotIsa("u8s8_512", 16, 4, "uint8", "edgekit_pmaddubsw_16x4", 32)
I16_512 = DotIsa("i16_512", 16, 2, "int16", "edgekit_pmaddwd_16x2", 32)
I16_256 = DotIsa("i16_256", 8, 2, "int16", "edgekit_pmaddwd_8x2", 16)
#: Depthwise: two kernel taps of one channel per int32 lane (``vpmaddwd`` on
#: the int8 inputs of two neighbouring pixels, widened and interleaved).
DW_I16_512 = DotIsa("dw16", 16, 2, "int16", "edgekit_dw_pmaddwd_16x2", 32)
#: The same on AVX2 (8 channels per ``vpmaddwd ymm``), the pixels interleaved as
#: bytes before the one widening (:func:`_interleaved_taps`).
DW_I16_256 = DotIsa("dw8", 8, 2, "int16", "edgekit_dw_pmaddwd_8x2", 16)
#: ``DW_I16_256`` with the taps of a lane two kernel rows of one column: the step's input is
#: ``[2, 1, L]`` of the NHWC tensor (two rows, one column;
#: :mod:`edgekit.compiler.backends.llvm.depthwise_pairs`).
DW_ROWS_256 = DotIsa("dw8rows", 8, 2, "int16", "edgekit_dw_pmaddwd_8x2_rows", 16)


def has_feature(target: Any, feature: str) -> bool:
    """True when LLVM says ``target`` (not this machine) has ``feature`` (``"avx2"``); False for a target it does not know."""
    from tvm.target.codegen import target_has_features

    try:
        return bool(target_has_features(feature, target))
    except Exception:  # a target LLVM does not know
        return False


def dot_isa(target: tvm.target.Target) -> DotIsa | None:
    """The best integer dot-product instruction of ``target`` (not of this machine), or None.

    Decided by the target's LLVM features (``mcpu``/``mattr``): a package
    compiled for ``-mcpu=haswell`` gets the AVX2 kernels on any build machine.
    """
    if target.kind.name != "llvm":
        return None
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple and not triple.startswith(("x86_64", "i686", "i386")):
        return None
    if has_feature(target, "avx512vnni") and has_feature(target, "avx512bw"):
        return VNNI512
    if has_feature(target, "avxvnni"):
        return VNNI256
    if has_feature(target, "avx512bw"):
        return I16_512
    if has_feature(target, "avx2"):
        return I16_256
    return None


def _dense(isa: DotIsa, body: Any) -> Any:
    """A step of ``isa`` on ``A[k]`` (activations), ``B[lanes, k]`` (weights), ``C[lanes]`` (int32 sums).

    Args:
        isa: Shapes and dtypes.
        body: ``T.macro`` of ``(A, B, C)``: the statements of the step.
    """
    from tvm.script import tirx as T

    lanes, k, operand, weight = isa.lanes, isa.k, isa.operand, isa.weight_dtype

    @T.prim_func(s_tir=True)
    def func(
        A: T.Buffer((k,), operand, offset_factor=1),
        B: T.Buffer((lanes, k), weight, offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:k], B[0:lanes, 0:k])
            T.writes(C[0:lanes])
            body(A, B, C)

    return func


def _depthwise(lanes: int, body: Any, rows: bool = False) -> Any:
    """A depthwise step on ``A[2, lanes]``, ``B[lanes, 2]`` and ``C[lanes]``.

    ``A`` holds the int8 inputs of two taps (rows ``stride`` apart), ``B``
    each channel's int16 tap pair, ``C`` the int32 sums; ``body`` is as in
    :func:`_dense`. ``rows``: ``A`` is ``[2, 1, lanes]`` instead, two rows of
    one column of an NHWC tensor (``DW_ROWS_256``).
    """
    from tvm.script import tirx as T

    if rows:  # (each branch parses its function: the body indexes A as its shape has it)

        @T.prim_func(s_tir=True)
        def rows_func(a: T.handle, b: T.handle, c: T.handle) -> None:
            s0, s1 = T.int64(), T.int64()
            A = T.match_buffer(a, (2, 1, lanes), "int8", strides=[s0, s1, 1], offset_factor=1)
            B = T.match_buffer(b, (lanes, 2), "int16", offset_factor=1)
            C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
            with T.sblock("root"):
                T.reads(C[0:lanes], A[0:2, 0:1, 0:lanes], B[0:lanes, 0:2])
                T.writes(C[0:lanes])
                body(A, B, C)

        return rows_func

    @T.prim_func(s_tir=True)
    def func(a: T.handle, b: T.handle, c: T.handle) -> None:
        stride = T.int64()
        A = T.match_buffer(a, (2, lanes), "int8", strides=[stride, 1], offset_factor=1)
        B = T.match_buffer(b, (lanes, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:2, 0:lanes], B[0:lanes, 0:2])
            T.writes(C[0:lanes])
            body(A, B, C)

    return func


def _products(lanes: int, k: int, input_at: Callable[[Any, Any, Any], Any]) -> Any:
    """What a step computes (its description): ``C[i] += sum_j input_at(A, i, j) * B[i, j]`` in int32."""
    from tvm.script import tirx as T

    @T.macro
    def body(A: Any, B: Any, C: Any) -> None:
        for i in T.serial(0, lanes):
            for j in T.serial(0, k):
                with T.sblock("update"):
                    vi, vj = T.axis.remap("SR", [i, j])
                    C[vi] = C[vi] + T.cast(input_at(A, vi, vj), "int32") * T.cast(B[vi, vj], "int32")

    return body


#: The update one instruction makes: ``(acc, a, w) -> acc'``, all vectors
#: (``acc``, ``acc'``: int32 lanes; ``a``: the activations broadcast to every
#: lane; ``w``: each lane's weights).
_Step = Callable[[Any, Any, Any], Any]


def _llvm(name: str, *args: Any, dtype: str) -> Any:
    """A call of the pure LLVM intrinsic ``name``."""
    from tvm.script import tirx as T

    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)


def _vpdpbusd(llvm: str, lanes: int) -> _Step:
    """``vpdpbusd``: four u8 x s8 products added into each int32 lane by the instruction itself."""
    return lambda acc, a, w: _llvm(llvm, acc, a, w, dtype=f"int32x{lanes}")


def _pmaddwd(llvm: str, lanes: int) -> _Step:
    """``vpmaddwd``: two s16 x s16 products summed into each int32 lane, then added to it."""
    return lambda acc, a, w: acc + _llvm(llvm, a, w, dtype=f"int32x{lanes}")


#: LLVM's ``(vpmaddubsw, vpmaddwd)`` by int32 lanes: ymm (AVX2) and zmm (AVX512BW).
_PMADDUBSW = {
    8: ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"),
    16: ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512"),
}


def _pmaddubsw(lanes: int) -> _Step:
    """``vpmaddubsw`` (u8 x s8 pairs, saturating to s16), then ``vpmaddwd`` by ones (pairs to s32)."""
    from tvm.script import tirx as T

    multiply, widen = _PMADDUBSW[lanes]
    pairs_to_int32 = _pmaddwd(widen, lanes)

    def step(acc: Any, a: Any, w: Any) -> Any:
        pairs = _llvm(multiply, a, w, dtype=f"int16x{2 * lanes}")
        return pairs_to_int32(acc, pairs, T.broadcast(T.int16(1), 2 * lanes))

    return step


def _broadcast_step(isa: DotIsa, packed: str, step: _Step) -> Any:
    """``isa``'s step as one ``step``: the ``k`` activations, as one int32, broadcast to every lane.

    Args:
        isa: Shapes and dtypes of the step.
        packed: Element type the instruction takes the broadcast activations as.
        step: The instruction(s).
    """
    from tvm.script import tirx as T

    lanes, k, operand, weight = isa.lanes, isa.k, isa.operand, isa.weight_dtype

    @T.macro
    def body(A: Any, B: Any, C: Any) -> None:
        # meta_var: an expression, not a named vector. A named one is a local
        # buffer, which TVM 0.27 takes from the heap (TVMBackendAllocWorkspace)
        # once per iteration of the kernel's parallel loop (SqueezeNet int8,
        # znver4: 0.87x of the time with the expression).
        a = T.meta_var(T.reinterpret(
            T.broadcast(T.reinterpret(A.vload([0], f"{operand}x{k}"), dtype="int32"), lanes),
            dtype=f"{packed}x{k * lanes}",
        ))
        C[T.ramp(T.int32(0), 1, lanes)] = step(
            C.vload([0], dtype=f"int32x{lanes}"), a, B.vload([0, 0], dtype=f"{weight}x{k * lanes}")
        )

    return body


def _interleaved_taps(lanes: int, llvm: str, bytes_first: bool = False, rows: bool = False) -> Any:
    """The depthwise step as one ``vpmaddwd`` on the two taps' inputs, interleaved and widened.

    ``bytes_first`` (AVX2): the int8 inputs are interleaved and the pairs
    widened once -- one ``vpunpcklbw`` and one ``vpmovsxbw`` per step, where
    widening each input and interleaving the int16 vectors costs AVX2 a
    lane-crossing shuffle more. The operand depends only on the two pixels,
    so a register tile whose outputs share them (a kernel wider than 2)
    builds it once. ``rows``: the step's ``A`` is ``[2, 1, lanes]``
    (:func:`_depthwise`).
    """
    from tvm.script import tirx as T

    # Lanes (x[p][c], x[p + 1][c]) for each channel c: one vpmaddwd
    # multiplies both taps and adds them in 32 bits (exact).
    order = [i // 2 + (i % 2) * lanes for i in range(2 * lanes)]
    accumulate = _pmaddwd(llvm, lanes)

    def pairs(A: Any) -> Any:
        pixels = [A.vload([t] + [0] * (2 if rows else 1), f"int8x{lanes}") for t in (0, 1)]
        if bytes_first:
            return T.Cast(f"int16x{2 * lanes}", T.Shuffle(pixels, order))
        return T.Shuffle([T.Cast(f"int16x{lanes}", p) for p in pixels], order)

    @T.macro
    def body(A: Any, B: Any, C: Any) -> None:
        # One expression: a named intermediate would become a local
        # buffer (T.alloc_local), not a value in a register.
        C[T.ramp(T.int32(0), 1, lanes)] = accumulate(
            C.vload([0], dtype=f"int32x{lanes}"), pairs(A), B.vload([0, 0], dtype=f"int16x{2 * lanes}")
        )

    return body


_REGISTERED: set[str] = set()


def register_intrinsics() -> None:
    """Registers the tensor intrinsics with TVM (once per process)."""
    if _REGISTERED:
        return
    from tvm.s_tir import TensorIntrin

    dw = DW_I16_512.lanes
    TensorIntrin.register(
        DW_I16_512.intrin,
        _depthwise(dw, _products(dw, 2, lambda A, i, j: A[j, i])),
        _depthwise(dw, _interleaved_taps(dw, "llvm.x86.avx512.pmaddw.d.512")),
    )
    dw = DW_I16_256.lanes
    TensorIntrin.register(
        DW_I16_256.intrin,
        _depthwise(dw, _products(dw, 2, lambda A, i, j: A[j, i])),
        _depthwise(dw, _interleaved_taps(dw, "llvm.x86.avx2.pmadd.wd", bytes_first=True)),
    )
    TensorIntrin.register(
        DW_ROWS_256.intrin,
        _depthwise(dw, _products(dw, 2, lambda A, i, j: A[j, 0, i]), rows=True),
        _depthwise(dw, _interleaved_taps(dw, "llvm.x86.avx2.pmadd.wd", bytes_first=True, rows=True), rows=True),
    )
    # vpdpbusd takes its u8 operand as <N x i8> since LLVM 21.
    for isa, packed, step in (
        (VNNI512, "int8", _vpdpbusd("llvm.x86.avx512.vpdpbusd.512", 16)),
        (VNNI256, "int8", _vpdpbusd("llvm.x86.avx512.vpdpbusd.256", 8)),
        (U8S8_512, "uint8", _pmaddubsw(16)),
        (U8S8_256, "uint8", _pmaddubsw(8)),
        (I16_512, "int16", _pmaddwd("llvm.x86.avx512.pmaddw.d.512", 16)),
        (I16_256, "int16", _pmaddwd("llvm.x86.avx2.pmadd.wd", 8)),
    ):
        description = _products(isa.lanes, isa.k, lambda A, i, j: A[j])
        TensorIntrin.register(isa.intrin, _dense(isa, description), _dense(isa, _broadcast_step(isa, packed, step)))
    _REGISTERED.add("all")

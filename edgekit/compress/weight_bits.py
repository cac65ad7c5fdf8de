"""How many bits the int8 weights use, chosen by the target board's CPU (``QuantConfig.weight_bits``).

int8 weights normally span ``[-127, 127]``. On an x86 CPU with AVX2 and no
VNNI the fastest int8 product is ``vpmaddubsw`` (u8 activations x s8 weights,
32 products per instruction), which adds each pair of products in 16 bits
and saturates: with full 8-bit weights a pair reaches ``2 * 255 * 127`` =
64,770. The integer kernels (:mod:`edgekit.compiler.backends.llvm.int8`) use
it only for a layer whose weights provably cannot saturate it and otherwise
multiply int16 with ``vpmaddwd`` (16 products per instruction), so with
8-bit weights hardly any real layer qualifies. Weights in ``[-64, 64]``
(onnxruntime's ``reduce_range``, what its docs advise for AVX2 and AVX-512
without VNNI) always qualify: ``2 * 255 * 64 = 32,640``.

``auto`` therefore gives 7-bit weights where the *target's* CPU (never the
build machine's; :func:`edgekit.core.cpu_features.isa_features`) is x86 with
AVX2 and neither AVX512-VNNI nor AVX-VNNI -- on AVX512BW (Skylake-SP,
``-mcpu skylake-avx512``) the same product on ``zmm`` registers, 64 per
``vpmaddubsw`` against 32 per int16 ``vpmaddwd`` (BENCHMARKS.md, "int8 on
AVX-512 without VNNI") -- except the AVX2-only CPUs with one vector multiply
port (Haswell, Broadwell, Zen 1 and Zen 2: ``vpmaddubsw`` needs a
``vpmaddwd`` by ones after it, so both forms do 16 products per cycle there
and 7 bits would buy nothing but halved weight bytes), and 8-bit weights
everywhere else:
``vpdpbusd`` adds the products in 32 bits, AArch64's ``smlal``/``sdot`` and
the MCU kernels multiply int8 in full, and the accelerator and GPU targets
take the model's int8 as it is. 7 bits cost accuracy (one bit of weight
resolution: measured in BENCHMARKS.md, "int8 on AVX2-only targets"), so an
explicit ``7`` or ``8`` always wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgekit.core.cpu_features import isa_features

if TYPE_CHECKING:  # pragma: no cover
    from edgekit.core.profiles import Target

__all__ = ["WeightBits", "choose_weight_bits", "weight_range"]

#: x86 extensions with an int8 dot product that adds in 32 bits (LLVM's names).
VNNI = ("avx512vnni", "avxvnni")
#: AVX2 CPUs (LLVM ``-mcpu`` names) whose vector integer multiplies all issue on one
#: port (LLVM's scheduling models; llvm-mca in BENCHMARKS.md, "int8 on AVX2-only
#: targets": haswell and znver2 give 16 products per cycle with either form).
ONE_MULTIPLY_PORT = frozenset({"haswell", "core-avx2", "broadwell", "znver1", "znver2"})


@dataclass(frozen=True)
class WeightBits:
    """The weight width chosen and why (the quantization report shows both).

    Attributes:
        bits: 8 (``[-127, 127]``) or 7 (``[-64, 64]``).
        reason: One line saying why, naming the target's CPU features.
    """

    bits: int
    reason: str


def weight_range(bits: int) -> str:
    """The int8 weight values ``bits`` allows, as text."""
    return "[-64, 64]" if bits == 7 else "[-127, 127]"


def choose_weight_bits(target: Target | None, asked: int | str = "auto") -> WeightBits:
    """The weight width for ``target`` (a board's target profile): ``asked`` unless it is ``auto``.

    Args:
        target: The board's target, or ``None`` (no board: 8 bits).
        asked: ``QuantConfig.weight_bits``: ``auto``, 8 or 7.
    """
    if asked != "auto":
        return WeightBits(int(asked), f"weight_bits = {asked} was asked for")
    if target is None:
        return WeightBits(8, "no target board given")
    if target.codegen != "llvm":
        return WeightBits(8, f"{target.name} compiles through {target.codegen}, whose int8 kernels take 8-bit weights")
    tvm_target = target.tvm_target()
    features = isa_features(tvm_target)
    cpu = f"{target.name} ({tvm_target.attrs.get('mcpu') or target.isa})"
    if not features:
        return WeightBits(8, f"{cpu} is not x86: its int8 kernels have no 16-bit pair sums to saturate")
    vnni = [f for f in VNNI if f in features]
    if vnni:
        return WeightBits(8, f"{cpu} has {vnni[0]}: vpdpbusd adds the int8 products in 32 bits")
    if "avx512bw" in features:
        return WeightBits(7, f"{cpu} has AVX-512BW without VNNI: vpmaddubsw zmm (64 products per instruction) "
                             "cannot saturate with 7-bit weights; 8-bit ones take vpmaddwd zmm on int16 (32)")
    if "avx2" in features and str(tvm_target.attrs.get("mcpu") or "") in ONE_MULTIPLY_PORT:
        return WeightBits(8, f"{cpu} has one vector multiply port: vpmaddubsw and the vpmaddwd that widens its "
                             "pairs do 16 products per cycle there, as vpmaddwd on int16 does (llvm-mca), so 7 bits "
                             "would cost accuracy for no speed")
    if "avx2" in features:
        return WeightBits(7, f"{cpu} has AVX2 without VNNI: vpmaddubsw (32 products per instruction) cannot "
                             "saturate with 7-bit weights; 8-bit ones take vpmaddwd on int16 (16)")
    return WeightBits(8, f"{cpu} has no AVX2: no int8 dot-product kernel depends on the weight width")

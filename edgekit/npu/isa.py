"""Instruction set of edgekit's int8 accelerator: encoding and decoding.

Every instruction is one 256-bit little-endian word (:data:`INSN_BYTES`).
Bits 0-2 hold the opcode, bits 3-6 the four dependency-token flags
(decoupled access/execute, as in VTA); the rest are opcode-specific fields
laid out in the order each class declares them, each as wide as its
``_field`` says. The layout and the meaning of each field are documented in
``docs/npu-isa.md``.

Three modules execute the stream, each in program order:

* **load**: ``LOAD`` into the input or weight buffer;
* **compute**: ``GEMM``, ``ALU``, ``FINISH`` and ``LOAD`` into the
  accumulator buffer (parameters, residual operands);
* **store**: ``STORE`` from the accumulator buffer to DRAM.

Tokens travel between neighbouring modules through four queues:
load->compute (``l2c``), compute->load (``c2l``), compute->store (``c2s``)
and store->compute (``s2c``). ``pop_*`` waits for a token before the
instruction starts, ``push_*`` sends one when it ends.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, ClassVar, Iterable, Sequence

__all__ = [
    "INSN_BYTES",
    "Opcode",
    "Buffer",
    "AluOp",
    "Module",
    "Deps",
    "Insn",
    "Load",
    "Store",
    "Gemm",
    "Alu",
    "Finish",
    "module_of",
    "encode",
    "decode",
    "encode_program",
    "decode_program",
    "IsaError",
    "field_table",
]

logger = logging.getLogger(__name__)

#: Size of one encoded instruction.
INSN_BYTES = 32
_WORD_BITS = INSN_BYTES * 8
_HEADER_BITS = 7  # opcode (3) + four token flags


class IsaError(ValueError):
    """An instruction field is out of range or a word is not an instruction."""


class Opcode(IntEnum):
    """Top-level operation."""

    LOAD = 0
    STORE = 1
    GEMM = 2
    ALU = 3
    FINISH = 4


class Buffer(IntEnum):
    """On-chip buffers a ``LOAD`` can fill."""

    INP = 0  # input activations, entries of ROWS int8
    WGT = 1  # weights, entries of ROWS x COLS int8
    ACC = 2  # accumulators and parameters, entries of COLS int32


class AluOp(IntEnum):
    """Vector operations on accumulator entries."""

    ADD = 0  # acc[dst] += acc[param]           (bias add, per lane)
    REQUANT = 1  # fixed-point requantize with zin, optional ReLU, zout, clamp
    RESADD = 2  # residual add of two int8 operands, rescaled, one rounding


class Module(IntEnum):
    """The three decoupled execution modules."""

    LOAD = 0
    COMPUTE = 1
    STORE = 2


@dataclass(frozen=True)
class Deps:
    """Dependency-token flags of one instruction.

    ``prev``/``next`` are relative to the instruction's module in the
    load -> compute -> store chain.
    """

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    def bits(self) -> int:
        return int(self.pop_prev) | int(self.pop_next) << 1 | int(self.push_prev) << 2 | int(self.push_next) << 3

    @classmethod
    def from_bits(cls, value: int) -> "Deps":
        return cls(bool(value & 1), bool(value & 2), bool(value & 4), bool(value & 8))

    def __or__(self, other: "Deps") -> "Deps":
        return Deps(
            self.pop_prev or other.pop_prev,
            self.pop_next or other.pop_next,
            self.push_prev or other.push_prev,
            self.push_next or other.push_next,
        )


def _field(bits: int, *, default: int = 0, signed: bool = False) -> Any:
    """An instruction field ``bits`` wide in the word (two's complement when ``signed``)."""
    return field(default=default, metadata={"bits": bits, "signed": signed})


@dataclass(frozen=True)
class Insn:
    """Base of every instruction: the token flags, then the fields in word order (see :func:`_layout`)."""

    OPCODE: ClassVar[Opcode]
    deps: Deps = Deps()

    def __post_init__(self) -> None:
        for name, bits, signed in _layout(type(self)):
            value = getattr(self, name)
            if isinstance(value, bool):
                value = int(value)
            if not isinstance(value, int):
                raise IsaError(f"{type(self).__name__}.{name} must be an integer, got {value!r}")
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
            if not lo <= value <= hi:
                raise IsaError(f"{type(self).__name__}.{name} = {value} does not fit {bits} bits ({lo}..{hi})")


@functools.cache
def _layout(cls: type[Insn]) -> tuple[tuple[str, int, bool], ...]:
    """(name, bits, signed) of each field of ``cls`` after the header, in word order (declaration order)."""
    return tuple((f.name, f.metadata["bits"], f.metadata["signed"]) for f in fields(cls) if "bits" in f.metadata)


def _total_bits(cls: type[Insn]) -> int:
    return _HEADER_BITS + sum(b for _, b, _ in _layout(cls))


@dataclass(frozen=True)
class Load(Insn):
    """2-D strided DMA from DRAM into an on-chip buffer, with zero-point padding.

    Copies ``y_size`` rows of ``x_size`` elements; each element is ``chunk``
    consecutive buffer entries read from ``dram_addr + y*y_stride +
    x*x_stride``. Around the box the DMA writes ``pad_*`` elements whose
    bytes all equal ``pad_value`` (the input zero point), so padding costs
    no DRAM traffic. In the buffer the padded box is dense and row-major:
    ``sram_base + ((y + pad_top) * (x_size + pad_left + pad_right) + x +
    pad_left) * chunk + k``. For ``ACC`` loads ``int8_src`` selects
    sign-extended int8 elements (``COLS`` bytes per entry) instead of int32.
    """

    OPCODE: ClassVar[Opcode] = Opcode.LOAD
    buffer: int = _field(2, default=Buffer.INP)
    int8_src: int = _field(1)
    sram_base: int = _field(20)
    dram_addr: int = _field(40)
    y_size: int = _field(12, default=1)
    x_size: int = _field(12, default=1)
    chunk: int = _field(16, default=1)
    x_stride: int = _field(24)
    y_stride: int = _field(32)
    pad_top: int = _field(8)
    pad_bottom: int = _field(8)
    pad_left: int = _field(8)
    pad_right: int = _field(8)
    pad_value: int = _field(8, signed=True)


@dataclass(frozen=True)
class Store(Insn):
    """2-D strided DMA from accumulator entries (int8 values) to DRAM.

    Entry ``sram_base + (y * x_size + x) * chunk + k`` goes, as ``COLS``
    int8 bytes, to ``dram_addr + y*y_stride + x*x_stride + k*COLS``.
    """

    OPCODE: ClassVar[Opcode] = Opcode.STORE
    sram_base: int = _field(20)
    dram_addr: int = _field(40)
    y_size: int = _field(12, default=1)
    x_size: int = _field(12, default=1)
    chunk: int = _field(16, default=1)
    x_stride: int = _field(24)
    y_stride: int = _field(32)


@dataclass(frozen=True)
class Gemm(Insn):
    """Streams ``ext_outer * ext_inner`` input vectors through the array.

    For ``i < ext_outer, j < ext_inner``::

        acc[acc_base + i*acc_so + j*acc_si]  (+)=  inp[inp_base + i*inp_so + j*inp_si] @ wgt[wgt_base]

    with int32 accumulation (wrapping, as the hardware adders do); ``reset``
    overwrites instead of accumulating.
    """

    OPCODE: ClassVar[Opcode] = Opcode.GEMM
    reset: int = _field(1)
    acc_base: int = _field(20)
    inp_base: int = _field(20)
    wgt_base: int = _field(20)
    ext_outer: int = _field(12, default=1)
    ext_inner: int = _field(12, default=1)
    acc_so: int = _field(20)
    acc_si: int = _field(16)
    inp_so: int = _field(20)
    inp_si: int = _field(16)


@dataclass(frozen=True)
class Alu(Insn):
    """Vector ALU over ``count`` accumulator entries ``dst_base + k*stride``.

    Parameters are accumulator entries (one int32 per lane) from
    ``param_base``: ``ADD``: [addend]; ``REQUANT``: [multiplier, shift];
    ``RESADD``: [multiplier_a, multiplier_b, shift] with operand b at
    ``src_base + k*stride``. The datapath is 64 bits wide::

        REQUANT: x = acc - zin; x = max(x, 0) if relu
                 acc = clamp(((x*m + 2**(n-1)) >> n) + zout, lo, hi)
        RESADD:  x = (acc - zin)*ma + (src - zin_b)*mb
                 acc = clamp(((x + 2**(n-1)) >> n) + zout, lo, hi)
    """

    OPCODE: ClassVar[Opcode] = Opcode.ALU
    op: int = _field(4, default=AluOp.ADD)
    dst_base: int = _field(20)
    src_base: int = _field(20)
    param_base: int = _field(20)
    count: int = _field(20, default=1)
    stride: int = _field(16, default=1)
    relu: int = _field(1)
    zin: int = _field(9, signed=True)
    zin_b: int = _field(9, signed=True)
    zout: int = _field(9, signed=True)
    lo: int = _field(9, default=-128, signed=True)
    hi: int = _field(9, default=127, signed=True)


@dataclass(frozen=True)
class Finish(Insn):
    """Ends a program; the device posts a completion when all modules are idle."""

    OPCODE: ClassVar[Opcode] = Opcode.FINISH


_CLASSES: dict[Opcode, type[Insn]] = {c.OPCODE: c for c in (Load, Store, Gemm, Alu, Finish)}
for _cls in _CLASSES.values():
    assert _total_bits(_cls) <= _WORD_BITS, f"{_cls.__name__} needs {_total_bits(_cls)} bits"


def module_of(insn: Insn) -> Module:
    """The module that executes ``insn``."""
    if isinstance(insn, Load):
        return Module.COMPUTE if insn.buffer == Buffer.ACC else Module.LOAD
    if isinstance(insn, Store):
        return Module.STORE
    return Module.COMPUTE


def encode(insn: Insn) -> bytes:
    """Packs one instruction into :data:`INSN_BYTES` little-endian bytes."""
    word = int(insn.OPCODE) | insn.deps.bits() << 3
    pos = _HEADER_BITS
    for name, bits, _signed in _layout(type(insn)):
        value = int(getattr(insn, name)) & ((1 << bits) - 1)
        word |= value << pos
        pos += bits
    return word.to_bytes(INSN_BYTES, "little")


def decode(data: bytes) -> Insn:
    """Unpacks one instruction word.

    Raises:
        IsaError: the word is not :data:`INSN_BYTES` long, has an unknown
            opcode or non-zero bits past its last field.
    """
    if len(data) != INSN_BYTES:
        raise IsaError(f"an instruction is {INSN_BYTES} bytes, got {len(data)}")
    word = int.from_bytes(data, "little")
    try:
        cls = _CLASSES[Opcode(word & 7)]
    except ValueError:
        raise IsaError(f"unknown opcode {word & 7}") from None
    values: dict[str, object] = {"deps": Deps.from_bits(word >> 3 & 0xF)}
    pos = _HEADER_BITS
    for name, bits, signed in _layout(cls):
        value = word >> pos & ((1 << bits) - 1)
        if signed and value >> (bits - 1):
            value -= 1 << bits
        values[name] = value
        pos += bits
    if word >> pos:
        raise IsaError(f"{cls.__name__} word has stray bits above bit {pos}")
    return cls(**values)  # type: ignore[arg-type]


def encode_program(insns: Iterable[Insn]) -> bytes:
    """Concatenated encodings of ``insns``."""
    return b"".join(encode(i) for i in insns)


def decode_program(data: bytes) -> list[Insn]:
    """Inverse of :func:`encode_program`.

    Raises:
        IsaError: the length is not a multiple of :data:`INSN_BYTES` or a word is invalid.
    """
    if len(data) % INSN_BYTES:
        raise IsaError(f"program of {len(data)} bytes is not a whole number of {INSN_BYTES}-byte instructions")
    return [decode(data[i : i + INSN_BYTES]) for i in range(0, len(data), INSN_BYTES)]


def field_table(cls: type[Insn]) -> Sequence[tuple[str, int, int]]:
    """(name, first bit, width) of every field of ``cls``, header included (for docs)."""
    rows = [("opcode", 0, 3), ("deps", 3, 4)]
    pos = _HEADER_BITS
    for name, bits, _ in _layout(cls):
        rows.append((name, pos, bits))
        pos += bits
    return rows


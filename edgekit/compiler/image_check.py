"""Checks a linked MCU firmware image against its own linker map and the board.

The linker only refuses an image whose regions overflow; it happily places an
orphan section (one the script does not name) wherever it fits. Issue 16
found exactly that: the GOT of TVM's kernels landed at the start of the
weights slots, the first upload overwrote it, and the core jumped through a
slot header word. This module reads the ELF after linking and refuses, at
compile time and with the numbers:

- an allocated section outside the flash and RAM regions the script declares,
  or regions larger than the board profile says the chip has;
- any allocated section that overlaps the weights slots (the agent rewrites
  them on every upload);
- a stack region (``__stack_top - STACK_BYTES`` up to ``__stack_top``) that
  overlaps ``.data``/``.bss`` or leaves RAM;
- weights larger than one slot: the agent splits the slot storage in two
  halves (verify-then-commit) and refuses ``LOAD_BEGIN`` with
  ``ERR_TOO_LARGE`` beyond :func:`slot_capacity`.

The linker script publishes its memory map as symbols (``__ek_flash_start``,
``__ek_ram_start``, ``__ek_slots_start``, ``__ek_slots_end``,
``__stack_top``, ``STACK_BYTES``), so the image describes itself.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.core.errors import CompileError, DoesNotFitError

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = ["ImageMap", "read_image_map", "slot_capacity", "check_image", "SLOT_HEADER_BYTES", "MAP_SYMBOLS"]

logger = logging.getLogger(__name__)

#: Bytes of ``ek_slot_hdr_t`` at the start of each slot (firmware_stubs/agent/ek_slots.h).
SLOT_HEADER_BYTES = 64
#: Linker-script symbols the check needs.
MAP_SYMBOLS = ("__ek_flash_start", "__ek_ram_start", "__ek_slots_start", "__ek_slots_end", "__stack_top", "STACK_BYTES")

_SHF_WRITE, _SHF_ALLOC = 0x1, 0x2


def slot_capacity(slots_start: int, slots_end: int) -> int:
    """Largest weights image one slot takes; mirrors ``ek_slots_init`` /
    ``ek_slots_capacity`` in firmware_stubs/agent/ek_slots.c (two halves,
    each rounded down to 16 bytes, minus its header)."""
    slot = ((slots_end - slots_start) // 2) & ~15
    return max(0, slot - SLOT_HEADER_BYTES)


@dataclass(frozen=True)
class ImageMap:
    """Where a linked image put things.

    Attributes:
        sections: ``(name, address, size, writable)`` of every allocated, non-empty section.
        symbols: The :data:`MAP_SYMBOLS` values.
    """

    sections: tuple[tuple[str, int, int, bool], ...]
    symbols: dict[str, int]

    @property
    def flash(self) -> tuple[int, int]:
        """Flash region ``(start, end)``: it ends where the slots end."""
        return self.symbols["__ek_flash_start"], self.symbols["__ek_slots_end"]

    @property
    def ram(self) -> tuple[int, int]:
        """RAM region ``(start, end)``: the stack starts at its top."""
        return self.symbols["__ek_ram_start"], self.symbols["__stack_top"]

    @property
    def slots(self) -> tuple[int, int]:
        """Weights-slot storage ``(start, end)``."""
        return self.symbols["__ek_slots_start"], self.symbols["__ek_slots_end"]

    @property
    def stack(self) -> tuple[int, int]:
        """Stack region ``(lowest address, top)``."""
        top = self.symbols["__stack_top"]
        return top - self.symbols["STACK_BYTES"], top

    @property
    def slot_capacity(self) -> int:
        """Largest weights image the agent accepts."""
        return slot_capacity(*self.slots)


def read_image_map(elf: bytes) -> ImageMap:
    """Reads sections and map symbols from a linked firmware ELF.

    Raises:
        CompileError: the image lacks a map symbol (a linker script that is
            not edgekit's, or a stripped image).
    """
    from elftools.elf.elffile import ELFFile

    f = ELFFile(io.BytesIO(elf))
    sections = []
    for sec in f.iter_sections():
        flags = sec["sh_flags"]
        if flags & _SHF_ALLOC and sec["sh_size"]:
            sections.append((sec.name, int(sec["sh_addr"]), int(sec["sh_size"]), bool(flags & _SHF_WRITE)))
    symtab = f.get_section_by_name(".symtab")
    symbols: dict[str, int] = {}
    for name in MAP_SYMBOLS:
        found = symtab.get_symbol_by_name(name) if symtab is not None else None
        if found:
            symbols[name] = int(found[0]["st_value"])
    missing = [n for n in MAP_SYMBOLS if n not in symbols]
    if missing:
        raise CompileError(
            f"the firmware image does not publish its memory map (missing {', '.join(missing)})",
            hint="Link it with the linker script from firmware_stubs/ports, unstripped.",
            missing=missing,
        )
    return ImageMap(tuple(sections), symbols)


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _placement_problems(m: ImageMap, board: "Board") -> list[str]:
    problems = []
    (f0, f1), (r0, r1) = m.flash, m.ram
    if board.memory.flash_bytes and f1 - f0 > board.memory.flash_bytes:
        problems.append(f"the linker script's flash ({f1 - f0} B) is larger than the board's ({board.memory.flash_bytes} B)")
    if board.memory.ram_bytes and r1 - r0 > board.memory.ram_bytes:
        problems.append(f"the linker script's RAM ({r1 - r0} B) is larger than the board's ({board.memory.ram_bytes} B)")
    stack = m.stack
    if stack[0] < r0:
        problems.append(f"the {m.symbols['STACK_BYTES']} B stack does not fit RAM")
    for name, addr, size, writable in m.sections:
        span = (addr, addr + size)
        where = f"section {name} at {addr:#x}..{addr + size:#x}"
        if not (f0 <= addr and span[1] <= f1) and not (r0 <= addr and span[1] <= r1):
            problems.append(f"{where} lies outside flash {f0:#x}..{f1:#x} and RAM {r0:#x}..{r1:#x}")
        if name != ".ek_slots" and _overlap(span, m.slots):
            problems.append(
                f"{where} overlaps the weights slots {m.slots[0]:#x}..{m.slots[1]:#x} (every upload rewrites them)"
            )
        if _overlap(span, stack):
            problems.append(f"{where} overlaps the stack {stack[0]:#x}..{stack[1]:#x}")
    return problems


def check_image(elf: bytes, board: "Board", weight_bytes: int) -> dict[str, Any]:
    """Checks placement and slot capacity of a linked image.

    Args:
        elf: The linked firmware image.
        board: The board it is for.
        weight_bytes: Size of the package's ``weights.bin``.

    Returns:
        Figures for the manifest: ``slot_capacity_bytes``, ``stack_bytes``,
        ``ram_free_bytes`` (RAM between the last section and the stack).

    Raises:
        CompileError: a section is misplaced (the message names it).
        DoesNotFitError: the weights are larger than one slot.
    """
    m = read_image_map(elf)
    problems = _placement_problems(m, board)
    if problems:
        raise CompileError(
            f"the linked firmware for '{board.name}' is unsafe: {'; '.join(problems)}",
            hint="Place the named sections explicitly in the port's linker script (firmware_stubs/ports/*/link.ld); "
            "this is a bug in edgekit's firmware, please report it.",
            problems=problems,
        )
    capacity = m.slot_capacity
    if weight_bytes > capacity:
        flash0, flash1 = m.flash
        slots0, slots1 = m.slots
        raise DoesNotFitError(
            f"the weights ({weight_bytes} B) do not fit a weights slot on '{board.name}': the device keeps two slots "
            f"(verify-then-commit) in the {slots1 - slots0} B of flash after the firmware's "
            f"{slots0 - flash0} B, so one slot holds {capacity} B (flash {flash1 - flash0} B)",
            hint="Shrink the weights: quantize to int8 (`edgekit compress --quantize int8`), prune with "
            "--weight-storage auto, or pick a board with more flash.",
            board=board.name,
            weight_bytes=weight_bytes,
            slot_capacity_bytes=capacity,
            flash_bytes=flash1 - flash0,
        )
    ram_end = max((a + s for _, a, s, _w in m.sections if m.ram[0] <= a < m.ram[1]), default=m.ram[0])
    return {
        "slot_capacity_bytes": capacity,
        "stack_bytes": m.symbols["STACK_BYTES"],
        "ram_free_bytes": max(0, m.stack[0] - ram_end),
    }

"""Reads a device's weights-slot storage from outside, as an independent oracle.

Tests and ``benchmarks/reliability.py`` must not trust the device's own answers
to decide whether an upload was silently corrupted, so this module parses the
slot layout of ``firmware_stubs/agent/ek_slots.c`` straight from the storage
bytes (the POSIX agent's storage file, the simulated MCU's flash) and applies
the agent's boot rule: the ``VALID`` slot with the highest generation wins.
Hand-written mirror of the C layout; keep the two in sync.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass

__all__ = ["SlotState", "BootImage", "parse_slots", "boot_image", "SLOT_HEADER_BYTES"]

logger = logging.getLogger(__name__)

SLOT_HEADER_BYTES = 64
_MAGIC = 0x4C534B45  # "EKSL"
_STATE_RECEIVING = 0x56434552  # "RECV"
_STATE_VALID = 0x444C4156  # "VALD"
_HDR = struct.Struct("<IIIII12x32s")


@dataclass(frozen=True)
class SlotState:
    """One slot's header plus its data as stored.

    Attributes:
        index: Slot number (0 or 1).
        valid: Header says ``VALID`` with the right magic and a size that fits.
        receiving: Header says an upload is in progress.
        size / generation / received: Header words.
        recorded_sha256: The SHA-256 the header records.
        data: The first ``size`` bytes of the slot (empty unless valid or receiving).
    """

    index: int
    valid: bool
    receiving: bool
    size: int
    generation: int
    received: int
    recorded_sha256: bytes
    data: bytes


@dataclass(frozen=True)
class BootImage:
    """What the agent would run after a reset.

    Attributes:
        slot: Active slot index, or None when no slot is valid.
        data: The active image (empty when none).
        intact: The image's SHA-256 equals the one its header recorded.
    """

    slot: int | None
    data: bytes
    intact: bool

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the active image's bytes."""
        return hashlib.sha256(self.data).digest()


def parse_slots(storage: bytes) -> list[SlotState]:
    """Parses both slots of a storage area (layout of ``ek_slots.c``)."""
    slot_bytes = (len(storage) // 2) & ~15
    capacity = max(0, slot_bytes - SLOT_HEADER_BYTES)
    slots = []
    for s in range(2):
        base = s * slot_bytes
        magic, state, size, gen, received, sha = _HDR.unpack_from(storage, base)
        ours = magic == _MAGIC
        valid = ours and state == _STATE_VALID and size <= capacity
        receiving = ours and state == _STATE_RECEIVING and size <= capacity
        data = bytes(storage[base + SLOT_HEADER_BYTES : base + SLOT_HEADER_BYTES + size]) if (valid or receiving) else b""
        slots.append(SlotState(s, valid, receiving, size, gen, received, sha, data))
    return slots


def boot_image(storage: bytes) -> BootImage:
    """Applies the agent's boot rule to ``storage``: highest-generation VALID slot."""
    active: SlotState | None = None
    for slot in parse_slots(storage):
        if slot.valid and (active is None or slot.generation > active.generation):
            active = slot
    if active is None:
        return BootImage(None, b"", False)
    intact = hashlib.sha256(active.data).digest() == active.recorded_sha256
    return BootImage(active.index, active.data, intact)

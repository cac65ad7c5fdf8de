"""The accelerator's host interface: the register map and the ring descriptors.

Both sides of the command/completion rings read this: the host's driver
(:class:`edgekit.runtime.npu.driver.NpuDriver`) and every device that serves
the rings (:class:`edgekit.npu.ring.RingDevice`: the simulators, and the
UART bridge's device for an FPGA board).

A board (or a simulator) exposes two things:

* :class:`RegisterIO` — 32-bit control registers (on a Zynq: an AXI-Lite
  window mapped through ``/dev/mem`` or UIO);
* :class:`MemoryIO` — DRAM shared with the accelerator (a contiguous,
  physically addressed buffer, e.g. from ``/dev/udmabuf`` or PYNQ's
  ``allocate``), addressed from 0.

The host writes 32-byte command descriptors into a ring in DRAM and rings
the doorbell (``CMD_TAIL``); the device executes each program and writes a
32-byte completion into the completion ring, advancing ``CPL_TAIL``.

Register map (byte offsets):

====== ============ ===================================================
0x00   ID           ``0x4E505538`` ("NPU8")
0x04   GEOMETRY     rows << 16 | cols
0x08   CMD_BASE_LO  command ring DRAM address, low/high words
0x0C   CMD_BASE_HI
0x10   CMD_SIZE     ring entries (a power of two)
0x14   CMD_TAIL     written by the host: next free entry (doorbell)
0x18   CMD_HEAD     written by the device: next entry to execute
0x1C   CPL_BASE_LO  completion ring DRAM address
0x20   CPL_BASE_HI
0x24   CPL_SIZE
0x28   CPL_TAIL     written by the device
0x2C   CPL_HEAD     written by the host after consuming completions
0x30   STATUS       bit 0 busy, bit 1 fault
====== ============ ===================================================

Command: ``<Q program_addr, I insn_count, I seq, 16 reserved>``.
Completion: ``<I seq, I status, Q cycles, I dma_read_kib, I dma_write_kib, Q gemm_cycles>``
(status 0 = ok; counters are the device's performance counters).
"""

from __future__ import annotations

import struct
from typing import Protocol

__all__ = ["RegisterIO", "MemoryIO", "Reg", "DEVICE_ID", "CMD_FMT", "CPL_FMT", "STATUS_OK", "STATUS_FAULT"]

DEVICE_ID = 0x4E505538
CMD_FMT = "<QII16x"
CPL_FMT = "<IIQIIQ"
assert struct.calcsize(CMD_FMT) == 32 and struct.calcsize(CPL_FMT) == 32
STATUS_OK, STATUS_FAULT = 0, 1


class Reg:
    """Register offsets."""

    ID = 0x00
    GEOMETRY = 0x04
    CMD_BASE_LO = 0x08
    CMD_BASE_HI = 0x0C
    CMD_SIZE = 0x10
    CMD_TAIL = 0x14
    CMD_HEAD = 0x18
    CPL_BASE_LO = 0x1C
    CPL_BASE_HI = 0x20
    CPL_SIZE = 0x24
    CPL_TAIL = 0x28
    CPL_HEAD = 0x2C
    STATUS = 0x30


class RegisterIO(Protocol):
    """32-bit memory-mapped control registers."""

    def read32(self, offset: int) -> int:
        """Reads the register at ``offset``."""
        ...

    def write32(self, offset: int, value: int) -> None:
        """Writes the register at ``offset`` (side effects: e.g. the doorbell)."""
        ...


class MemoryIO(Protocol):
    """DRAM shared between host and accelerator."""

    size: int

    def read(self, addr: int, n: int) -> bytes:
        """Reads ``n`` bytes at ``addr``."""
        ...

    def write(self, addr: int, data: bytes) -> None:
        """Writes ``data`` at ``addr``."""
        ...

"""The host-side driver of the accelerator: memory-mapped command and completion queues.

A board (or the simulator) exposes two things:

* :class:`RegisterIO` — 32-bit control registers (on a Zynq: an AXI-Lite
  window mapped through ``/dev/mem`` or UIO);
* :class:`MemoryIO` — DRAM shared with the accelerator (a contiguous,
  physically addressed buffer, e.g. from ``/dev/udmabuf`` or PYNQ's
  ``allocate``), addressed from 0.

The driver writes 32-byte command descriptors into a ring in DRAM and rings
the doorbell (``CMD_TAIL``); the device executes each program and writes a
32-byte completion into the completion ring, advancing ``CPL_TAIL``. The
driver never depends on which side is simulated: :class:`SimulatedNpuDevice`
in :mod:`edgekit.npu.ring` implements both protocols.

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

import logging
import struct
import time
from dataclasses import dataclass
from typing import Protocol

from edgekit.core.errors import DeviceError, DeviceTimeoutError

__all__ = [
    "RegisterIO",
    "MemoryIO",
    "Completion",
    "NpuDriver",
    "Reg",
    "DEVICE_ID",
    "CMD_FMT",
    "CPL_FMT",
    "STATUS_OK",
    "STATUS_FAULT",
]

logger = logging.getLogger(__name__)

DEVICE_ID = 0x4E505538
CMD_FMT = "<QII16x"
CPL_FMT = "<IIQIIQ"
assert struct.calcsize(CMD_FMT) == 32 and struct.calcsize(CPL_FMT) == 32
STATUS_OK, STATUS_FAULT = 0, 1
#: Seconds between completion polls (a real board could use an interrupt).
POLL_INTERVAL_S = 0.0005


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


@dataclass(frozen=True)
class Completion:
    """One executed program as the device reported it."""

    seq: int
    status: int
    cycles: int
    dma_read_kib: int
    dma_write_kib: int
    gemm_cycles: int


class NpuDriver:
    """Submits programs and collects completions through the register map.

    Args:
        regs: The control registers.
        mem: The shared DRAM.
        ring_addr: DRAM address of the two rings (``2 * 32 * ring_entries`` bytes).
        ring_entries: Entries per ring (a power of two).
    """

    def __init__(self, regs: RegisterIO, mem: MemoryIO, ring_addr: int, ring_entries: int = 64) -> None:
        if ring_entries & (ring_entries - 1):
            raise ValueError("ring_entries must be a power of two")
        self.regs, self.mem = regs, mem
        ident = regs.read32(Reg.ID)
        if ident != DEVICE_ID:
            raise DeviceError(
                f"no edgekit NPU at this register window (ID {ident:#010x}, expected {DEVICE_ID:#010x})",
                hint="Load the edgekit overlay bitstream on the board, or check the register base address.",
            )
        geometry = regs.read32(Reg.GEOMETRY)
        self.rows, self.cols = geometry >> 16, geometry & 0xFFFF
        self.entries = ring_entries
        self.cmd_addr, self.cpl_addr = ring_addr, ring_addr + 32 * ring_entries
        for base_lo, base_hi, size, addr in (
            (Reg.CMD_BASE_LO, Reg.CMD_BASE_HI, Reg.CMD_SIZE, self.cmd_addr),
            (Reg.CPL_BASE_LO, Reg.CPL_BASE_HI, Reg.CPL_SIZE, self.cpl_addr),
        ):
            regs.write32(base_lo, addr & 0xFFFFFFFF)
            regs.write32(base_hi, addr >> 32)
            regs.write32(size, ring_entries)
        self._tail = regs.read32(Reg.CMD_TAIL)
        self._cpl_head = regs.read32(Reg.CPL_HEAD)
        self._seq = 0

    def submit(self, program_addr: int, insn_count: int) -> int:
        """Queues one program; returns its sequence number.

        Raises:
            DeviceError: the command ring is full.
        """
        head = self.regs.read32(Reg.CMD_HEAD)
        if (self._tail - head) % (1 << 32) >= self.entries:
            raise DeviceError("NPU command queue is full", hint="Wait for completions before submitting more programs.")
        self._seq += 1
        slot = self._tail % self.entries
        self.mem.write(self.cmd_addr + 32 * slot, struct.pack(CMD_FMT, program_addr, insn_count, self._seq))
        self._tail = (self._tail + 1) % (1 << 32)
        self.regs.write32(Reg.CMD_TAIL, self._tail)
        return self._seq

    def wait(self, seq: int, timeout_s: float = 10.0) -> Completion:
        """Waits for the completion of ``seq``.

        Raises:
            DeviceTimeoutError: it did not complete within ``timeout_s``.
            DeviceError: the device reported a fault.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if self.regs.read32(Reg.CPL_TAIL) != self._cpl_head:
                slot = self._cpl_head % self.entries
                cpl = Completion(*struct.unpack(CPL_FMT, self.mem.read(self.cpl_addr + 32 * slot, 32)))
                self._cpl_head = (self._cpl_head + 1) % (1 << 32)
                self.regs.write32(Reg.CPL_HEAD, self._cpl_head)
                if cpl.status != STATUS_OK:
                    raise DeviceError(f"NPU program {cpl.seq} faulted (status {cpl.status})", hint="Run with --debug; recompile the package.")
                if cpl.seq == seq:
                    return cpl
                continue
            if time.monotonic() > deadline:
                raise DeviceTimeoutError(f"NPU program {seq} did not complete within {timeout_s} s", hint="Reset the board and retry.")
            time.sleep(POLL_INTERVAL_S)

    def run(self, program_addr: int, insn_count: int, timeout_s: float = 10.0) -> Completion:
        """Submits one program and waits for it."""
        return self.wait(self.submit(program_addr, insn_count), timeout_s)

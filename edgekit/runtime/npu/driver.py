"""The host-side driver of the accelerator: programs in, completions out, through the rings of :mod:`edgekit.npu.regmap`.

:class:`NpuDriver` writes 32-byte command descriptors into the command ring
in DRAM and rings the doorbell (``CMD_TAIL``); the device executes each
program and posts a completion, which the driver reads back. It runs against
any :class:`~edgekit.npu.regmap.RegisterIO`/:class:`~edgekit.npu.regmap.MemoryIO`
pair and never depends on which side is simulated: the simulators'
devices (:mod:`edgekit.sim.npu`) and the FPGA board's UART bridge
(:class:`~edgekit.runtime.npu.bridge.BridgeNpuDevice`) serve the same rings.
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass

from edgekit.core.errors import DeviceError, DeviceTimeoutError
from edgekit.npu.regmap import CMD_FMT, CPL_FMT, DEVICE_ID, STATUS_OK, MemoryIO, Reg, RegisterIO

__all__ = ["Completion", "NpuDriver"]

logger = logging.getLogger(__name__)

#: Seconds between completion polls (a real board could use an interrupt).
POLL_INTERVAL_S = 0.0005


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

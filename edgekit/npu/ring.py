"""The accelerator's command/completion rings as a simulated board sees them.

:class:`RingDevice` implements the driver's side of the register map (the
command and completion rings of :mod:`edgekit.npu.regmap`) for a simulated
board: a doorbell write runs every queued program and posts completions, so
:class:`~edgekit.runtime.npu.driver.NpuDriver` code runs unchanged against it.
:class:`NpuFault` and :class:`ProgramStats` are what one program run raises
and costs. Two engines execute the programs:

* :class:`~edgekit.sim.npu.device.SimulatedNpuDevice` — the Python model
  (:class:`~edgekit.sim.npu.simulator.NpuCore`: bit-exact, cycle-modelled);
* :class:`~edgekit.sim.npu.rtl_device.RtlNpuDevice` — the accelerator's RTL
  under Verilator (``rtl/npu/``), cycle counts measured on the hardware
  description.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import asdict, dataclass

from edgekit.core.profiles import NpuConfig
from edgekit.npu.regmap import CMD_FMT, CPL_FMT, DEVICE_ID, STATUS_FAULT, STATUS_OK, Reg
from edgekit.npu.isa import IsaError

__all__ = ["RingDevice", "NpuFault", "ProgramStats"]

logger = logging.getLogger(__name__)


class NpuFault(RuntimeError):
    """The program did something the hardware would fault on (out of range, token underflow)."""


@dataclass
class ProgramStats:
    """What one program run cost.

    Attributes:
        cycles: From the first instruction's start to the last one's end.
        gemm_cycles: Compute-module cycles spent in GEMMs.
        alu_cycles: Compute-module cycles spent in ALU ops.
        compute_stall_cycles: Cycles the compute module waited (tokens or DMA).
        dma_read_cycles, dma_write_cycles: Busy cycles of each AXI channel.
        dma_read_bytes, dma_write_bytes: DRAM traffic.
        vectors: Input vectors streamed through the array (x ROWS x COLS = MAC slots).
        instructions: Instructions executed.
        leftover_tokens: Tokens pushed but never popped (0 for a balanced program).
    """

    cycles: int = 0
    gemm_cycles: int = 0
    alu_cycles: int = 0
    compute_stall_cycles: int = 0
    dma_read_cycles: int = 0
    dma_write_cycles: int = 0
    dma_read_bytes: int = 0
    dma_write_bytes: int = 0
    vectors: int = 0
    instructions: int = 0
    leftover_tokens: int = 0

    @property
    def bound(self) -> str:
        """``compute`` when GEMMs kept the array busier than either DMA channel, else ``bandwidth``."""
        return "compute" if self.gemm_cycles >= max(self.dma_read_cycles, self.dma_write_cycles) else "bandwidth"

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = asdict(self)
        d["bound"] = self.bound
        return d



class RingDevice:
    """Registers and command/completion rings of one simulated accelerator.

    Subclasses hold the DRAM (:meth:`read`/:meth:`write`) and execute one
    program (:meth:`execute`).

    Args:
        npu: Accelerator parameters.
        dram_bytes: Size of the shared DRAM.

    Attributes:
        last_stats: Detailed statistics of every program since the last
            :meth:`clear_stats` (simulator-only; hardware reports counters).
        fault: Message of the last program that faulted.
    """

    def __init__(self, npu: NpuConfig, dram_bytes: int) -> None:
        self.npu = npu
        self.size = dram_bytes
        self.regs = {r: 0 for r in (Reg.CMD_BASE_LO, Reg.CMD_BASE_HI, Reg.CMD_SIZE, Reg.CMD_TAIL, Reg.CMD_HEAD,
                                    Reg.CPL_BASE_LO, Reg.CPL_BASE_HI, Reg.CPL_SIZE, Reg.CPL_TAIL, Reg.CPL_HEAD, Reg.STATUS)}  # fmt: skip
        self.last_stats: list[ProgramStats] = []
        self.fault: str = ""

    # MemoryIO
    def read(self, addr: int, n: int) -> bytes:
        raise NotImplementedError

    def write(self, addr: int, data: bytes) -> None:
        raise NotImplementedError

    def execute(self, prog_addr: int, count: int) -> ProgramStats:
        """Runs the ``count`` instructions at ``prog_addr``.

        Raises:
            NpuFault, IsaError, IndexError: the program faulted.
        """
        raise NotImplementedError

    # RegisterIO
    def read32(self, offset: int) -> int:
        if offset == Reg.ID:
            return DEVICE_ID
        if offset == Reg.GEOMETRY:
            return self.npu.rows << 16 | self.npu.cols
        return self.regs[offset]

    def write32(self, offset: int, value: int) -> None:
        if offset in (Reg.ID, Reg.GEOMETRY, Reg.CMD_HEAD, Reg.CPL_TAIL, Reg.STATUS):
            return  # read-only from the host side
        self.regs[offset] = value & 0xFFFFFFFF
        if offset == Reg.CMD_TAIL:
            self._drain()

    def clear_stats(self) -> None:
        self.last_stats = []

    def _ring(self, lo: int, hi: int) -> int:
        return self.regs[lo] | self.regs[hi] << 32

    def _drain(self) -> None:
        cmd_base, cpl_base = self._ring(Reg.CMD_BASE_LO, Reg.CMD_BASE_HI), self._ring(Reg.CPL_BASE_LO, Reg.CPL_BASE_HI)
        entries = self.regs[Reg.CMD_SIZE]
        while self.regs[Reg.CMD_HEAD] != self.regs[Reg.CMD_TAIL]:
            head = self.regs[Reg.CMD_HEAD]
            prog_addr, count, seq = struct.unpack(CMD_FMT, self.read(cmd_base + 32 * (head % entries), 32))
            status, stats = STATUS_OK, ProgramStats()
            try:
                stats = self.execute(prog_addr, count)
            except (NpuFault, IsaError, IndexError) as exc:
                logger.error("NPU program %d faulted: %s", seq, exc)
                self.fault = str(exc)
                status = STATUS_FAULT
            self.last_stats.append(stats)
            tail = self.regs[Reg.CPL_TAIL]
            cpl = struct.pack(CPL_FMT, seq, status, stats.cycles, stats.dma_read_bytes // 1024,
                              stats.dma_write_bytes // 1024, stats.gemm_cycles)  # fmt: skip
            self.write(cpl_base + 32 * (tail % self.regs[Reg.CPL_SIZE]), cpl)
            self.regs[Reg.CPL_TAIL] = (tail + 1) & 0xFFFFFFFF
            self.regs[Reg.CMD_HEAD] = (head + 1) & 0xFFFFFFFF

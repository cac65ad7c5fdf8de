"""The accelerator's RTL under Verilator, behind the driver's register map.

:class:`RtlNpu` drives one verilated ``npu_top`` (built by
:mod:`edgekit.sim.npu.verilator`) through the C API of ``rtl/npu/harness.cpp``:
DRAM reads and writes, the RTL's own host registers (program base,
instruction count, start, status, performance counters) and the clock.
:class:`RtlNpuDevice` puts it behind the same command/completion rings as
the Python model (:class:`~edgekit.npu.ring.RingDevice`): the rings are
served here in Python, in the role a board's driver firmware would play,
and every program runs on the RTL.

Cycle counts are the RTL's, clocked cycle by cycle; only the external
memory's latency (:data:`DEFAULT_MEM_LATENCY`) is an assumption of the
harness. The register map is :mod:`edgekit.npu.rtl_regs`, shared with the
UART bridge to a board.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

from edgekit.core.profiles import NpuConfig
from edgekit.npu.ring import NpuFault, ProgramStats, RingDevice
from edgekit.npu.rtl_regs import STATUS_FAULT, RtlReg, read_stats
from edgekit.npu.rtl_sources import RtlConfig
from edgekit.npu.timing import MEM_LATENCY_CYCLES
from edgekit.sim.npu.verilator import build_model

__all__ = ["RtlNpu", "RtlNpuDevice", "DEFAULT_MEM_LATENCY"]

logger = logging.getLogger(__name__)

#: Cycles without a new instruction after which a run counts as deadlocked.
STALL_LIMIT_CYCLES = 4_000_000
#: Cycles from a DMA read request to its data (and from a write to its
#: acknowledgement) in the harness's memory model: the cycle model's
#: assumption for DRAM plus interconnect, not a property of the RTL.
DEFAULT_MEM_LATENCY = MEM_LATENCY_CYCLES

_libs: dict[Path, ctypes.CDLL] = {}


def _load(path: Path) -> ctypes.CDLL:
    lib = _libs.get(path)
    if lib is None:
        lib = ctypes.CDLL(str(path))
        vp, u64, u32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32
        lib.npu_new.argtypes, lib.npu_new.restype = [u64, u64], vp
        lib.npu_free.argtypes, lib.npu_free.restype = [vp], None
        lib.npu_mem_write.argtypes, lib.npu_mem_write.restype = [vp, u64, ctypes.c_char_p, u64], ctypes.c_int
        lib.npu_mem_read.argtypes, lib.npu_mem_read.restype = [vp, u64, ctypes.c_void_p, u64], ctypes.c_int
        lib.npu_reg_write.argtypes, lib.npu_reg_write.restype = [vp, u32, u32], None
        lib.npu_reg_read.argtypes, lib.npu_reg_read.restype = [vp, u32], u32
        lib.npu_run.argtypes, lib.npu_run.restype = [vp, u64], ctypes.c_int64
        _libs[path] = lib
    return lib


class RtlNpu:
    """One verilated accelerator with its DRAM.

    Args:
        npu: The configuration to build (rows, cols, buffers, DMA width).
        dram_bytes: Size of the DRAM model.
        mem_latency: Cycles from a DMA request to its data or acknowledgement.

    Raises:
        ConfigError: Verilator or a C++ compiler is missing.
        CompileError: the RTL did not build.
    """

    def __init__(self, npu: NpuConfig, dram_bytes: int, mem_latency: int = DEFAULT_MEM_LATENCY) -> None:
        self.config = RtlConfig.from_npu(npu)
        self.size = dram_bytes
        self.mem_latency = mem_latency
        self._lib = _load(build_model(self.config))
        self._h = self._lib.npu_new(dram_bytes, mem_latency)

    def __del__(self) -> None:
        h, self._h = getattr(self, "_h", None), None
        if h:
            self._lib.npu_free(h)

    def read(self, addr: int, n: int) -> bytes:
        buf = ctypes.create_string_buffer(n)
        if addr < 0 or self._lib.npu_mem_read(self._h, addr, buf, n):
            raise IndexError(f"DRAM read {addr}..{addr + n} outside 0..{self.size}")
        return buf.raw

    def write(self, addr: int, data: bytes) -> None:
        if addr < 0 or self._lib.npu_mem_write(self._h, addr, bytes(data), len(data)):
            raise IndexError(f"DRAM write {addr}..{addr + len(data)} outside 0..{self.size}")

    def reg(self, offset: int) -> int:
        """Reads one of the RTL's host registers (:class:`RtlReg`)."""
        return int(self._lib.npu_reg_read(self._h, offset))

    def run(self, prog_addr: int, count: int, stall_limit: int = STALL_LIMIT_CYCLES) -> ProgramStats:
        """Runs the program at ``prog_addr`` to its FINISH; returns the RTL's counters.

        Raises:
            NpuFault: a DMA outside the DRAM, an unknown opcode, or no
                progress for :data:`STALL_LIMIT_CYCLES` (a token never pushed).
        """
        lib, h = self._lib, self._h
        lib.npu_reg_write(h, RtlReg.PROG_LO, prog_addr & 0xFFFFFFFF)
        lib.npu_reg_write(h, RtlReg.PROG_HI, prog_addr >> 32)
        lib.npu_reg_write(h, RtlReg.INSN_COUNT, count)
        lib.npu_reg_write(h, RtlReg.CTRL, 1)
        clocked = lib.npu_run(h, stall_limit)
        if clocked == -2:
            raise NpuFault("the RTL accessed memory outside the DRAM image")
        if clocked == -1:
            raise NpuFault(f"the RTL made no progress for {stall_limit} cycles (a dependency token is never pushed)")
        if self.reg(RtlReg.STATUS) & STATUS_FAULT:
            raise NpuFault("the RTL decoded an unknown opcode")
        return read_stats(self.reg)


class RtlNpuDevice(RingDevice):
    """The RTL accelerator behind the driver's command/completion rings.

    Args:
        npu: Accelerator parameters.
        dram_bytes: Size of the shared DRAM.
        mem_latency: Cycles from a DMA request to its data or acknowledgement.
    """

    def __init__(self, npu: NpuConfig, dram_bytes: int, mem_latency: int = DEFAULT_MEM_LATENCY) -> None:
        super().__init__(npu, dram_bytes)
        self.rtl = RtlNpu(npu, dram_bytes, mem_latency)

    def read(self, addr: int, n: int) -> bytes:
        return self.rtl.read(addr, n)

    def write(self, addr: int, data: bytes) -> None:
        self.rtl.write(addr, data)

    def execute(self, prog_addr: int, count: int) -> ProgramStats:
        return self.rtl.run(prog_addr, count)

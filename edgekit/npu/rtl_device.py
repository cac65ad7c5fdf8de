"""The accelerator's RTL under Verilator, behind the driver's register map.

:class:`RtlNpu` drives one verilated ``npu_top`` (built by
:mod:`edgekit.npu.rtl_build`) through the C API of ``rtl/npu/harness.cpp``:
DRAM reads and writes, the RTL's own host registers (program base,
instruction count, start, status, performance counters) and the clock.
:class:`RtlNpuDevice` puts it behind the same command/completion rings as
the Python model (:class:`~edgekit.npu.ring.RingDevice`): the rings are
served here in Python, in the role a board's driver firmware would play,
and every program runs on the RTL.

Cycle counts are the RTL's, clocked cycle by cycle; only the external
memory's latency (:data:`~edgekit.npu.rtl_build.DEFAULT_MEM_LATENCY`) is an
assumption of the harness.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Callable

from edgekit.core.profiles import NpuConfig
from edgekit.npu.rtl_build import DEFAULT_MEM_LATENCY, RtlConfig, build_model
from edgekit.npu.ring import NpuFault, ProgramStats, RingDevice

__all__ = ["RtlNpu", "RtlNpuDevice", "RtlReg", "read_stats"]

logger = logging.getLogger(__name__)

#: Cycles without a new instruction after which a run counts as deadlocked.
STALL_LIMIT_CYCLES = 4_000_000


class RtlReg:
    """Byte offsets of ``npu_top``'s host registers (``rtl/npu/npu_top.v``)."""

    ID = 0x00
    GEOMETRY = 0x04
    CTRL = 0x08
    STATUS = 0x0C
    PROG_LO = 0x10
    PROG_HI = 0x14
    INSN_COUNT = 0x18
    CYCLES = 0x40
    GEMM_CYCLES = 0x44
    ALU_CYCLES = 0x48
    STALL_CYCLES = 0x4C
    RD_BUSY = 0x50
    WR_BUSY = 0x54
    RD_BYTES = 0x58
    WR_BYTES = 0x5C
    VECTORS = 0x60
    INSNS = 0x64
    TOKENS = 0x68


_STATUS_FAULT = 0x4

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
        if self.reg(RtlReg.STATUS) & _STATUS_FAULT:
            raise NpuFault("the RTL decoded an unknown opcode")
        return read_stats(self.reg)


def read_stats(reg: Callable[[int], int]) -> ProgramStats:
    """The last program's costs from ``npu_top``'s performance counters, read with ``reg(offset)``."""
    tokens = reg(RtlReg.TOKENS)
    return ProgramStats(
        cycles=reg(RtlReg.CYCLES),
        gemm_cycles=reg(RtlReg.GEMM_CYCLES),
        alu_cycles=reg(RtlReg.ALU_CYCLES),
        compute_stall_cycles=reg(RtlReg.STALL_CYCLES),
        dma_read_cycles=reg(RtlReg.RD_BUSY),
        dma_write_cycles=reg(RtlReg.WR_BUSY),
        dma_read_bytes=reg(RtlReg.RD_BYTES),
        dma_write_bytes=reg(RtlReg.WR_BYTES),
        vectors=reg(RtlReg.VECTORS),
        instructions=reg(RtlReg.INSNS),
        leftover_tokens=sum(tokens >> s & 0xFF for s in (0, 8, 16, 24)),
    )


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

"""``npu_top``'s host registers (``rtl/npu/npu_top.v``) and its performance counters as :class:`ProgramStats`.

Read by the two hosts of the RTL: the Verilator co-simulation
(:mod:`edgekit.sim.npu.rtl_device`) and the UART bridge to a board top, real
or simulated (:mod:`edgekit.runtime.npu.bridge`).
"""

from __future__ import annotations

from typing import Callable

from edgekit.npu.ring import ProgramStats

__all__ = ["RtlReg", "STATUS_RUNNING", "STATUS_DONE", "STATUS_FAULT", "read_stats"]


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


#: ``STATUS`` bits: a program runs; the last one finished; it decoded an unknown opcode.
STATUS_RUNNING, STATUS_DONE, STATUS_FAULT = 0x1, 0x2, 0x4


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

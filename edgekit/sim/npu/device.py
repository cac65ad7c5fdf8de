"""A simulated NPU board: the Python model behind the driver's rings.

:class:`SimulatedNpuDevice` is the ``npu`` entry of the SIMULATORS registry
(:mod:`edgekit.core.links`, also its ``model`` part); the runtime
(:func:`edgekit.runtime.npu.loader.open_simulated`) and the FPGA board flow
reach it through the registry, not by importing it. It implements only the
device side (registers, rings, DRAM); the driver is the runtime's.
"""

from __future__ import annotations

from edgekit.core.profiles import NpuConfig
from edgekit.npu.isa import decode_program, INSN_BYTES
from edgekit.npu.ring import ProgramStats, RingDevice
from edgekit.sim.npu.simulator import NpuCore

__all__ = ["SimulatedNpuDevice"]


class SimulatedNpuDevice(RingDevice):
    """The Python model of the accelerator (:class:`~edgekit.sim.npu.simulator.NpuCore`) behind the rings.

    Args:
        npu: Accelerator parameters.
        dram_bytes: Size of the shared DRAM.
        functional: Compute values (``False``: timing only).
    """

    def __init__(self, npu: NpuConfig, dram_bytes: int, functional: bool = True) -> None:
        super().__init__(npu, dram_bytes)
        self.dram = bytearray(dram_bytes)
        self.core = NpuCore(npu, self.dram, functional=functional)

    def read(self, addr: int, n: int) -> bytes:
        if addr < 0 or addr + n > self.size:
            raise IndexError(f"DRAM read {addr}..{addr + n} outside 0..{self.size}")
        return bytes(self.dram[addr : addr + n])

    def write(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > self.size:
            raise IndexError(f"DRAM write {addr}..{addr + len(data)} outside 0..{self.size}")
        self.dram[addr : addr + len(data)] = data

    def execute(self, prog_addr: int, count: int) -> ProgramStats:
        return self.core.run(decode_program(self.read(prog_addr, count * INSN_BYTES)))

"""A simulated NPU board: the Python model behind the rings, and the loader the runners use.

:func:`open_simulated` is the ``npu`` entry of the SIMULATORS registry
(:mod:`edgekit.core.links`); the runners reach it through
:func:`edgekit.core.registry.resolve`, not by importing it.
"""

from __future__ import annotations

from typing import Any, Callable

from edgekit.core.errors import ConfigError
from edgekit.core.profiles import NpuConfig
from edgekit.npu.host_exec import HybridExecutor
from edgekit.npu.isa import decode_program, INSN_BYTES
from edgekit.npu.package import open_on_device
from edgekit.npu.ring import ProgramStats, RingDevice
from edgekit.sim.npu.simulator import NpuCore

__all__ = ["SimulatedNpuDevice", "open_simulated"]


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


def open_simulated(
    read: Callable[[str], bytes], npu: NpuConfig, functional: bool = True, engine: str = "model"
) -> tuple[HybridExecutor, RingDevice, dict[str, Any]]:
    """Loads package members into a simulated accelerator and returns a ready executor.

    Args:
        read: Returns a package member's bytes by name.
        npu: The accelerator to simulate (the board's, or another for what-if runs).
        functional: Compute values (``False``: timing only; the Python model only).
        engine: ``model`` (the Python simulator and cycle model) or ``rtl``
            (the accelerator's Verilog under Verilator).

    Raises:
        PackageError: the plan is missing, of another version, or for another array geometry.
        ConfigError: ``engine`` is unknown, or ``rtl`` cannot be built here.
    """

    def device_for(size: int) -> RingDevice:
        if engine == "model":
            return SimulatedNpuDevice(npu, size, functional=functional)
        if engine == "rtl":
            from edgekit.sim.npu.rtl_device import RtlNpuDevice

            return RtlNpuDevice(npu, size)
        raise ConfigError(f"unknown NPU simulator engine {engine!r}", hint="Use 'model' or 'rtl'.")

    return open_on_device(read, npu, device_for)

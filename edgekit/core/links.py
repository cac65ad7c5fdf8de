"""Transports and simulators: the registered ways to reach a board.

A board profile names one of each (``[transport] kind``, ``[simulator]
kind``); the names are validated against :data:`TRANSPORTS` and
:data:`SIMULATORS` when the profile loads. An entry is data: what the
transport calls a board's address and which profile key holds it, what a
simulator measures, and the ``module:attr`` that implements it (imported
only when used). Third parties add entries through the ``edgekit.transports``
and ``edgekit.simulators`` entry-point groups (see :class:`Registry`).

Which of the two a command uses is decided once, by
:func:`edgekit.runtime.connection.connect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekit.core.errors import ConfigError
from edgekit.core.registry import Registry, resolve

__all__ = ["TransportKind", "SimulatorKind", "TRANSPORTS", "SIMULATORS"]


@dataclass(frozen=True)
class TransportKind:
    """A way to reach a real board.

    Attributes:
        name: The profile's ``[transport] kind``.
        description: One line for listings and docs.
        address_key: The ``[transport]`` key that holds the board's address
            (``port`` for a serial port, ``host`` for SSH or an RPC tracker);
            empty when the board is reached without one (in-process, simulator only).
        address_name: What the address is called in messages (``serial port``).
        address_example: An example value of ``--port`` for messages.
        implementation: ``module:attr`` of the class that opens the link; empty if none.
    """

    name: str
    description: str
    address_key: str = ""
    address_name: str = ""
    address_example: str = ""
    implementation: str = ""

    @property
    def addressed(self) -> bool:
        """Whether a real board of this transport is found by an address (``--port``)."""
        return bool(self.address_key)

    def load(self) -> Any:
        """Imports and returns the implementation."""
        return resolve(self.implementation, self.name)


@dataclass(frozen=True)
class SimulatorKind:
    """A stand-in for a board when none is attached.

    Attributes:
        name: The profile's ``[simulator] kind``.
        description: One line for listings and docs.
        implementation: ``module:attr`` of the simulator; empty if none.
        deterministic: Counts cycles, so every run of the same inputs
            measures the same and one run is the measurement.
        engines: Values ``--sim ENGINE`` accepts; the first is plain ``--sim``'s.
        simulates: False for ``native`` (the board *is* this machine) and
            ``none`` (no simulator): nothing stands in for the board.
        parts: Further ``(name, module:attr)`` pieces of the simulator that
            callers in sibling packages load by name (:meth:`load`), e.g. the
            NPU's RTL co-simulation devices.
    """

    name: str
    description: str
    implementation: str = ""
    deterministic: bool = False
    engines: tuple[str, ...] = ()
    simulates: bool = True
    parts: tuple[tuple[str, str], ...] = ()

    def load(self, part: str = "") -> Any:
        """Imports and returns the implementation, or the named ``part`` of it.

        Raises:
            ConfigError: the simulator has no such part, or its module is not installed.
        """
        if not part:
            return resolve(self.implementation, self.name)
        spec = dict(self.parts).get(part)
        if spec is None:
            raise ConfigError(
                f"simulator '{self.name}' has no part '{part}'",
                hint=f"Choose one of: {', '.join(name for name, _ in self.parts) or '(none)'}.",
            )
        return resolve(spec, f"{self.name} {part}")


TRANSPORTS: Registry[TransportKind] = Registry("transport")
SIMULATORS: Registry[SimulatorKind] = Registry("simulator")

for _t in (
    TransportKind("local", "this machine, in this process"),
    TransportKind("serial", "a serial port (USB-UART) speaking edgekit's device protocol", "port", "serial port",
                  "/dev/ttyUSB0", "edgekit.runtime.transport:SerialTransport"),
    TransportKind("ssh", "a Linux board over SSH (scp the files, run the runner)", "host", "address", "user@host",
                  "edgekit.runtime.ssh:SshExecutor"),
    TransportKind("rpc", "a TVM RPC tracker that hands out boards (bench --tracker, tune)", "host", "tracker",
                  "HOST:PORT", "edgekit.runtime.rpc:RpcExecutor"),
    TransportKind("sim", "no real board: only its simulator"),
):  # fmt: skip
    TRANSPORTS.register(_t.name, _t)

for _s in (
    SimulatorKind("native", "the board is this machine: nothing to simulate", simulates=False),
    SimulatorKind("unicorn", "the firmware on an instruction-counting CPU emulator behind a pty",
                  "edgekit.sim.mcu:McuSimulator", deterministic=True),
    SimulatorKind("qemu-user", "the Linux runner under qemu-user on this machine (wall-clock time)",
                  "edgekit.runtime.linux_runner:qemu_command"),
    SimulatorKind("npu", "the accelerator's Python cycle model, or its RTL under Verilator (--sim rtl)",
                  "edgekit.sim.npu.device:SimulatedNpuDevice", deterministic=True, engines=("model", "rtl"),
                  parts=(("model", "edgekit.sim.npu.device:SimulatedNpuDevice"),
                         ("rtl", "edgekit.sim.npu.rtl_device:RtlNpuDevice"),
                         ("board-rtl", "edgekit.sim.npu.rtl_board:RtlBoardLink"))),
    SimulatorKind("none", "not simulated: run and bench need the real board", simulates=False),
):  # fmt: skip
    SIMULATORS.register(_s.name, _s)

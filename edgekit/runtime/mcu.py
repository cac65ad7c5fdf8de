"""Runner for microcontroller (``aot-c``) packages: a board on a serial port,
or its unicorn simulator behind a pty; both through the same protocol code.

``load()`` starts the simulator with the package's firmware (on hardware the
firmware is expected to be flashed already), uploads ``weights.bin`` with
verify-then-commit, and checks the device's arena size against the manifest.
``run()`` = SET_INPUT for each input, RUN(1), GET_OUTPUT for each output.
Latency is the device's cycle count divided by ``board.clock_hz``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from edgekit.package import Package
from edgekit.core.errors import ConfigError, DeviceError, PackageError
from edgekit.core.profiles import Board
from edgekit.core.tensors import TensorSpec, check_inputs
from edgekit.runtime.connection import connect
from edgekit.runtime.deadlines import WorkEstimate, estimate_work, retry_for
from edgekit.runtime.device import DEFAULT_RETRY, DeviceClient, RetryPolicy
from edgekit.runtime.runner import Timing
from edgekit.runtime.transport import SerialTransport

__all__ = ["McuRunner", "FIRMWARE_MEMBER", "WEIGHTS_MEMBER"]

logger = logging.getLogger(__name__)

FIRMWARE_MEMBER = "firmware/firmware.elf"
WEIGHTS_MEMBER = "weights.bin"


class McuRunner:
    """Runs an ``aot-c`` package on a microcontroller or its simulator.

    Args:
        package: The opened package.
        board: Board profile.
        port: Serial port of a real board; overrides the profile's.
        sim: True forces the simulator, False forbids it; None simulates
            when no port is given or configured (with a notice); see
            :func:`edgekit.runtime.connection.connect`.
        retry: Protocol retry limits; by default derived from the board and
            the model's work (:func:`edgekit.runtime.deadlines.retry_for`).

    Raises:
        ConfigError: ``sim=False`` without a port, or a port and ``sim=True``
            (:class:`~edgekit.runtime.connection.NoConnectionError` for the first).
    """

    def __init__(
        self,
        package: Package,
        board: Board,
        port: str | None = None,
        sim: bool | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.board = board
        self.retry = retry
        self._derive_retry = retry is DEFAULT_RETRY
        self._work: WorkEstimate | None = None
        #: Instructions one inference took on the simulator (after the first run).
        self._measured_instructions: int | None = None
        #: Board or simulator, decided once (:func:`edgekit.runtime.connection.connect`).
        self.connection = connect(board, port, sim)
        self.simulated = self.connection.simulated
        self._port = self.connection.address or None
        self._sim: Any = None
        self._transport: SerialTransport | None = None
        self._client: DeviceClient | None = None
        self._device_info: Any = None
        #: What load() did and checked (``edgekit flash`` reports it).
        self.deployment: dict[str, Any] = {}
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        try:
            self.load(package)
        except BaseException:
            self._disconnect()  # never leave a simulator running behind a failed constructor
            raise

    # -- setup ------------------------------------------------------------- #

    def _connect(self, package: Package) -> None:
        self._disconnect()
        if self.connection.simulator is not None:
            if FIRMWARE_MEMBER not in package:
                raise PackageError(
                    f"package has no {FIRMWARE_MEMBER}", hint=f"Recompile it for --board {self.board.name}."
                )
            # The registered simulator (edgekit.sim.mcu.McuSimulator for unicorn), imported on use.
            simulator = self.connection.simulator.load()
            self._sim = simulator(package.read(FIRMWARE_MEMBER), self.board)
            port = self._sim.port_name
        else:
            port = self._port
        if port is None:  # e.g. an MCU package with --board host --allow-other-board
            raise ConfigError(
                f"board '{self.board.name}' has no serial port and no microcontroller simulator to run this package",
                hint=f"Run it on the board it was built for (without --board), or recompile the model with "
                     f"--board {self.board.name}.",
                board=self.board.name,
            )
        self._transport = SerialTransport(port, self.board.transport.baudrate)
        watch = self._sim.check_alive if self._sim is not None else None
        self._client = DeviceClient(self._transport, self.retry, watch=watch)
        self._client.hello()

    def _disconnect(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._sim is not None:
            self._sim.close()
            self._sim = None

    @property
    def client(self) -> DeviceClient:
        """The protocol client (connected)."""
        if self._client is None:
            raise DeviceError("runner is closed", hint="Create a new runner.")
        return self._client

    def load(self, package: Package) -> None:
        """Uploads and verifies the package's weights; checks the firmware's model.

        Raises:
            PackageError: the package is not an ``aot-c`` package or is incomplete.
            DeviceError: the device runs another model (arena or tensor sizes differ).
            ChecksumError: the device's SHA-256 of the weights never matched.
        """
        if package.runtime != "aot-c":
            raise PackageError(
                f"package runtime is '{package.runtime}', the microcontroller runner needs 'aot-c'",
                hint=f"Recompile the model with --board {self.board.name}.",
            )
        if WEIGHTS_MEMBER not in package:
            raise PackageError(f"package has no {WEIGHTS_MEMBER}", hint="Recompile it.")
        self.inputs = list(package.inputs)
        self.outputs = list(package.outputs)
        self._work = estimate_work(package)
        self._measured_instructions = None
        if self._derive_retry:
            self.retry = retry_for(
                self.board, simulated=self.simulated, work=self._work, image_bytes=self.board.memory.flash_bytes
            )
        self._connect(package)
        info = self.client.info()
        self._check_model(package, info)
        weights = package.read(WEIGHTS_MEMBER)
        if info.has_model and info.active_size == len(weights):
            import hashlib

            if info.active_sha256 == hashlib.sha256(weights).digest():
                self.client.verify()  # re-hash on the device; raises unless it matches its record
                logger.info("device already holds these weights (generation %d)", info.active_generation)
                self._device_info = self.client.info()
                self.deployment = self._deployment("the device already held these weights (re-hashed there)")
                return
        self.client.load(weights)  # returns only when the device's SHA-256 equals the package's
        self._device_info = self.client.info()
        self.deployment = self._deployment(f"uploaded weights.bin ({len(weights)} B), committed by the device")

    def _deployment(self, action: str) -> dict[str, Any]:
        return {
            "transport": "unicorn simulator (pty)" if self.simulated else f"serial {self._port}",
            "action": action,
            "verified": True,
            "check": "the device's SHA-256 of its active weights matches the package",
        }

    def _check_model(self, package: Package, info: Any) -> None:
        memory = package.manifest.memory or {}
        want_arena = int(memory.get("arena_bytes", -1))
        problems = []
        if want_arena != info.arena_bytes:
            problems.append(f"arena {info.arena_bytes} B on the device, {want_arena} B in the manifest")
        want_in = tuple(s.nbytes for s in self.inputs)
        want_out = tuple(s.nbytes for s in self.outputs)
        if want_in != info.input_bytes or want_out != info.output_bytes:
            problems.append(
                f"tensor sizes in/out {list(info.input_bytes)}/{list(info.output_bytes)} on the device, "
                f"{list(want_in)}/{list(want_out)} in the package"
            )
        if problems:
            raise DeviceError(
                f"the firmware on {self.board.name} was built for another model: {'; '.join(problems)}",
                hint="Flash the firmware from this package (firmware/firmware.elf) first.",
                problems=problems,
            )

    # -- Runner protocol ---------------------------------------------------- #

    def info(self) -> dict[str, Any]:
        """Runner name and the device's own report."""
        d = self._device_info
        out: dict[str, Any] = {
            "runner": "mcu",
            "device": f"{self.board.name} ({'unicorn simulator' if self.simulated else self._port})",
            "threads": 1,
            "clock_hz": self.board.clock_hz,
        }
        if d is not None:
            out.update(
                firmware_version=f"{d.firmware_version >> 16}.{d.firmware_version & 0xFFFF}",
                device_board=d.board,
                arena_bytes=d.arena_bytes,
                weight_bytes=d.weight_bytes,
                slot_capacity=d.slot_capacity,
                weights_generation=d.active_generation,
            )
        if self.simulated:
            out["cpi"] = self.board.simulator.cpi
        return out

    def _set_inputs(self, feeds: Mapping[str, np.ndarray]) -> None:
        arrays = check_inputs(self.inputs, feeds)
        for i, spec in enumerate(self.inputs):
            self.client.set_input(i, arrays[spec.name].tobytes())

    def _get_outputs(self) -> dict[str, np.ndarray]:
        out = {}
        for i, spec in enumerate(self.outputs):
            raw = self.client.get_output(i, spec.nbytes)
            out[spec.name] = np.frombuffer(raw, dtype=spec.dtype).reshape(spec.shape).copy()
        return out

    def _run_once(self) -> Any:
        """RUN(1), with a simulated core held to an instruction budget: the
        work bound before the first run, four times the measured count after."""
        if self._sim is None:
            return self.client.run(1)
        bound = self._work.cycles / (self.board.simulator.cpi or 1.0) if self._work else None
        if self._measured_instructions:
            bound = 4 * self._measured_instructions + 1_000_000
        self._sim.set_budget(None if bound is None else int(bound))
        start = self._sim.instructions
        try:
            result = self.client.run(1)
        finally:
            self._sim.set_budget(None)
        if self._measured_instructions is None:
            self._measured_instructions = self._sim.instructions - start
        return result

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference on the device; outputs by name."""
        self._set_inputs(feeds)
        self._run_once()
        return self._get_outputs()

    def time_runs(self, feeds: Mapping[str, np.ndarray], runs: int, warmup: int) -> Timing:
        """Warm-up then ``runs`` timed inferences; inputs are re-sent before each
        run because a planned arena may reuse input memory for intermediates.

        Cycle counts come from the device's counter (the simulator's
        instructions x CPI); latency is cycles / ``board.clock_hz``.
        """
        if self.board.clock_hz <= 0:
            raise ConfigError(
                f"board '{self.board.name}' has no clock_hz", hint="Add clock_hz to its profile to turn cycles into time."
            )
        cycles: list[int] = []
        instret: list[int] = []
        for i in range(warmup + runs):
            self._set_inputs(feeds)
            result = self._run_once()
            if i >= warmup:
                cycles += result.cycles
                instret += result.instret
        latency = [c / self.board.clock_hz * 1e3 for c in cycles]
        return Timing(latency_ms=latency, cycles=cycles, instructions=instret if any(instret) else None)

    def close(self) -> None:
        """Closes the link and stops the simulator."""
        self._disconnect()
        self._client = None

    def __enter__(self) -> "McuRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

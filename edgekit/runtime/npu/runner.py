"""Runs ``npu`` packages: host sub-graphs on this CPU, layers on the accelerator.

The accelerator is the Python model, its RTL under Verilator (``--sim
rtl``), or — on an FPGA board such as ulx3s-85f — the board itself through
its UART bridge (``--port``), or the board top's RTL through the same
protocol (``--sim rtl``); see docs/fpga-board.md.

Latency of one run = accelerator cycles / accelerator clock (the cycle
model, or the RTL's or the board's counters) + host time measured here (host sub-graphs with onnxruntime plus the
layout conversions at host/accelerator boundaries). The host part is timed
on *this* machine's CPU, not the board's; :meth:`NpuRunner.npu_report`
keeps both parts apart so a user can tell them apart.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgekit.package import Package
from edgekit.core.errors import ConfigError, DeviceError, PackageError
from edgekit.core.links import SIMULATORS
from edgekit.core.tensors import check_inputs
from edgekit.runtime.connection import connect
from edgekit.runtime.npu.loader import open_on_device, open_simulated
from edgekit.runtime.runner import Timing

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = ["NpuRunner"]

logger = logging.getLogger(__name__)


class NpuRunner:
    """Runner for packages whose manifest says ``runtime = "npu"``.

    Args:
        package: An opened, verified package.
        board: The board profile (its ``npu`` section is simulated).
        port: Serial port of a real FPGA board (a profile with ``[fpga]``,
            e.g. ulx3s-85f, loaded with the bitstream of ``edgekit synth``);
            other NPU boards are not reachable yet.
        sim: ``False`` demands real hardware; ``"rtl"`` runs the
            accelerator's RTL under Verilator (on an FPGA board: the whole
            board top, driven through its UART bridge); ``True``, ``None``
            or ``"model"`` the Python simulator and cycle model.
    """

    simulated = True

    def __init__(self, package: Package, board: "Board", *, port: str | None = None, sim: bool | str | None = None) -> None:
        if board.fpga is None and (port or sim is False):
            raise ConfigError(
                f"running on a real {board.name} accelerator is not available yet",
                hint="Use --sim: the simulator implements the same driver interface (edgekit.npu.regmap).",
            )
        if board.npu is None:
            raise ConfigError(f"board '{board.name}' has no [npu] section", hint="Run the package on the board it was compiled for.")
        # Boards whose accelerator cannot be reached yet always run the simulator (no notice needed).
        #: Board or simulator engine, decided once (:func:`edgekit.runtime.connection.connect`).
        self.connection = connect(board, port, True if sim is None and board.fpga is None else sim)
        self.simulated = self.connection.simulated
        self.engine = self.connection.engine if self.simulated else "board"
        self.port = self.connection.address or None
        self.board = board
        self.package: Package | None = None
        self.deployment: dict[str, Any] = {}
        self._link: Any = None
        self._last: list[Any] = []
        self.load(package)

    @property
    def _through_bridge(self) -> bool:
        """Whether programs run behind the board top's UART bridge (a real board, or its RTL)."""
        return self.engine == "board" or (self.engine == "rtl" and self.board.fpga is not None)

    def info(self) -> dict[str, Any]:
        """Runner name and the simulated accelerator."""
        npu = self.board.npu
        assert npu is not None
        what = {"board": f"{self.board.name} on {self.port}: the", "rtl": "RTL (Verilator) of the", "model": "simulated"}[self.engine]
        runner = {"board": "npu-board", "rtl": "npu-rtl", "model": "npu-sim"}[self.engine]
        if self._through_bridge and self.engine == "rtl":
            what, runner = f"RTL (Verilator) of the {self.board.name} board top (UART bridge, block-RAM memory) with the", "npu-board-rtl"
        return {
            "runner": runner,
            "device": f"{what} {npu.rows}x{npu.cols} int8 array @ {npu.clock_hz / 1e6:g} MHz",
            "threads": 1,
            "host_timing": "this machine's CPU (onnxruntime), not the board's",
        }

    def load(self, package: Package) -> None:
        """Loads the program, weights and host sub-graphs into a fresh simulator.

        Raises:
            PackageError: the package is not an ``npu`` package or was built for another array.
        """
        if package.runtime != "npu":
            raise PackageError(
                f"package '{package.path}' needs runtime '{package.runtime}', not npu", hint="Run it on a board of the kind it was compiled for."
            )
        assert self.board.npu is not None
        if self._through_bridge:
            self._executor, self._device, self._plan = self._load_board(package)
        else:
            self._executor, self._device, self._plan = open_simulated(package.read, self.board.npu, engine=self.engine)
        self.package = package

    def _load_board(self, package: Package) -> tuple[Any, Any, dict[str, Any]]:
        """Writes weights and program into the board's memory through its bridge and checks them read back."""
        from edgekit.npu.package import PROGRAM_MEMBER, WEIGHTS_MEMBER
        from edgekit.runtime.npu.bridge import BridgeNpuDevice, UartBridge

        npu = self.board.npu
        assert npu is not None
        if self._link is None:
            if self.port:
                from edgekit.runtime.serial_link import SerialByteLink

                self._link = SerialByteLink(self.port, self.board.transport.baudrate)
            else:
                board_link = SIMULATORS.get("npu").load("board-rtl")  # sim/ is runtime's sibling
                self._link = board_link(self.board)
        bridge = UartBridge(self._link)
        executor, device, plan = open_on_device(package.read, npu, lambda size: BridgeNpuDevice(npu, size, bridge))
        dram = plan["dram"]
        images = [(dram["const_base"], package.read(WEIGHTS_MEMBER)), (dram["program_base"], package.read(PROGRAM_MEMBER))]
        for addr, image in images:
            if hashlib.sha256(device.read(addr, len(image))).digest() != hashlib.sha256(image).digest():
                raise DeviceError(f"the {self.board.name}'s memory at {addr:#x} does not hold what was written",
                                  hint="Reset the board (FIRE1), check the cable and the baud rate, and retry.")  # fmt: skip
        self.deployment = {
            "transport": f"serial {self.port} (UART bridge)" if self.port else "the board top's RTL under Verilator, through its UART",
            "action": f"wrote weights and program ({sum(len(i) for _, i in images)} bytes) into the board's memory",
            "verified": True,
            "check": "SHA-256 of the weights and program read back from the board's memory equals the package's",
        }
        return executor, device, plan

    def _run(self, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[Any]]:
        assert self.package is not None, "load() a package first"
        checked = check_inputs(self.package.inputs, feeds)
        outputs, steps = self._executor.run(checked)
        self._last = steps
        return outputs, steps

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one inference and returns the outputs by name."""
        return self._run(feeds)[0]

    def _latency_ms(self, steps: list[Any]) -> tuple[float, int, float]:
        assert self.board.npu is not None
        cycles = sum(s.cycles for s in steps)
        host_ms = sum(s.host_ms for s in steps)
        return cycles / self.board.npu.clock_hz * 1e3 + host_ms, cycles, host_ms

    def time_runs(self, feeds: Mapping[str, np.ndarray], runs: int, warmup: int) -> Timing:
        """Runs ``warmup`` + ``runs`` inferences; latency = predicted NPU time + measured host time."""
        for _ in range(warmup):
            self._run(feeds)
        latency, cycles = [], []
        for _ in range(runs):
            _, steps = self._run(feeds)
            ms, cyc, _host = self._latency_ms(steps)
            latency.append(ms)
            cycles.append(cyc)
        return Timing(latency_ms=latency, cycles=cycles)

    def npu_report(self) -> dict[str, Any]:
        """The ``npu`` object of ``bench --json`` for the last run.

        Keys: ``utilization`` (MAC utilization of the array over accelerator
        time), ``offloaded_macs_fraction``, ``npu_ms`` (predicted),
        ``host_ms`` (measured here), ``layers`` (per layer: cycles,
        utilization, DMA bytes, bound, tiling splits).
        """
        npu = self.board.npu
        assert npu is not None
        layer_info = {lj["name"]: lj for lj in self._plan["layers"]}
        layers = []
        total_macs = total_cycles = 0
        for step in self._last:
            if step.kind != "npu":
                layers.append({"name": step.name, "where": "host", "host_ms": step.host_ms})
                continue
            lj = layer_info[step.name]
            st = step.stats
            total_macs += lj["macs"]
            total_cycles += step.cycles
            entry = {
                "name": step.name, "where": "npu", "op": lj["op"], "macs": lj["macs"], "cycles": step.cycles,
                "latency_ms": step.cycles / npu.clock_hz * 1e3,
                "utilization": lj["macs"] / (step.cycles * npu.rows * npu.cols) if step.cycles else 0.0,
                "splits": lj["tiling"]["n_spatial"] * lj["tiling"]["n_oc"] * lj["tiling"]["n_ic"],
                "host_ms": step.host_ms,
            }  # fmt: skip
            if st is not None:
                entry.update(dma_read_bytes=st.dma_read_bytes, dma_write_bytes=st.dma_write_bytes, bound=st.bound,
                             gemm_cycles=st.gemm_cycles, compute_stall_cycles=st.compute_stall_cycles)  # fmt: skip
            layers.append(entry)
        _, cycles, host_ms = self._latency_ms(self._last)
        part = self._plan["partition"]
        return {
            "array": f"{npu.rows}x{npu.cols}",
            "clock_hz": npu.clock_hz,
            "utilization": total_macs / (total_cycles * npu.rows * npu.cols) if total_cycles else 0.0,
            "offloaded_macs_fraction": part["offloaded_macs_fraction"],
            "npu_cycles": cycles,
            "npu_ms": cycles / npu.clock_hz * 1e3,
            "host_ms": host_ms,
            "layers": layers,
        }

    def close(self) -> None:
        """Drops the simulator, or closes the board's port."""
        self._executor = None  # type: ignore[assignment]
        self._device = None  # type: ignore[assignment]
        if self._link is not None:
            self._link.close()
            self._link = None

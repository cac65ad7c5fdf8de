"""The unicorn MCU simulator and the McuRunner on top of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.package import open_package, write_package
from edgekit.core.errors import ConfigError, DeviceError, InputError
from edgekit.core.profiles import get_board
from edgekit.runtime.device import DeviceClient
from edgekit.runtime.mcu import McuRunner
from edgekit.runtime.transport import SerialTransport
from edgekit.sim.mcu import McuSimulator

from _agent_helpers import build, reference, weights


@pytest.fixture(scope="module")
def board():
    return get_board("rv32-mcu-sim")[0]


def _package(tmp_path: Path, arena: int = 320) -> Path:
    _, _, image = weights(0)
    path = tmp_path / "m.ekpkg"
    manifest = {
        "board": "rv32-mcu-sim",
        "runtime": "aot-c",
        "inputs": [{"name": "x", "shape": [1, 64], "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": [1, 16], "dtype": "float32"}],
        "memory": {"arena_bytes": arena, "weight_bytes": len(image)},
    }
    write_package(path, manifest, {"firmware/firmware.elf": build("rv32-sim").read_bytes(), "weights.bin": image})
    return path


def _cycles(board, x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    with McuSimulator(build("rv32-sim"), board) as sim, SerialTransport(sim.port_name) as t:
        c = DeviceClient(t)
        c.hello()
        c.load(weights(0)[2])
        c.set_input(0, x.tobytes())
        r = c.run(3)
        return r.cycles, r.instret


def test_cycle_counts_are_deterministic_and_follow_cpi(board) -> None:
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    first, instret = _cycles(board, x)
    again, _ = _cycles(board, x)
    assert first == again and len(set(first)) == 1  # same firmware + inputs -> same counts
    # a 16x64 dense layer cannot take fewer than one instruction per MAC
    assert instret[0] > 1024
    # cycles = instructions x cpi (1.0 on this board); the two reads straddle the
    # model call in opposite order, so they differ only by the reads themselves
    assert abs(first[0] - instret[0]) < 64


def test_runner_runs_a_package_and_reports_cycles(board, tmp_path: Path) -> None:
    w, b, _ = weights(0)
    x = np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32)
    with McuRunner(open_package(_package(tmp_path)), board, sim=True) as runner:
        assert runner.simulated and runner.info()["arena_bytes"] == 320
        out = runner.run({"x": x})
        np.testing.assert_allclose(out["y"][0], reference(w, b, x[0]), rtol=1e-6, atol=1e-6)
        timing = runner.time_runs({"x": x}, runs=3, warmup=1)
        assert len(set(timing.cycles)) == 1 and timing.instructions
        assert timing.latency_ms[0] == pytest.approx(timing.cycles[0] / board.clock_hz * 1e3)
        with pytest.raises(InputError, match="missing input"):
            runner.run({})


def test_runner_rejects_firmware_built_for_another_arena(board, tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="arena 320 B on the device, 999 B in the manifest") as err:
        McuRunner(open_package(_package(tmp_path, arena=999)), board, sim=True)
    assert "Flash the firmware" in err.value.hint


def test_runner_needs_a_port_when_simulation_is_forbidden(board, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no serial port"):
        McuRunner(open_package(_package(tmp_path)), board, sim=False)


def test_simulator_refuses_an_elf_for_another_machine(board) -> None:
    with pytest.raises(ConfigError, match="cannot run on the 'rv32-mcu-sim' simulator"):
        McuSimulator(build("posix"), board)

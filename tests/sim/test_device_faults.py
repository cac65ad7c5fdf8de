"""Issue 16: a device that faults, hangs or dies ends in a typed error within seconds."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from _conv_models import dense, pnet_like
from edgekit.cli.main import main
from edgekit.core.errors import DeviceError, DeviceFaultError, DeviceTimeoutError
from edgekit.compiler.image_check import read_image_map
from edgekit.core.profiles import load_profiles
from edgekit.runtime import device as device_mod
from edgekit.runtime.deadlines import WorkEstimate, retry_for
from edgekit.runtime.device import DeviceClient, RetryPolicy
from edgekit.runtime.protocol import Command
from edgekit.runtime.transport import SerialTransport
from edgekit.sim import mcu as sim_mod
from edgekit.sim.agent_build import build_agent, build_blob_agent
from edgekit.sim.posix import PosixAgent

pytest.importorskip("unicorn")

FAULT_MODEL = Path(__file__).parent / "fault_model" / "fault_model.c"
BOARD = "rv32-mcu-sim"
#: Acceptance bound of issue 16 for a device killed mid-command.
KILL_BOUND_S = 10.0


def _fault_agent(mode: int) -> Path:
    return build_agent("rv32-sim", [FAULT_MODEL], extra_cflags=[f"-DEK_FAULT_MODE={mode}"])


@pytest.mark.parametrize(
    ("mode", "kind", "budget"),
    [(1, "fault", None), (2, "stuck", None), (3, "budget", 2_000_000), (4, "stack", None)],
    ids=["fault", "stuck", "runaway", "stack-overflow"],
)
def test_a_simulated_core_that_faults_hangs_or_runs_away_names_the_fault(mode: int, kind: str, budget: Any) -> None:
    board = load_profiles().board(BOARD)
    with sim_mod.McuSimulator(_fault_agent(mode), board) as sim, SerialTransport(sim.port_name) as link:
        # A long RUN deadline: only the simulator's watch can end this quickly.
        client = DeviceClient(link, RetryPolicy(run_timeout_s=120), watch=sim.check_alive)
        client.hello()
        client.load(bytes(64))
        sim.set_budget(budget)
        started = time.monotonic()
        with pytest.raises(DeviceFaultError) as err:
            client.run(1)
    assert time.monotonic() - started < 3.0
    e = err.value
    assert e.fields["kind"] == kind and e.fields["command"] == "RUN"
    assert "during RUN" in str(e) and "pc=0x" in str(e)
    assert board.memory.flash_bytes and 0x20000000 <= e.fields["pc"] < 0x20000000 + board.memory.flash_bytes
    if kind == "fault":
        assert e.fields["address"] == 0x40001234 and "address=0x40001234" in str(e)
    if kind == "stack":  # the stack pointer, below the region the linker script reserves
        assert sim.stack is not None and e.fields["address"] < sim.stack[0]
        assert "stack overflow" in str(e) and f"{sim.stack[1] - sim.stack[0]} B stack" in str(e)


@pytest.mark.parametrize("board_name", ["rv32-mcu-sim", "stm32h7"])
def test_the_simulator_maps_only_the_ram_the_image_is_linked_for(board_name: str) -> None:
    # stm32h7: the profile's 1 MiB is several SRAM banks; the image links
    # into the 512 KiB AXI bank, so a read just past it must fault.
    board = load_profiles().board(board_name)
    port = "rv32-sim" if board_name == "rv32-mcu-sim" else "stm32h7"
    image = read_image_map(build_agent(port, [FAULT_MODEL], extra_cflags=["-DEK_FAULT_MODE=0"]).read_bytes())
    beyond = image.ram[1] + 16
    elf = build_agent(port, [FAULT_MODEL], extra_cflags=["-DEK_FAULT_MODE=1", f"-DEK_BAD_ADDRESS={beyond:#x}u"])
    with sim_mod.McuSimulator(elf, board) as sim, SerialTransport(sim.port_name) as link:
        assert sim.ram_region == image.ram and sim.flash_region == image.flash
        client = DeviceClient(link, RetryPolicy(run_timeout_s=30), watch=sim.check_alive)
        client.hello()
        client.load(bytes(64))
        with pytest.raises(DeviceFaultError) as err:
            client.run(1)
    assert err.value.fields["kind"] == "fault" and err.value.fields["address"] == beyond


@pytest.mark.parametrize("board_name", ["rv32-mcu-sim", "stm32h7"])
def test_stack_high_water_is_measured_inside_the_linker_scripts_stack(board_name: str) -> None:
    board = load_profiles().board(board_name)
    port = "rv32-sim" if board_name == "rv32-mcu-sim" else "stm32h7"
    elf = build_agent(port, [FAULT_MODEL], extra_cflags=["-DEK_FAULT_MODE=0"])
    with sim_mod.McuSimulator(elf, board) as sim, SerialTransport(sim.port_name) as link:
        client = DeviceClient(link, RetryPolicy(run_timeout_s=30), watch=sim.check_alive)
        client.hello()
        client.load(bytes(64))
        client.run(1)
        used = sim.stack_high_water()
    assert sim.stack is not None and sim.stack[1] - sim.stack[0] == 16 * 1024
    assert used is not None and 0 < used < 16 * 1024


def test_deadlines_follow_the_board_and_the_work() -> None:
    profiles = load_profiles()
    rv32, stm = profiles.board("rv32-mcu-sim"), profiles.board("stm32h7")
    small, big = WorkEstimate(macs=10_000, elements=1_000), WorkEstimate(macs=100_000_000, elements=1_000_000)
    assert retry_for(rv32, simulated=False, work=big).run_timeout_s > retry_for(rv32, simulated=False, work=small).run_timeout_s
    # a faster clock: a shorter bound for the same work
    assert retry_for(stm, simulated=False, work=big).run_timeout_s < retry_for(rv32, simulated=False, work=big).run_timeout_s
    # simulators run slower than the boards they model
    assert retry_for(rv32, simulated=True, work=big).run_timeout_s > retry_for(rv32, simulated=False, work=big).run_timeout_s
    assert retry_for(rv32, simulated=False, image_bytes=1 << 20).verify_timeout_s < 60
    for p in (retry_for(rv32, simulated=True, work=small), retry_for(rv32, simulated=False, work=small)):
        assert p.run_timeout_s < 60 and p.response_timeout_s < 2


# -- killed mid-command -------------------------------------------------------- #


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("kill")
    out = {}
    # pnet: a RUN of ~10 M simulated instructions (seconds); dense: a 256 KiB upload.
    for name, model in (("pnet", pnet_like(tmp / "pnet.onnx", 48)), ("dense", dense(tmp / "dense.onnx", 256, 256))):
        out[name] = tmp / f"{name}.ekpkg"
        assert main(["compile", str(model), "--board", BOARD, "-o", str(out[name])]) == 0
    return out


def _kill(sim: Any, how: str) -> None:
    if how == "core":
        sim.stop()  # the simulated chip dies; its pty stays open
    else:
        sim.uart.close()  # the simulator side of the pty goes away


# The simulator's core thread must survive its pty going away (a dead line, not a crash).
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["core", "pty"])
@pytest.mark.parametrize("command", ["run", "bench", "flash"])
def test_device_killed_mid_command_gives_a_typed_error_quickly(
    command: str, how: str, packages: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    sims: list[Any] = []
    real_init = sim_mod.McuSimulator.__init__

    def record(self: Any, *a: Any, **k: Any) -> None:
        real_init(self, *a, **k)
        sims.append(self)

    monkeypatch.setattr(sim_mod.McuSimulator, "__init__", record)
    killed_at: list[float] = []
    # flash: kill before the 20th LOAD chunk; run/bench: 0.3 s into the first RUN
    trigger, delay = (Command.LOAD, 0.0) if command == "flash" else (Command.RUN, 0.3)
    seen = {"n": 0}
    real_request = device_mod.DeviceClient.request

    def request(self: Any, cmd: Command, *a: Any, **k: Any) -> Any:
        if cmd == trigger and not killed_at:
            seen["n"] += 1
            if command != "flash" or seen["n"] == 20:
                killed_at.append(time.monotonic() + delay)
                threading.Timer(delay, _kill, (sims[-1], how)).start()
        return real_request(self, cmd, *a, **k)

    monkeypatch.setattr(device_mod.DeviceClient, "request", request)
    if command == "flash":
        argv = ["flash", str(packages["dense"]), "--sim"]
    elif command == "bench":
        argv = ["bench", str(packages["pnet"]), "--runs", "2", "--warmup", "0"]
    else:
        import numpy as np

        np.savez(tmp_path / "in.npz", x=np.zeros((1, 3, 48, 48), np.float32))
        argv = ["run", str(packages["pnet"]), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz")]
    assert main(argv) == 2
    elapsed = time.monotonic() - killed_at[0]
    err = capsys.readouterr().err
    assert elapsed < KILL_BOUND_S, (elapsed, err)
    assert "internal error" not in err.lower() and err.strip(), err
    for sim in sims:
        sim.close()


def test_posix_agent_process_killed_mid_upload_gives_a_typed_error(tmp_path: Path) -> None:
    size = 256 * 1024
    agent = build_blob_agent("posix", size)
    policy = retry_for(load_profiles().board(BOARD), simulated=False)
    with PosixAgent(agent, tmp_path / "flash.bin") as dev, SerialTransport(dev.port) as link:
        client = DeviceClient(link, policy)
        client.hello()
        started: list[float] = []

        def progress(done: int, total: int) -> None:
            if done > total // 4 and not started:
                started.append(time.monotonic())
                dev.stop()  # SIGKILL: the device process is gone, the pty stays

        with pytest.raises(DeviceError) as err:
            client.load(bytes(size), progress)
    assert isinstance(err.value, (DeviceTimeoutError, DeviceError))
    assert time.monotonic() - started[0] < KILL_BOUND_S
    assert "stopped answering" in str(err.value) or "failed after" in str(err.value)



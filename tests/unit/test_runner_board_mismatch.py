"""A package run with --allow-other-board on a board its runner cannot
drive gets a typed error before anything runs: a host (tvm-vm) package on
rv32-mcu-sim ran on this machine's CPU and was reported as the MCU's
latency; an MCU (aot-c) package on host died on an AssertionError."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgekit.core.errors import ConfigError
from edgekit.core.profiles import load_profiles
from edgekit.runtime.host import HostRunner
from edgekit.runtime.mcu import McuRunner

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("board", ["rv32-mcu-sim", "raspberry-pi-4"])
def test_a_host_package_is_not_run_as_another_boards(board: str) -> None:
    package = SimpleNamespace(runtime="tvm-vm")  # refused before the package is read
    with pytest.raises(ConfigError, match=f"runs in this process.*board '{board}'") as info:
        HostRunner(package, load_profiles().board(board))  # type: ignore[arg-type]
    assert f"--board {board}" in info.value.hint


def test_an_mcu_package_on_the_host_board_is_a_config_error() -> None:
    runner = object.__new__(McuRunner)  # past load(): only where it would connect
    runner.board = load_profiles().board("host")
    runner.connection = SimpleNamespace(simulator=None)  # host: no serial port, no MCU simulator
    runner._port, runner._sim, runner._transport = None, None, None
    with pytest.raises(ConfigError, match="board 'host' has no serial port and no microcontroller simulator"):
        runner._connect(SimpleNamespace(runtime="aot-c"))  # type: ignore[arg-type]

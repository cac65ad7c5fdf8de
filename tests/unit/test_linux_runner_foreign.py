"""A Linux package of another ISA on a board that runs packages natively
gets a typed error, not "internal error: OSError: Exec format error"
(`edgekit bench rpi.ekpkg --board host --allow-other-board`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgekit.core.errors import ConfigError
from edgekit.core.profiles import load_profiles
from edgekit.core.cpu_features import host_arch
from edgekit.runtime.linux_runner import LinuxRunner

pytestmark = pytest.mark.unit


def _runner(board: str, *, simulated: bool) -> LinuxRunner:
    runner = object.__new__(LinuxRunner)  # no package: only where it would run
    runner.board = load_profiles().board(board)
    runner.connection = SimpleNamespace(simulated=simulated, transport=SimpleNamespace(name="local"))
    return runner


@pytest.mark.parametrize("simulated", [True, False])
def test_foreign_code_on_a_native_board_is_refused(simulated: bool) -> None:
    foreign = "aarch64" if host_arch() != "aarch64" else "riscv64"
    with pytest.raises(ConfigError, match=f"runner is {foreign} code.*board 'host'") as info:
        _runner("host", simulated=simulated)._open_executor(foreign)
    assert "--board host" in info.value.hint


def test_own_code_on_a_native_board_runs_here() -> None:
    executor = _runner("host", simulated=False)._open_executor(host_arch())
    try:
        assert executor.prefix == []
    finally:
        executor.close()

"""connect(): the one board-or-simulator decision every runner makes."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from edgekit.core.errors import ConfigError
from edgekit.core.links import SIMULATORS, TRANSPORTS, SimulatorKind
from edgekit.core.profiles import TransportConfig, load_profiles
from edgekit.core.registry import resolve
from edgekit.runtime.connection import NoConnectionError, connect


@pytest.fixture(scope="module")
def boards():
    return load_profiles()


def test_an_mcu_without_a_port_is_simulated_with_a_notice(boards, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="edgekit.runtime.connection"):
        conn = connect(boards.board("rv32-mcu-sim"))
    assert conn.simulated and conn.simulator is not None and conn.simulator.name == "unicorn"
    assert conn.address == "" and conn.simulator.deterministic
    assert "no serial port configured for rv32-mcu-sim: using its unicorn simulator" in caplog.text


def test_a_port_from_the_command_line_or_the_profile_means_the_board(boards) -> None:
    mcu = boards.board("stm32h7")
    conn = connect(mcu, "/dev/ttyACM0")
    assert not conn.simulated and conn.address == "/dev/ttyACM0" and conn.transport.name == "serial"
    configured = replace(mcu, transport=replace(mcu.transport, port="/dev/ttyUSB3"))
    assert connect(configured).address == "/dev/ttyUSB3"
    # --sim wins over the profile's port (only --port and --sim together are refused).
    assert connect(configured, sim=True).simulated
    assert connect(boards.board("raspberry-pi-4"), "pi@10.0.0.2").describe() == "ssh pi@10.0.0.2"


@pytest.mark.parametrize(
    ("board", "port", "sim", "error", "message"),
    [
        ("rv32-mcu-sim", "/dev/ttyUSB0", True, ConfigError, "both --port and --sim given"),
        ("rv32-mcu-sim", None, False, NoConnectionError,
         r"no serial port for board 'rv32-mcu-sim'\. Pass --port /dev/ttyUSB0 \(or set transport.port"),
        ("raspberry-pi-4", None, False, NoConnectionError, r"no address for board 'raspberry-pi-4'\. Pass --port user@host"),
        ("jetson-orin-nano", None, None, NoConnectionError,
         r"no address for board 'jetson-orin-nano' and no simulator\. Pass --port user@host"),
        ("rtx-4090", None, True, NoConnectionError, "board 'rtx-4090' has no simulator"),
        ("host", "/dev/ttyUSB0", None, ConfigError, "--port does not apply"),
        ("host", None, "rtl", ConfigError, "--sim rtl needs an NPU board: 'host' is simulated by 'native'"),
        ("rv32-mcu-sim", None, "rtl", ConfigError, "which has no engine 'rtl'"),
    ],
)  # fmt: skip
def test_refusals_say_what_to_pass(boards, board, port, sim, error, message) -> None:
    with pytest.raises(error, match=message) as info:
        connect(boards.board(board), port, sim)
    assert info.value.hint


def test_engines_and_boards_that_are_this_machine(boards) -> None:
    npu = connect(boards.board("pynq-z2"), sim=True)
    assert npu.engine == "model" and connect(boards.board("pynq-z2"), sim="rtl").engine == "rtl"
    host = connect(boards.board("host"), sim=True)  # the host is its own simulator
    assert not host.simulated and host.describe() == "this machine"


def test_a_simulated_only_board_needs_no_notice(boards, caplog) -> None:
    board = replace(boards.board("rv32-mcu-sim"), transport=TransportConfig(kind="sim"))
    with caplog.at_level(logging.WARNING):
        assert connect(board).simulated
    assert "no " not in caplog.text
    with pytest.raises(ConfigError, match="--port does not apply"):
        connect(board, "/dev/ttyUSB0")


def test_registries_name_what_implements_each_entry() -> None:
    for name in TRANSPORTS:
        entry = TRANSPORTS.get(name)
        assert entry.addressed == bool(entry.address_key)
        if entry.implementation:
            assert callable(entry.load())
    for name in SIMULATORS:
        entry = SIMULATORS.get(name)
        if entry.implementation:
            assert callable(entry.load())
        for part, _spec in entry.parts:
            assert callable(entry.load(part))
    with pytest.raises(ConfigError, match="simulator 'npu' has no part 'fpga'.*Choose one of: .*board-rtl"):
        SIMULATORS.get("npu").load("fpga")
    with pytest.raises(ConfigError, match="unknown simulator 'renod'.*Did you mean 'none'|unknown simulator 'renod'"):
        SIMULATORS.get("renod")


def test_resolve_reports_a_module_that_is_not_installed() -> None:
    broken = SimulatorKind("x", "a plugin whose module is gone", "edgekit.sim.no_such_module:Sim")
    with pytest.raises(ConfigError, match="'x' needs edgekit.sim.no_such_module, which is not installed"):
        broken.load()
    with pytest.raises(ConfigError, match="is not 'module:attr'"):
        resolve("edgekit.sim.mcu", "y")


def test_serial_open_failures_are_typed(tmp_path) -> None:
    import errno

    import serial

    from edgekit.core.errors import PortBusyError, TransportError
    from edgekit.runtime.transport import SerialTransport, _open_error

    with pytest.raises(TransportError, match=r"serial port .*/none does not exist\. Check the cable"):
        SerialTransport(str(tmp_path / "none"))
    denied = serial.SerialException(errno.EACCES, "could not open port: [Errno 13] Permission denied")
    assert "dialout" in _open_error("/dev/ttyS9", denied).hint
    busy = _open_error("/dev/ttyS9", serial.SerialException("Could not exclusively lock port /dev/ttyS9"))
    assert isinstance(busy, PortBusyError) and busy.fields["port"] == "/dev/ttyS9"
    assert "cannot open serial port /dev/ttyS9: odd" in str(_open_error("/dev/ttyS9", serial.SerialException("odd")))

"""The simulator's pty-backed UART after its pty is closed: a dead line, not an exception.

tests/sim/test_device_faults.py cuts the pty under a running simulated core; the core's
thread then keeps polling the UART registers until the simulator is stopped.
"""

from __future__ import annotations

import time

from edgekit.sim.uart import Ns16550, PtyUart


def test_closed_pty_reads_as_an_idle_line_and_drops_bytes() -> None:
    uart = PtyUart()
    uart.close()
    regs = Ns16550(uart)
    for _ in range(40):  # past the idle threshold: the status read then waits instead of spinning
        assert regs.read(5, 1) == 0x60  # transmitter ready, no byte waiting
    assert regs.read(0, 1) == 0
    regs.write(0, 1, ord("x"))  # lost, as on a pulled cable
    start = time.monotonic()
    assert not uart.rx_ready(wait=True)
    assert time.monotonic() - start < 1.0


def test_open_pty_still_moves_bytes() -> None:
    import os

    uart = PtyUart()
    try:
        slave = os.open(uart.port, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(slave, b"ab")
            deadline = time.monotonic() + 2
            while not uart.rx_ready(wait=False) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert uart.rx_byte() == ord("a") and uart.rx_byte() == ord("b")
            uart.tx_byte(ord("z"))
            assert os.read(slave, 1) == b"z"
        finally:
            os.close(slave)
    finally:
        uart.close()

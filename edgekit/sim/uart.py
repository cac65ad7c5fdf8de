"""UART register models for the MCU simulator, backed by a pseudo-terminal.

The firmware talks to MMIO registers; these models move the bytes to and from
the master side of a pty whose slave name the host opens with pyserial. Reads
of the status register block briefly on the pty when no byte is waiting, so an
idle firmware polling loop does not burn a host core. Once the pty is closed
(the host side of a dead link, or a test cutting it under a running core) the
line is dead: nothing more arrives, bytes sent are lost, as on a UART whose
cable was pulled -- the firmware keeps running until the simulator stops it.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import time
import tty
from typing import Callable

__all__ = ["PtyUart", "Ns16550", "Stm32Usart", "UART_MODELS"]

logger = logging.getLogger(__name__)

#: How long one idle status read waits for host bytes.
_IDLE_WAIT_S = 0.02
#: Status reads in a row with no data moved before the firmware counts as idle.
#: A status read is also how firmware checks "transmitter ready", so only a
#: run of them (a receive-polling loop) may block.
_IDLE_POLLS = 32


class PtyUart:
    """Byte queue between a pty and a register model.

    Attributes:
        port: Slave path for :class:`~edgekit.runtime.transport.SerialTransport`.
    """

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._rx: collections.deque[int] = collections.deque()
        self._empty_polls = 0
        self.should_stop: Callable[[], bool] = lambda: False
        self._closed = False

    def rx_ready(self, wait: bool) -> bool:
        """True when a byte is waiting; with ``wait`` and an idle firmware,
        waits a little for one instead of letting the poll loop spin."""
        if self._rx:
            return True
        if wait:
            self._empty_polls += 1
        idle = wait and self._empty_polls > _IDLE_POLLS
        try:
            ready, _, _ = select.select([] if self._closed else [self._master], [], [], _IDLE_WAIT_S if idle else 0)
        except (OSError, ValueError):  # closed by another thread since the check
            self._closed = True
            if idle:
                time.sleep(_IDLE_WAIT_S)
            return False
        if ready:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # no slave open right now
                return False
            self._rx.extend(data)
        return bool(self._rx)

    def rx_byte(self) -> int:
        """Pops the next received byte (0 if none, like an empty data register)."""
        self._empty_polls = 0
        return self._rx.popleft() if self._rx or self.rx_ready(False) else 0

    def tx_byte(self, value: int) -> None:
        """Sends one byte to the host."""
        self._empty_polls = 0
        if self._closed:
            return
        try:
            os.write(self._master, bytes([value & 0xFF]))
        except OSError:
            if not self._closed:  # closed by another thread since the check: the byte is lost
                raise

    def close(self) -> None:
        """Closes both pty ends; the line is dead from then on (see the module docstring)."""
        self._closed = True
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class Ns16550:
    """The subset of a 16550 the rv32 port uses: RBR/THR at 0, LSR at 5."""

    size = 0x100

    def __init__(self, pty: PtyUart) -> None:
        self.pty = pty

    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return self.pty.rx_byte()
        if offset == 5:  # LSR: THRE|TEMT always (the pty takes bytes at once), DR when a byte waits
            return 0x60 | (1 if self.pty.rx_ready(wait=True) else 0)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.pty.tx_byte(value)


class Stm32Usart:
    """STM32H7 USART registers the Cortex-M7 port uses: ISR, RDR, TDR (rest ignored)."""

    size = 0x400
    ISR, RDR, TDR = 0x1C, 0x24, 0x28
    RXNE, TC, TXE = 1 << 5, 1 << 6, 1 << 7

    def __init__(self, pty: PtyUart) -> None:
        self.pty = pty

    def read(self, offset: int, size: int) -> int:
        if offset == self.ISR:
            return self.TXE | self.TC | (self.RXNE if self.pty.rx_ready(wait=True) else 0)
        if offset == self.RDR:
            return self.pty.rx_byte()
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == self.TDR:
            self.pty.tx_byte(value)


UART_MODELS = {"ns16550": Ns16550, "stm32-usart": Stm32Usart}

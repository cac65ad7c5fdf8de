"""A raw byte link over a serial port, for devices that speak a byte protocol rather than edgekit's frames.

The FPGA boards' UART bridge (:mod:`edgekit.runtime.npu.bridge`) has no
processor to run the framed protocol; :class:`SerialByteLink` gives it the
port opening, locking and error mapping of :class:`SerialTransport`.
"""

from __future__ import annotations

import time

from edgekit.runtime.transport import SerialTransport

__all__ = ["SerialByteLink", "RESYNC_S"]

#: Seconds of silence after which the board's bridge has dropped any
#: incomplete command (its timeout is 50 ms: rtl/boards/ulx3s_top.v).
RESYNC_S = 0.1


class SerialByteLink(SerialTransport):
    """A serial port as a :class:`~edgekit.runtime.npu.bridge.ByteLink`.

    Args:
        port: Device path, e.g. ``/dev/ttyUSB0``.
        baudrate: Line speed (the board profile's ``transport.baudrate``).

    Raises:
        PortBusyError: another process holds the port.
        TransportError: the port does not exist or cannot be opened.
    """

    def __init__(self, port: str, baudrate: int) -> None:
        super().__init__(port, baudrate)
        self.baudrate = baudrate

    def write(self, data: bytes) -> None:
        self._write_bytes(bytes(data))

    def read(self, n: int, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        out = bytearray()
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            out += self._read_bytes(left)
        if len(out) > n:  # more than asked: only a confused board sends that
            self.discard_input()
            del out[n:]
        return bytes(out)

    def resync(self) -> None:
        time.sleep(RESYNC_S)
        self.discard_input()

    def clock(self) -> float:
        return time.monotonic()

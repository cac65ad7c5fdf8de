"""Byte links to a device: a pyserial transport for boards and simulator ptys.

The transport moves whole frames: :meth:`SerialTransport.write_frame` writes
one encoded frame with a write timeout, :meth:`SerialTransport.read_frame`
keeps reading until a complete frame arrived or its deadline passed. Byte I/O
goes through two small methods (``_read_bytes``/``_write_bytes``) so a
fault-injecting transport (issue 10) can subclass this one and corrupt, drop or
stall bytes without touching the protocol code.
"""

from __future__ import annotations

import errno
import logging
import termios
import time
from typing import Any

import serial

from edgekit.core.errors import DeviceTimeoutError, PortBusyError, TransportError
from edgekit.runtime.protocol import FrameReader

__all__ = ["SerialTransport", "DEFAULT_WRITE_TIMEOUT_S"]

logger = logging.getLogger(__name__)

#: A write that cannot hand its bytes to the OS within this time means the
#: other end stopped reading (flow control stuck, cable pulled).
DEFAULT_WRITE_TIMEOUT_S = 2.0
#: Longest single blocking read, so deadlines are checked often enough.
_READ_SLICE_S = 0.05
#: What a port that went away raises: pyserial's errors, OS errors, and the
#: termios error tcdrain/tcflush raise on a pty whose other side closed.
_LINK_ERRORS = (serial.SerialException, OSError, termios.error)


#: Why opening a port fails: (errnos, text pyserial puts in the message, error, message, hint).
_OPEN_FAILURES = (
    ((errno.EBUSY, errno.EAGAIN), "exclusively lock", PortBusyError, "serial port {port} is busy: it is in use by another process",
     "Close the other program (another edgekit, a serial monitor) or pick another --port."),
    ((errno.ENOENT,), "No such file", TransportError, "serial port {port} does not exist",
     "Check the cable and the port name (ls /dev/tty*), or use --sim."),
    ((errno.EACCES,), "Permission denied", TransportError, "no permission to open serial port {port}",
     "Add your user to the 'dialout' group (then log in again) or fix the device permissions."),
)  # fmt: skip


def _open_error(port: str, exc: Exception) -> TransportError:
    """The typed error for a port pyserial could not open."""
    text, err = str(exc), getattr(exc, "errno", None)
    for errnos, needle, kind, message, hint in _OPEN_FAILURES:
        if err in errnos or needle in text:
            return kind(message.format(port=port), hint=hint, port=port)
    return TransportError(f"cannot open serial port {port}: {text}", hint="Check the port.", port=port)


class SerialTransport:
    """A serial port (or pty) opened exclusively.

    Args:
        port: Device path (``/dev/ttyUSB0``, a pty's slave name) or a pyserial URL.
        baudrate: Line speed; ignored by ptys.
        write_timeout_s: Limit for one :meth:`write_frame`.
        exclusive: Lock the port so a second edgekit process gets
            :class:`PortBusyError` instead of interleaving bytes.

    Raises:
        PortBusyError: another process holds the port.
        TransportError: the port does not exist or cannot be opened.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        *,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
        exclusive: bool = True,
    ) -> None:
        self.port = port
        self._reader = FrameReader()
        self._frames: list[bytes] = []  # complete frames read past the one returned
        self._serial = self._open(port, baudrate, write_timeout_s, exclusive)

    @staticmethod
    def _open(port: str, baudrate: int, write_timeout_s: float, exclusive: bool) -> Any:
        ser = serial.Serial()
        ser.port = port
        ser.baudrate = baudrate
        ser.timeout = _READ_SLICE_S
        ser.write_timeout = write_timeout_s
        if exclusive:
            ser.exclusive = True
        try:
            ser.open()
        except serial.SerialException as exc:
            raise _open_error(port, exc) from None
        return ser

    # -- byte layer (override to inject faults) ---------------------------- #

    def _write_bytes(self, data: bytes) -> None:
        try:
            written = self._serial.write(data)
            self._serial.flush()
        except serial.SerialTimeoutException:
            raise DeviceTimeoutError(
                f"writing to {self.port} did not finish within {self._serial.write_timeout} s",
                hint="The device stopped reading; reset it or check the cable.",
                port=self.port,
            ) from None
        except _LINK_ERRORS as exc:
            raise TransportError(
                f"link to {self.port} failed while writing: {exc}", hint="Check the cable; reconnect the board."
            ) from None
        if written is not None and written != len(data):
            raise TransportError(
                f"only {written} of {len(data)} bytes reached {self.port}", hint="Check the cable; reconnect the board."
            )

    def _read_bytes(self, max_wait_s: float) -> bytes:
        try:
            self._serial.timeout = max(0.0, min(max_wait_s, _READ_SLICE_S))
            first = self._serial.read(1)
            if not first:
                return b""
            waiting = self._serial.in_waiting
            return first + (self._serial.read(waiting) if waiting else b"")
        except _LINK_ERRORS as exc:
            raise TransportError(
                f"link to {self.port} failed while reading: {exc}", hint="Check the cable; reconnect the board."
            ) from None

    # -- frame layer ------------------------------------------------------- #

    def write_frame(self, wire: bytes) -> None:
        """Writes one encoded frame (delimiter included)."""
        self._write_bytes(wire)

    def read_frame(self, timeout_s: float) -> bytes:
        """Returns the next complete raw frame (delimiter stripped).

        Raises:
            DeviceTimeoutError: no complete frame within ``timeout_s``.
            TransportError: the link failed.
        """
        deadline = time.monotonic() + timeout_s
        if self._frames:
            return self._frames.pop(0)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceTimeoutError(
                    f"no complete frame from {self.port} within {timeout_s:g} s",
                    hint="Is the edgekit firmware running on the board? Reset it, or raise the timeout.",
                    port=self.port,
                    timeout_s=timeout_s,
                )
            frames = self._reader.feed(self._read_bytes(left))
            if frames:
                self._frames = frames[1:]
                return frames[0]

    def discard_input(self) -> None:
        """Drops buffered input, e.g. stale answers before a new session."""
        self._frames = []
        self._reader = FrameReader()
        try:
            self._serial.reset_input_buffer()
        except _LINK_ERRORS:
            pass

    def close(self) -> None:
        """Closes the port; safe to call twice."""
        if self._serial is not None and self._serial.is_open:
            self._serial.close()

    def __enter__(self) -> "SerialTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

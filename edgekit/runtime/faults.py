"""A seeded fault-injecting serial transport, for reliability tests (issue 10).

:class:`FaultyTransport` is a :class:`~edgekit.runtime.transport.SerialTransport`
whose byte layer (``_read_bytes``/``_write_bytes``) damages traffic the way
real links do: a bit flipped, a run of bytes lost or repeated, the line going
silent for longer than the response timeout, the cable pulled (the port fails
and is reopened), the board resetting mid-transfer. Everything above the byte
layer — frame reader, :class:`~edgekit.runtime.device.DeviceClient`, the device
agent — is the real code, so a test with this transport tests what users run.

Rates are **per frame and direction**: with ``corrupt=0.01`` one frame in a
hundred that the host writes, and one in a hundred that it reads, has one bit
flipped. A per-byte rate would make every 1 KiB frame bad at 1 %; per-frame
rates are what "1 % of packets" means on a link. Which frame is hit, where, and
how is drawn from one :class:`random.Random` seeded with :attr:`FaultSpec.seed`;
the outcome still depends on timing (a reset lands between two device
instructions that the OS schedules), so a seed fixes the fault schedule, not
the interleaving.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from edgekit.core.errors import ConfigError, DeviceTimeoutError, TransportError
from edgekit.runtime.protocol import MAX_FRAME
from edgekit.runtime.transport import DEFAULT_WRITE_TIMEOUT_S, SerialTransport

__all__ = ["FaultSpec", "FaultyTransport", "FAULT_KINDS"]

logger = logging.getLogger(__name__)

#: Names of the counters in :attr:`FaultyTransport.injected`.
FAULT_KINDS = ("corrupt", "drop", "duplicate", "stall", "disconnect", "reset")


@dataclass(frozen=True)
class FaultSpec:
    """What to inject and how often (probabilities per frame and direction).

    Attributes:
        corrupt: A frame gets one random bit flipped.
        drop: A frame loses a random run of bytes (possibly all of it, or its
            delimiter, which merges it with the next frame).
        duplicate: A random run of a frame's bytes is delivered twice.
        stall: The link goes silent for :attr:`stall_s` (a read stall holds
            back the device's answers; a write stall blocks the host's write
            and ends in the same :class:`DeviceTimeoutError` as a real one).
        stall_s: Length of a stall; pick it above the response timeout.
        disconnect: A host write fails with :class:`TransportError` (cable
            pulled); bytes in flight are lost and the port is reopened on the
            next use.
        reset: The device is reset (needs ``reset_device``), either before the
            host's frame reaches it or just after it.
        seed: Seed of the fault schedule.
    """

    corrupt: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    stall: float = 0.0
    stall_s: float = 1.0
    disconnect: float = 0.0
    reset: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("corrupt", "drop", "duplicate", "stall", "disconnect", "reset"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"fault rate {name}={value} is not a probability", hint="Use a value in [0, 1].")
        if self.stall_s < 0:
            raise ConfigError(f"stall_s={self.stall_s} is negative", hint="Use a duration in seconds >= 0.")


class FaultyTransport(SerialTransport):
    """A serial transport that injects the faults of a :class:`FaultSpec`.

    Args:
        port: Port to open (a simulator's or POSIX agent's pty).
        spec: Fault rates and seed.
        reset_device: Resets the device (e.g. ``PosixAgent.reset`` or
            ``McuSimulator.reset``); required when ``spec.reset > 0``.
        baudrate / write_timeout_s / exclusive: As for :class:`SerialTransport`.

    Attributes:
        injected: How many faults of each kind were injected so far.
        enabled: Set False to pass traffic through untouched (e.g. while a
            test prepares the device).
    """

    def __init__(
        self,
        port: str,
        spec: FaultSpec,
        *,
        reset_device: Callable[[], None] | None = None,
        baudrate: int = 115200,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
        exclusive: bool = True,
    ) -> None:
        if spec.reset > 0 and reset_device is None:
            raise ConfigError("FaultSpec.reset > 0 needs a reset_device callback", hint="Pass the simulator's reset.")
        self.spec = spec
        self.enabled = True
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(spec.seed)
        self._reset_device = reset_device
        self._open_args = (baudrate, write_timeout_s, exclusive)
        self._rx_partial = bytearray()  # device bytes not yet ending in a delimiter
        self._rx_ready = bytearray()  # damaged bytes waiting to be handed up
        self._silent_until = 0.0
        self._stall_drawn = False
        self._disconnected = False
        self._reset_at: tuple[int, bool] | None = None
        #: Frames the host has written through this transport.
        self.writes = 0
        super().__init__(port, baudrate, write_timeout_s=write_timeout_s, exclusive=exclusive)

    def schedule_reset(self, write: int, *, after: bool) -> None:
        """Resets the device once, deterministically, at the ``write``-th host
        frame from now (1 = the next one): before the frame is written
        (``after=False``: the device never sees it) or after the device's
        answer to it arrived (``after=True``: the answer is dropped).

        Raises:
            ConfigError: no ``reset_device`` callback, or ``write < 1``.
        """
        if self._reset_device is None or write < 1:
            raise ConfigError("schedule_reset needs a reset_device callback and write >= 1", hint="Fix the call.")
        self._reset_at = (self.writes + write, after)

    # -- helpers ------------------------------------------------------------ #

    def _hit(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def _mangle(self, frame: bytes) -> bytes:
        """Applies corruption, drops and duplication to one frame's bytes."""
        data = bytearray(frame)
        if self._hit(self.spec.corrupt) and data:
            i = self._rng.randrange(len(data))
            data[i] ^= 1 << self._rng.randrange(8)
            self.injected["corrupt"] += 1
        if self._hit(self.spec.drop) and data:
            start = self._rng.randrange(len(data))
            end = start + self._rng.randint(1, len(data) - start)
            del data[start:end]
            self.injected["drop"] += 1
        if self._hit(self.spec.duplicate) and data:
            start = self._rng.randrange(len(data))
            end = start + self._rng.randint(1, min(len(data) - start, 64))
            data[end:end] = data[start:end]
            self.injected["duplicate"] += 1
        return bytes(data)

    def _reconnect_if_needed(self) -> None:
        if not self._disconnected:
            return
        baudrate, write_timeout_s, exclusive = self._open_args
        self._serial = self._open(self.port, baudrate, write_timeout_s, exclusive)
        try:
            self._serial.reset_input_buffer()  # what was in flight died with the cable
        except Exception:  # pragma: no cover - depends on the OS driver
            pass
        self._rx_partial.clear()
        self._rx_ready.clear()
        self._disconnected = False
        logger.debug("reopened %s after an injected disconnect", self.port)

    # -- byte layer --------------------------------------------------------- #

    def _write_bytes(self, data: bytes) -> None:
        self.writes += 1
        if self._reset_at is not None and self._reset_at[0] == self.writes:
            self._scheduled_reset(data, after=self._reset_at[1])
            return
        if not self.enabled:
            super()._write_bytes(data)
            return
        self._reconnect_if_needed()
        if self._hit(self.spec.disconnect):
            self.injected["disconnect"] += 1
            self._serial.close()
            self._disconnected = True
            raise TransportError(
                f"link to {self.port} failed while writing (injected disconnect)",
                hint="Check the cable; reconnect the board.",
                port=self.port,
            )
        if self._hit(self.spec.stall) and self._rng.random() < 0.5:
            self.injected["stall"] += 1
            time.sleep(self.spec.stall_s)
            raise DeviceTimeoutError(
                f"writing to {self.port} did not finish within {self.spec.stall_s:g} s (injected stall)",
                hint="The device stopped reading; reset it or check the cable.",
                port=self.port,
            )
        reset_after: bool | None = None
        if self._hit(self.spec.reset):
            self.injected["reset"] += 1
            reset_after = self._rng.random() < 0.5
            if not reset_after:
                assert self._reset_device is not None
                self._reset_device()  # the frame arrives at a freshly booted device
        super()._write_bytes(self._mangle(data))
        if reset_after:
            # Give the device a moment to act on the frame, then reset it: the
            # answer (and possibly the action) is lost.
            time.sleep(self._rng.uniform(0.0, 0.005))
            assert self._reset_device is not None
            self._reset_device()

    def _scheduled_reset(self, data: bytes, *, after: bool) -> None:
        self._reset_at = None
        self.injected["reset"] += 1
        assert self._reset_device is not None
        if not after:
            self._reset_device()
            return  # the frame is lost with the device's receive buffer
        super()._write_bytes(data)
        # Wait for the complete answer so the device has acted on the frame,
        # then reset it and throw the answer away.
        deadline = time.monotonic() + 5.0
        got = bytearray()
        while b"\x00" not in got and time.monotonic() < deadline:
            got += SerialTransport._read_bytes(self, 0.05)
        self._reset_device()

    def _read_bytes(self, max_wait_s: float) -> bytes:
        if not self.enabled:
            return super()._read_bytes(max_wait_s)
        self._reconnect_if_needed()
        now = time.monotonic()
        if now < self._silent_until:  # a stalled line: nothing arrives
            time.sleep(max(0.0, min(max_wait_s, self._silent_until - now)))
            return b""
        if not self._rx_ready:
            if b"\x00" not in self._rx_partial:  # else a frame held back by a stall is due
                raw = super()._read_bytes(max_wait_s)
                if not raw:
                    return b""
                self._rx_partial += raw
            self._take()
        out = bytes(self._rx_ready)
        self._rx_ready.clear()
        return out

    def _take(self) -> None:
        """Damages each complete device frame in ``_rx_partial``; a stall holds
        back the frame that drew it and everything after it."""
        while True:
            end = self._rx_partial.find(b"\x00")
            if end < 0:
                break
            if not self._stall_drawn and self._hit(self.spec.stall):
                self.injected["stall"] += 1
                self._stall_drawn = True  # this frame is delivered after the silence
                self._silent_until = time.monotonic() + self.spec.stall_s
                break
            self._stall_drawn = False
            frame = bytes(self._rx_partial[: end + 1])
            del self._rx_partial[: end + 1]
            self._rx_ready += self._mangle(frame)
        if len(self._rx_partial) > 2 * MAX_FRAME:  # not frames at all: pass through
            self._rx_ready += self._rx_partial
            self._rx_partial.clear()

    def discard_input(self) -> None:
        """Drops buffered input, including bytes held back by the injector."""
        self._rx_partial.clear()
        self._rx_ready.clear()
        if self._disconnected:
            return
        super().discard_input()

    def close(self) -> None:
        """Closes the port; safe after an injected disconnect."""
        if not self._disconnected:
            super().close()

    def stats(self) -> dict[str, Any]:
        """Counts of injected faults by kind (every kind present)."""
        return {k: int(self.injected.get(k, 0)) for k in FAULT_KINDS}

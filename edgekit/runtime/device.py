"""Host-side client of the edgekit device agent.

Layers (esptool's loader at its best): :func:`edgekit.runtime.protocol` packs
bytes, :class:`DeviceClient.request` matches a response to its request by
sequence number and retries within the named limits of :class:`RetryPolicy`,
and the command methods (:meth:`~DeviceClient.load`, :meth:`~DeviceClient.run`
...) speak in Python values. A weights upload is reported successful only when
the device's own SHA-256 of what it stored equals the host's.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from edgekit.core.errors import (
    ChecksumError,
    DeviceError,
    DeviceTimeoutError,
    PortBusyError,
    ProtocolError,
    TransportError,
)
from edgekit.runtime import protocol as P
from edgekit.runtime.protocol import Command, Status

__all__ = ["RetryPolicy", "FrameLink", "DeviceClient", "DEFAULT_RETRY", "WATCH_SLICE_S"]

logger = logging.getLogger(__name__)


class FrameLink(Protocol):
    """What the client needs from a transport (see :class:`SerialTransport`)."""

    def write_frame(self, wire: bytes) -> None: ...

    def read_frame(self, timeout_s: float) -> bytes: ...

    def discard_input(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Named limits for retries; no magic numbers in the protocol code.

    Attributes:
        attempts: Sends of one request before giving up (1 = no retry).
        response_timeout_s: Wait for the answer to one attempt.
        run_timeout_s: Wait for a RUN answer (models can run for long in a simulator).
        verify_timeout_s: Wait for VERIFY (the device hashes the whole image).
        upload_resumes: Times in a row an upload re-synchronises (after a
            reset, a lost link or a failed attempt series) without the
            device's offset having advanced since the previous time; any
            progress earns a fresh allowance. Also the number of hash
            mismatches at VERIFY tolerated per upload (those never reset).
        upload_deadline_s: Give up an upload that has not been verified after
            this long (None: no limit beyond the counts above). Checked
            before every request, so the upload ends at most one request's
            retries (``attempts x`` its timeout) after the deadline.
        run_attempts: Sends of one RUN: a RUN that timed out is resent once
            (its request may have been lost), not ``attempts`` times, so a
            dead device costs at most ``run_attempts x run_timeout_s``.
    """

    attempts: int = 6
    response_timeout_s: float = 1.0
    run_timeout_s: float = 300.0
    verify_timeout_s: float = 60.0
    upload_resumes: int = 4
    upload_deadline_s: float | None = None
    run_attempts: int = 2


#: Longest single wait on the link before the client asks the device's
#: watch (a simulator's liveness check) whether waiting still makes sense.
WATCH_SLICE_S = 0.2


DEFAULT_RETRY = RetryPolicy()

_STATUS_HINTS = {
    Status.ERR_NO_MODEL: "No verified weights are active on the device; run 'edgekit flash' first.",
    Status.ERR_SIZE_MISMATCH: "The weights do not belong to the firmware's model; flash firmware and weights "
    "from the same package.",
    Status.ERR_TOO_LARGE: "The weights image is larger than the device's slot; compress the model or pick a "
    "board with more flash.",
    Status.ERR_MODEL_FAILED: "The model reported an error on the device; check the package was built for this board.",
    Status.ERR_UNKNOWN_CMD: "The firmware is older than this edgekit; reflash it.",
}


class DeviceClient:
    """Request/response client over a :class:`FrameLink`.

    Args:
        link: The transport (serial port or simulator pty).
        retry: Retry limits.
        on_resync: Called before an upload re-synchronises; the simulator's
            tests use it, real code leaves it ``None``.
        watch: Called with the command's name at least every
            :data:`WATCH_SLICE_S` while waiting for an answer; raises (a
            :class:`~edgekit.core.errors.DeviceFaultError`) when the device
            can no longer answer, e.g. a simulated core that faulted.

    Attributes:
        last_command: Name of the last command sent (for error messages).
    """

    def __init__(
        self,
        link: FrameLink,
        retry: RetryPolicy = DEFAULT_RETRY,
        on_resync: Callable[[], None] | None = None,
        watch: Callable[[str], None] | None = None,
    ) -> None:
        self.link = link
        self.retry = retry
        self._on_resync = on_resync
        self._watch = watch
        self.last_command = ""
        # A random start keeps a new host session from matching a cached answer
        # of the previous one.
        self._seq = random.randrange(0, P.NAK_SEQ)
        self.boot_id: int | None = None
        #: Highest image offset the device confirmed during the current upload.
        self._confirmed = 0

    # -- matcher ----------------------------------------------------------- #

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % P.NAK_SEQ  # NAK_SEQ itself is reserved
        return self._seq

    def request(
        self,
        cmd: Command,
        payload: bytes = b"",
        *,
        timeout_s: float | None = None,
        accept: tuple[Status, ...] = (Status.OK,),
    ) -> P.Frame:
        """Sends one request and returns its response frame.

        The same sequence number is reused for retries, so the device answers
        a repeated request from its cache instead of executing it twice.

        Raises:
            DeviceTimeoutError: no valid answer after ``retry.attempts`` sends.
            ProtocolError / ChecksumError / DeviceError: the device refused the
                request (status not in ``accept``).
        """
        seq = self._next_seq()
        wire = P.encode_frame(P.Frame(cmd=int(cmd), seq=seq, payload=payload))
        wait = self.retry.response_timeout_s if timeout_s is None else timeout_s
        last_problem = "no answer"
        self.last_command = cmd.name
        attempts = self.retry.run_attempts if cmd == Command.RUN else self.retry.attempts
        for attempt in range(1, attempts + 1):
            self.link.write_frame(wire)
            try:
                frame = self._await(cmd, seq, wait)
            except DeviceTimeoutError:
                last_problem = f"no answer within {wait:g} s"
                logger.debug("%s seq=%d attempt %d: %s", cmd.name, seq, attempt, last_problem)
                continue
            if frame is None:  # NAK or corrupt answer: resend at once
                last_problem = "corrupted frames"
                continue
            if frame.status not in accept:
                raise self._status_error(cmd, frame)
            return frame
        raise DeviceTimeoutError(
            f"{cmd.name} failed after {attempts} attempts ({last_problem})",
            hint="Check that the board runs the edgekit firmware and the cable is good; reset the board and retry.",
            command=cmd.name,
            attempts=attempts,
        )

    def _read_frame(self, cmd: Command, wait: float) -> bytes:
        """One raw frame within ``wait`` seconds, asking the watch between slices."""
        if self._watch is None:
            return self.link.read_frame(wait)
        deadline = time.monotonic() + wait
        while True:
            self._watch(cmd.name)
            left = deadline - time.monotonic()
            try:
                return self.link.read_frame(max(0.0, min(left, WATCH_SLICE_S)))
            except DeviceTimeoutError:
                if left <= WATCH_SLICE_S:
                    self._watch(cmd.name)
                    raise

    def _await(self, cmd: Command, seq: int, wait: float) -> P.Frame | None:
        """Reads until the answer to ``seq`` arrives; None means resend now."""
        while True:
            raw = self._read_frame(cmd, wait)
            try:
                frame = P.decode_frame(raw)
            except ProtocolError as exc:
                logger.debug("dropping a bad frame from the device: %s", exc)
                return None
            if not frame.response:
                continue  # an echo of our own frame on a loopback line
            if frame.cmd == Command.NAK:
                return None
            if frame.seq == seq and frame.cmd == cmd:
                return frame
            logger.debug("ignoring stale answer %s seq=%d (waiting for %d)", frame.cmd, frame.seq, seq)

    @staticmethod
    def _status_error(cmd: Command, frame: P.Frame) -> DeviceError:
        try:
            status = Status(frame.status)
            name = status.name
        except ValueError:
            status, name = None, f"status {frame.status}"
        msg = f"device refused {cmd.name}: {name}"
        if status is Status.ERR_HASH_MISMATCH:
            return ChecksumError(msg, hint="The stored image is corrupt; upload it again.")
        hint = _STATUS_HINTS.get(status, "This is a bug in the host or firmware; report it with --debug output.")
        cls = ProtocolError if status in (Status.ERR_BAD_ARG, Status.ERR_UNKNOWN_CMD, None) else DeviceError
        return cls(msg, hint=hint, command=cmd.name, status=frame.status)

    # -- commands ---------------------------------------------------------- #

    def hello(self) -> P.HelloInfo:
        """Opens a session: checks the protocol version; records the boot id."""
        self.link.discard_input()
        info = P.unpack_hello(self.request(Command.HELLO).payload)
        if info.version != P.PROTOCOL_VERSION:
            raise ProtocolError(
                f"device speaks protocol version {info.version}, this edgekit speaks {P.PROTOCOL_VERSION}",
                hint="Reflash the firmware built by this edgekit version.",
            )
        if self.boot_id is not None and info.boot_id != self.boot_id:
            logger.info("device was reset since the last session")
        self.boot_id = info.boot_id
        return info

    def info(self) -> P.DeviceInfo:
        """Board, firmware, clock, arena and active-slot details."""
        return P.unpack_info(self.request(Command.INFO).payload)

    def verify(self) -> P.VerifyResult:
        """Hashes the active weights on the device; raises unless it matches its record."""
        frame = self.request(Command.VERIFY, timeout_s=self.retry.verify_timeout_s)
        return P.unpack_verify(frame.payload)

    def load(self, image: bytes, progress: Callable[[int, int], None] | None = None) -> P.VerifyResult:
        """Uploads a weights image, resuming from the device's offset after a
        reset or a lost link, then VERIFYs; returns once the device committed it.

        Raises:
            ChecksumError: the device's SHA-256 never matched the host's.
            DeviceTimeoutError / TransportError: the device stayed unreachable
                after ``retry.upload_resumes`` re-synchronisations.
        """
        digest = hashlib.sha256(image).digest()
        total = len(image)
        resumes = 0  # in a row without progress
        mismatches = 0
        self._confirmed = 0
        mark = 0  # device offset at the previous resume
        limit = self.retry.upload_deadline_s
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            try:
                if resumes:
                    # Inside the try: a link that fails again while we
                    # re-synchronise costs one more resume, not the upload.
                    self._hello_or_give_up()
                offset = self._begin(total, digest)
                offset = self._send_chunks(image, offset, progress, deadline)
                self._check_deadline(deadline)
                result = self._commit(digest)
                if result is not None:
                    return result
                problem: DeviceError = ChecksumError(
                    "the device's SHA-256 of the uploaded weights does not match the host's",
                    hint="The link corrupted data undetected by CRC; retry, and check the cable if it repeats.",
                )
                mismatches += 1
                if mismatches > self.retry.upload_resumes:
                    raise problem
            except PortBusyError:
                raise
            except _OutOfTime:
                raise self._deadline_error() from None
            except _DeviceGone as gone:
                raise gone.error from None
            except (DeviceTimeoutError, TransportError, _Resync) as exc:
                problem = exc if isinstance(exc, DeviceError) else DeviceError(str(exc), hint="Reset the board and retry.")
            if self._confirmed > mark:
                resumes = 0  # the device moved on since the last interruption
            mark = self._confirmed
            resumes += 1
            if resumes > self.retry.upload_resumes:
                raise problem
            logger.info("upload interrupted (%s); resuming (%d/%d)", problem, resumes, self.retry.upload_resumes)
            self._check_deadline(deadline)
            if self._on_resync is not None:
                self._on_resync()

    def _hello_or_give_up(self) -> None:
        """HELLO while re-synchronising an upload. A device that was reset or
        lost bytes answers it; one that stays silent through every attempt
        is gone (powered off, crashed, killed), and waiting through the
        remaining resumes would only multiply the time to tell the user."""
        try:
            self.hello()
        except DeviceTimeoutError as exc:
            raise _DeviceGone(
                DeviceTimeoutError(
                    f"the device stopped answering during the upload ({exc.message})",
                    hint="Check that the board is powered and runs the edgekit firmware; reset it and flash again.",
                    command="HELLO",
                )
            ) from None

    def _check_deadline(self, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise self._deadline_error()

    def _deadline_error(self) -> DeviceTimeoutError:
        return DeviceTimeoutError(
            f"upload not verified within its deadline of {self.retry.upload_deadline_s:g} s",
            hint="The link is too unreliable or too slow; check the cable, or raise RetryPolicy.upload_deadline_s.",
            deadline_s=self.retry.upload_deadline_s,
        )

    def _begin(self, total: int, digest: bytes) -> int:
        frame = self.request(Command.LOAD_BEGIN, P.pack_load_begin(total, digest))
        offset = P.unpack_u32("LOAD_BEGIN", frame.payload)
        if offset > total:
            raise ProtocolError(f"device resumes at {offset} of a {total}-byte image", hint="Reset the device.")
        self._confirmed = max(self._confirmed, offset)
        if offset:
            logger.info("resuming upload at byte %d of %d", offset, total)
        return offset

    def _send_chunks(
        self,
        image: bytes,
        offset: int,
        progress: Callable[[int, int], None] | None,
        deadline: float | None = None,
    ) -> int:
        total = len(image)
        while offset < total:
            if deadline is not None and time.monotonic() > deadline:
                raise _OutOfTime()
            chunk = image[offset : offset + P.LOAD_CHUNK]
            frame = self.request(
                Command.LOAD, P.pack_load(offset, chunk), accept=(Status.OK, Status.ERR_BAD_OFFSET, Status.ERR_STATE)
            )
            if frame.status == Status.ERR_STATE:
                raise _Resync("device lost the upload (it was reset)")
            received = P.unpack_u32("LOAD", frame.payload)
            if received > total:
                raise ProtocolError(f"device claims {received} of {total} bytes", hint="Reset the device.")
            offset = received  # the device's count is the truth, also after ERR_BAD_OFFSET
            self._confirmed = max(self._confirmed, offset)
            if progress is not None:
                progress(offset, total)
        return offset

    def _commit(self, digest: bytes) -> P.VerifyResult | None:
        frame = self.request(
            Command.VERIFY,
            timeout_s=self.retry.verify_timeout_s,
            accept=(Status.OK, Status.ERR_HASH_MISMATCH, Status.ERR_STATE),
        )
        if frame.status == Status.ERR_STATE:
            raise _Resync("device did not hold the whole image at VERIFY")
        result = P.unpack_verify(frame.payload)
        # Success needs both: the device committed, and its hash is ours.
        if frame.status == Status.OK and result.committed and result.sha256 == digest:
            return result
        return None

    def set_input(self, index: int, data: bytes) -> None:
        """Writes one input tensor's bytes into the device's arena, in chunks."""
        step = P.MAX_PAYLOAD - 8
        for off in range(0, max(len(data), 1), step):
            self.request(Command.SET_INPUT, P.pack_set_input(index, off, data[off : off + step]))

    def run(self, runs: int = 1) -> P.RunResult:
        """Runs the model ``runs`` times back to back; returns per-run counters."""
        cycles: list[int] = []
        instret: list[int] = []
        left = runs
        while left > 0:
            n = min(left, P.MAX_RUNS_PER_REQUEST)
            frame = self.request(Command.RUN, P.pack_run(n), timeout_s=self.retry.run_timeout_s)
            result = P.unpack_run(frame.payload)
            cycles += result.cycles
            instret += result.instret
            left -= n
        return P.RunResult(status=0, cycles=tuple(cycles), instret=tuple(instret))

    def get_output(self, index: int, nbytes: int) -> bytes:
        """Reads one output tensor's bytes from the device's arena, in chunks."""
        out = bytearray()
        while len(out) < nbytes:
            want = min(P.MAX_PAYLOAD, nbytes - len(out))
            frame = self.request(Command.GET_OUTPUT, P.pack_get_output(index, len(out), want))
            if len(frame.payload) != want:
                raise ProtocolError(
                    f"GET_OUTPUT returned {len(frame.payload)} bytes, asked for {want}", hint="Reflash the firmware."
                )
            out += frame.payload
        return bytes(out)


class _Resync(Exception):
    """Internal: the upload must re-synchronise with LOAD_BEGIN."""


class _DeviceGone(Exception):
    """Internal: the device stayed silent while the upload re-synchronised."""

    def __init__(self, error: DeviceError) -> None:
        super().__init__(str(error))
        self.error = error


class _OutOfTime(Exception):
    """Internal: the upload's deadline passed between two chunks."""

"""Frame encode/decode for the edgekit device protocol. Pure functions, no I/O.

A frame on the wire is ``COBS(body) + b"\\x00"`` where ``body`` is::

    u8  cmd      request: a Command; response: Command | 0x80
    u8  status   request: 0;        response: a Status
    u16 seq      little-endian; a response echoes its request's seq
    ... payload  0..MAX_PAYLOAD bytes, command-specific (struct-packed, LE)
    u32 crc32    IEEE CRC-32 (zlib) of every byte before it

COBS guarantees the body contains no ``0x00``, so ``0x00`` delimits frames and a
receiver resynchronises after any corruption at the next delimiter. The
firmware side is ``firmware_stubs/agent/ek_proto.h``; docs/protocol.md is the
reference for both. Command payloads are packed and parsed by the helpers at
the end of this module, so :mod:`edgekit.runtime.device` never touches bytes.
"""

from __future__ import annotations

import enum
import logging
import struct
import zlib
from dataclasses import dataclass

from cobs import cobs

from edgekit.core.errors import ChecksumError, ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_PAYLOAD",
    "MAX_FRAME",
    "RESPONSE_BIT",
    "NAK_SEQ",
    "Command",
    "Status",
    "Frame",
    "encode_frame",
    "decode_frame",
    "FrameReader",
    "HelloInfo",
    "DeviceInfo",
    "VerifyResult",
    "RunResult",
    "pack_load_begin",
    "pack_load",
    "pack_set_input",
    "pack_run",
    "pack_get_output",
    "unpack_hello",
    "unpack_info",
    "unpack_u32",
    "unpack_verify",
    "unpack_run",
    "MAX_RUNS_PER_REQUEST",
    "LOAD_CHUNK",
]

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: Largest payload either side sends; the device's receive buffer is sized from it.
MAX_PAYLOAD = 1024
_HEADER = struct.Struct("<BBH")
_CRC = struct.Struct("<I")
#: Largest encoded frame incl. COBS overhead (1 byte per 254) and delimiter.
MAX_FRAME = (_HEADER.size + MAX_PAYLOAD + _CRC.size) + (_HEADER.size + MAX_PAYLOAD + _CRC.size) // 254 + 2
RESPONSE_BIT = 0x80
#: Sequence number the device uses in a NAK for a frame it could not decode.
NAK_SEQ = 0xFFFF
#: Data bytes per LOAD frame (payload minus the u32 offset).
LOAD_CHUNK = MAX_PAYLOAD - 4
#: Runs per RUN request: each run returns two u64 counters.
MAX_RUNS_PER_REQUEST = (MAX_PAYLOAD - 8) // 16


class Command(enum.IntEnum):
    """Request commands; docs/protocol.md gives each payload."""

    HELLO = 0x01
    INFO = 0x02
    LOAD_BEGIN = 0x10
    LOAD = 0x11
    VERIFY = 0x12
    SET_INPUT = 0x20
    RUN = 0x21
    GET_OUTPUT = 0x22
    #: Only ever a response: the device could not decode a frame.
    NAK = 0x7F


class Status(enum.IntEnum):
    """Response status codes."""

    OK = 0
    ERR_FRAME = 1
    ERR_UNKNOWN_CMD = 2
    ERR_BAD_ARG = 3
    ERR_BAD_OFFSET = 4
    ERR_TOO_LARGE = 5
    ERR_NO_MODEL = 6
    ERR_STATE = 7
    ERR_HASH_MISMATCH = 8
    ERR_MODEL_FAILED = 9
    ERR_SIZE_MISMATCH = 10


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        cmd: The command byte without :data:`RESPONSE_BIT`.
        response: True for device-to-host frames.
        status: Status code (0 in requests).
        seq: Sequence number.
        payload: Command-specific bytes.
    """

    cmd: int
    seq: int
    payload: bytes = b""
    status: int = 0
    response: bool = False


def encode_frame(frame: Frame) -> bytes:
    """Encodes ``frame`` into its wire form, delimiter included.

    Raises:
        ProtocolError: if the payload is larger than :data:`MAX_PAYLOAD` or a
            field does not fit its width.
    """
    if len(frame.payload) > MAX_PAYLOAD:
        raise ProtocolError(
            f"payload of {len(frame.payload)} bytes exceeds the protocol maximum of {MAX_PAYLOAD}",
            hint="Split the data into chunks (the device client does this for LOAD/SET_INPUT/GET_OUTPUT).",
        )
    if not (0 <= frame.cmd < RESPONSE_BIT and 0 <= frame.status <= 0xFF and 0 <= frame.seq <= 0xFFFF):
        raise ProtocolError(
            f"frame field out of range (cmd={frame.cmd}, status={frame.status}, seq={frame.seq})",
            hint="cmd must be < 0x80, status < 256, seq < 65536.",
        )
    cmd = frame.cmd | (RESPONSE_BIT if frame.response else 0)
    body = _HEADER.pack(cmd, frame.status, frame.seq) + bytes(frame.payload)
    body += _CRC.pack(zlib.crc32(body))
    return cobs.encode(body) + b"\x00"


def decode_frame(data: bytes) -> Frame:
    """Decodes one frame (COBS bytes, with or without the trailing delimiter).

    Raises:
        ChecksumError: if COBS decoding or the CRC-32 fails (a corrupt frame).
        ProtocolError: if the frame is too short or too long to be a frame.
    """
    if data.endswith(b"\x00"):
        data = data[:-1]
    if b"\x00" in data:
        raise ChecksumError("frame contains a delimiter byte inside it", hint="The link corrupted it; resend.")
    try:
        body = cobs.decode(data)
    except cobs.DecodeError as exc:
        raise ChecksumError(f"corrupt frame (COBS: {exc})", hint="The link corrupted it; resend.") from None
    if len(body) < _HEADER.size + _CRC.size:
        raise ProtocolError(
            f"frame of {len(body)} bytes is shorter than the {_HEADER.size + _CRC.size}-byte minimum",
            hint="The link dropped bytes; resend.",
        )
    if len(body) > _HEADER.size + MAX_PAYLOAD + _CRC.size:
        raise ProtocolError(
            f"frame of {len(body)} bytes exceeds the protocol maximum", hint="The link merged frames; resend."
        )
    (crc,) = _CRC.unpack_from(body, len(body) - _CRC.size)
    if zlib.crc32(body[: -_CRC.size]) != crc:
        raise ChecksumError("frame CRC-32 mismatch", hint="The link corrupted it; resend.")
    cmd, status, seq = _HEADER.unpack_from(body)
    return Frame(
        cmd=cmd & ~RESPONSE_BIT,
        seq=seq,
        payload=bytes(body[_HEADER.size : -_CRC.size]),
        status=status,
        response=bool(cmd & RESPONSE_BIT),
    )


class FrameReader:
    """Splits a byte stream at delimiters; feed it whatever the link delivered.

    Bytes beyond :data:`MAX_FRAME` without a delimiter are dropped (garbage on
    the line) so a noisy link cannot grow the buffer without bound.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list[bytes]:
        """Adds ``data``; returns the complete raw frames (delimiter stripped).

        Empty frames (two delimiters in a row) are skipped.
        """
        out: list[bytes] = []
        for part in _split_keep(data):
            if part == b"\x00":
                if self._buf and not self._overflow:
                    out.append(bytes(self._buf))
                self._buf.clear()
                self._overflow = False
            elif not self._overflow:
                self._buf += part
                if len(self._buf) > MAX_FRAME:
                    logger.debug("dropping %d bytes without a frame delimiter", len(self._buf))
                    self._buf.clear()
                    self._overflow = True
        return out

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete frame."""
        return len(self._buf)


def _split_keep(data: bytes) -> list[bytes]:
    parts: list[bytes] = []
    start = 0
    while True:
        i = data.find(b"\x00", start)
        if i < 0:
            if start < len(data):
                parts.append(data[start:])
            return parts
        if i > start:
            parts.append(data[start:i])
        parts.append(b"\x00")
        start = i + 1


# --------------------------------------------------------------------------- #
# Command payloads
# --------------------------------------------------------------------------- #

_HELLO = struct.Struct("<HHI")  # protocol version, max payload, boot id
_INFO = struct.Struct("<IIIIIIIIIIB3x32s")
_U32 = struct.Struct("<I")
_LOAD_BEGIN = struct.Struct("<I32s")
_VERIFY = struct.Struct("<32sBBxxI")
_RUN_HDR = struct.Struct("<iHxx")
_RUN_ITEM = struct.Struct("<QQ")
_SET_INPUT = struct.Struct("<BxxxI")
_GET_OUTPUT = struct.Struct("<BxxxIH")


@dataclass(frozen=True)
class HelloInfo:
    """HELLO response: protocol version, device's max payload, boot id (changes on reset)."""

    version: int
    max_payload: int
    boot_id: int


@dataclass(frozen=True)
class DeviceInfo:
    """INFO response.

    Attributes:
        firmware_version: ``major << 16 | minor``.
        clock_hz: CPU clock the device reports cycles at.
        arena_bytes: The linked model's arena size.
        weight_bytes: Weights image size the linked model expects.
        num_inputs / num_outputs: Tensor counts of the linked model.
        slot_capacity: Bytes one weights slot holds.
        active_slot: Index of the active slot, or 255 for none.
        active_generation: Commit counter of the active slot.
        active_size: Size of the active weights image.
        active_sha256: SHA-256 the device recorded when it committed it.
        board: Board name compiled into the firmware.
        input_bytes / output_bytes: Size of each tensor.
    """

    firmware_version: int
    clock_hz: int
    arena_bytes: int
    weight_bytes: int
    num_inputs: int
    num_outputs: int
    slot_capacity: int
    active_generation: int
    active_size: int
    flags: int
    active_slot: int
    active_sha256: bytes
    board: str
    input_bytes: tuple[int, ...]
    output_bytes: tuple[int, ...]

    @property
    def has_model(self) -> bool:
        """True when a verified weights image is active."""
        return self.active_slot != 0xFF


@dataclass(frozen=True)
class VerifyResult:
    """VERIFY response: the device's SHA-256 and whether it committed the slot."""

    sha256: bytes
    committed: bool
    active_slot: int
    generation: int


@dataclass(frozen=True)
class RunResult:
    """RUN response: model status and per-run counters (``instret`` 0 = not counted)."""

    status: int
    cycles: tuple[int, ...]
    instret: tuple[int, ...]


def _short(what: str, payload: bytes, need: int) -> ProtocolError:
    return ProtocolError(
        f"{what} response has {len(payload)} bytes, expected {need}",
        hint="Host and firmware speak different protocol versions; reflash the firmware from this edgekit.",
    )


def pack_load_begin(size: int, sha256: bytes) -> bytes:
    """LOAD_BEGIN payload: total image size and its expected SHA-256."""
    return _LOAD_BEGIN.pack(size, sha256)


def pack_load(offset: int, data: bytes) -> bytes:
    """LOAD payload: byte offset into the image, then up to :data:`LOAD_CHUNK` bytes."""
    return _U32.pack(offset) + data


def pack_set_input(index: int, offset: int, data: bytes) -> bytes:
    """SET_INPUT payload: input index, byte offset into that input, data."""
    return _SET_INPUT.pack(index, offset) + data


def pack_get_output(index: int, offset: int, length: int) -> bytes:
    """GET_OUTPUT payload: output index, byte offset, bytes wanted."""
    return _GET_OUTPUT.pack(index, offset, length)


def pack_run(runs: int) -> bytes:
    """RUN payload: number of back-to-back runs (1..:data:`MAX_RUNS_PER_REQUEST`)."""
    if not 1 <= runs <= MAX_RUNS_PER_REQUEST:
        raise ProtocolError(
            f"RUN asks for {runs} runs; one request carries 1..{MAX_RUNS_PER_REQUEST}",
            hint="Send several RUN requests.",
        )
    return struct.pack("<H", runs)


def unpack_hello(payload: bytes) -> HelloInfo:
    """Parses a HELLO response."""
    if len(payload) < _HELLO.size:
        raise _short("HELLO", payload, _HELLO.size)
    return HelloInfo(*_HELLO.unpack_from(payload))


def unpack_info(payload: bytes) -> DeviceInfo:
    """Parses an INFO response: fixed part, board name, then per-tensor sizes."""
    if len(payload) < _INFO.size + 1:
        raise _short("INFO", payload, _INFO.size + 1)
    fields = _INFO.unpack_from(payload)
    (fw, clock, arena, wbytes, nin, nout, cap, gen, asize, flags, aslot, sha) = fields
    pos = _INFO.size
    name_len = payload[pos]
    pos += 1
    need = pos + name_len + 4 * (nin + nout)
    if len(payload) != need:
        raise _short("INFO", payload, need)
    board = payload[pos : pos + name_len].decode("utf-8", "replace")
    pos += name_len
    sizes = struct.unpack_from(f"<{nin + nout}I", payload, pos)
    return DeviceInfo(
        firmware_version=fw,
        clock_hz=clock,
        arena_bytes=arena,
        weight_bytes=wbytes,
        num_inputs=nin,
        num_outputs=nout,
        slot_capacity=cap,
        active_generation=gen,
        active_size=asize,
        flags=flags,
        active_slot=aslot,
        active_sha256=sha,
        board=board,
        input_bytes=tuple(sizes[:nin]),
        output_bytes=tuple(sizes[nin:]),
    )


def unpack_u32(what: str, payload: bytes) -> int:
    """Parses a response that is one u32 (LOAD_BEGIN, LOAD: bytes received so far)."""
    if len(payload) != _U32.size:
        raise _short(what, payload, _U32.size)
    return _U32.unpack(payload)[0]


def unpack_verify(payload: bytes) -> VerifyResult:
    """Parses a VERIFY response."""
    if len(payload) != _VERIFY.size:
        raise _short("VERIFY", payload, _VERIFY.size)
    sha, committed, slot, gen = _VERIFY.unpack(payload)
    return VerifyResult(sha256=sha, committed=bool(committed), active_slot=slot, generation=gen)


def unpack_run(payload: bytes) -> RunResult:
    """Parses a RUN response: status, count, then (cycles, instret) per run."""
    if len(payload) < _RUN_HDR.size:
        raise _short("RUN", payload, _RUN_HDR.size)
    status, n = _RUN_HDR.unpack_from(payload)
    need = _RUN_HDR.size + n * _RUN_ITEM.size
    if len(payload) != need:
        raise _short("RUN", payload, need)
    items = [_RUN_ITEM.unpack_from(payload, _RUN_HDR.size + i * _RUN_ITEM.size) for i in range(n)]
    return RunResult(status=status, cycles=tuple(c for c, _ in items), instret=tuple(i for _, i in items))

"""Frame codec and payload packing of the device protocol (pure, no I/O)."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.core.errors import ChecksumError, ProtocolError
from edgekit.runtime import protocol as P

frames = st.builds(
    P.Frame,
    cmd=st.integers(0, 0x7F),
    seq=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=P.MAX_PAYLOAD),
    status=st.integers(0, 0xFF),
    response=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(frames)
def test_roundtrip(frame: P.Frame) -> None:
    wire = P.encode_frame(frame)
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    assert len(wire) <= P.MAX_FRAME
    assert P.decode_frame(wire) == frame


@settings(max_examples=300, deadline=None)
@given(frames, st.data())
def test_any_single_corruption_is_detected(frame: P.Frame, data: st.DataObject) -> None:
    wire = bytearray(P.encode_frame(frame)[:-1])
    i = data.draw(st.integers(0, len(wire) - 1))
    wire[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ProtocolError):  # ChecksumError is a ProtocolError
        P.decode_frame(bytes(wire))


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, min_size=1, max_size=5), st.binary(max_size=40), st.integers(1, 64))
def test_reader_splits_a_stream_in_any_chunking(fs: list[P.Frame], garbage: bytes, step: int) -> None:
    stream = garbage.replace(b"\x00", b"") + b"\x00" + b"".join(P.encode_frame(f) for f in fs)
    reader = P.FrameReader()
    raw: list[bytes] = []
    for i in range(0, len(stream), step):
        raw += reader.feed(stream[i : i + step])
    decoded = []
    for r in raw:
        try:
            decoded.append(P.decode_frame(r))
        except ProtocolError:
            pass
    assert decoded == fs
    assert reader.pending == 0


def test_reader_drops_overlong_garbage() -> None:
    reader = P.FrameReader()
    assert reader.feed(b"\x01" * (P.MAX_FRAME + 10)) == []
    good = P.encode_frame(P.Frame(cmd=1, seq=7))
    # the overflowed garbage is discarded up to the next delimiter, then framing resumes
    assert [P.decode_frame(r) for r in reader.feed(b"\x00" + good)] == [P.Frame(cmd=1, seq=7)]


def test_layout_matches_documentation() -> None:
    body = struct.pack("<BBH", 0x21 | 0x80, 0, 0x1234) + b"ab"
    body += struct.pack("<I", zlib.crc32(body))
    frame = P.decode_frame(P.encode_frame(P.Frame(cmd=0x21, seq=0x1234, payload=b"ab", response=True)))
    assert frame.cmd == P.Command.RUN and frame.response
    from cobs import cobs

    assert cobs.decode(P.encode_frame(frame)[:-1]) == body


def test_oversize_payload_is_refused_with_hint() -> None:
    with pytest.raises(ProtocolError, match="exceeds the protocol maximum") as err:
        P.encode_frame(P.Frame(cmd=1, seq=0, payload=bytes(P.MAX_PAYLOAD + 1)))
    assert "chunks" in err.value.hint


@pytest.mark.parametrize("raw", [b"", b"\x01", b"\x05ab", b"\x02\x01\x01\x01"])
def test_short_or_malformed_frames_raise_typed_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        P.decode_frame(raw)


def test_crc_mismatch_is_a_checksum_error() -> None:
    from cobs import cobs

    body = struct.pack("<BBH", 1, 0, 1) + b"\x00\x00\x00\x00"
    with pytest.raises(ChecksumError, match="CRC-32"):
        P.decode_frame(cobs.encode(body))


def test_info_roundtrip() -> None:
    fixed = struct.pack("<IIIIIIIIIIB3x32s", 0x10000, 100_000_000, 320, 4160, 1, 2, 4096, 3, 4160, 0, 1, b"s" * 32)
    payload = fixed + bytes([5]) + b"board" + struct.pack("<III", 256, 64, 8)
    info = P.unpack_info(payload)
    assert (info.board, info.input_bytes, info.output_bytes) == ("board", (256,), (64, 8))
    assert info.has_model and info.active_generation == 3
    with pytest.raises(ProtocolError, match="INFO response"):
        P.unpack_info(payload[:-1])


def test_run_unpack_and_limits() -> None:
    payload = struct.pack("<iHxx", 0, 2) + struct.pack("<QQQQ", 10, 5, 11, 6)
    assert P.unpack_run(payload) == P.RunResult(0, (10, 11), (5, 6))
    with pytest.raises(ProtocolError):
        P.unpack_run(payload[:-1])
    with pytest.raises(ProtocolError, match="one request carries"):
        P.pack_run(P.MAX_RUNS_PER_REQUEST + 1)
    assert 8 + 16 * P.MAX_RUNS_PER_REQUEST <= P.MAX_PAYLOAD

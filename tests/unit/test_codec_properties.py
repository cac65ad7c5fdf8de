"""Property-based tests (hypothesis) for the frame codec and the manifest
parser, plus short runs of the fuzz targets in fuzz/ (issue 10)."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgekit.package import MANIFEST_NAME, open_package, sha256_bytes
from edgekit.core.errors import ChecksumError, PackageError, ProtocolError
from edgekit.runtime import protocol as P

REPO = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

frames = st.builds(
    P.Frame,
    cmd=st.integers(0, 0x7F),
    seq=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=P.MAX_PAYLOAD),
    status=st.integers(0, 0xFF),
    response=st.booleans(),
)


@FAST
@given(frames)
def test_encode_decode_round_trip(frame: P.Frame) -> None:
    wire = P.encode_frame(frame)
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    assert len(wire) <= P.MAX_FRAME
    assert P.decode_frame(wire) == frame


@FAST
@given(frames, st.data())
def test_any_single_bit_flip_is_detected(frame: P.Frame, data: st.DataObject) -> None:
    wire = bytearray(P.encode_frame(frame))
    pos = data.draw(st.integers(0, len(wire) - 2))  # not the trailing delimiter
    wire[pos] ^= 1 << data.draw(st.integers(0, 7))
    # CRC-32 catches every single-bit error; a flip to 0x00 splits the frame.
    with pytest.raises(ProtocolError):
        P.decode_frame(bytes(wire))


@FAST
@given(st.binary(max_size=3000))
def test_decoding_garbage_raises_only_protocol_errors(data: bytes) -> None:
    try:
        frame = P.decode_frame(data)
    except ProtocolError:
        return
    assert P.encode_frame(frame) == (data if data.endswith(b"\x00") else data + b"\x00")


@FAST
@given(st.lists(frames, min_size=1, max_size=6), st.lists(st.integers(1, 400), max_size=20))
def test_reader_reassembles_frames_split_anywhere(items: list[P.Frame], cuts: list[int]) -> None:
    stream = b"".join(P.encode_frame(f) for f in items)
    reader, got, pos = P.FrameReader(), [], 0
    for cut in [*cuts, len(stream)]:
        got += reader.feed(stream[pos : pos + cut])
        pos += cut
    got += reader.feed(stream[pos:])
    assert [P.decode_frame(g) for g in got] == items and reader.pending == 0


@FAST
@given(st.binary(min_size=P.MAX_FRAME + 1, max_size=3 * P.MAX_FRAME).map(lambda b: b.replace(b"\x00", b"\x01")), frames)
def test_reader_recovers_after_overlong_garbage(garbage: bytes, frame: P.Frame) -> None:
    reader = P.FrameReader()
    out = reader.feed(garbage) + reader.feed(b"\x00" + P.encode_frame(frame))
    assert [P.decode_frame(o) for o in out] == [frame]


def test_decode_distinguishes_crc_from_framing() -> None:
    wire = bytearray(P.encode_frame(P.Frame(cmd=1, seq=2, payload=b"abc")))
    wire[-3] ^= 0x01 if wire[-3] != 1 else 0x02
    with pytest.raises(ChecksumError):
        P.decode_frame(bytes(wire))


# -- manifest parser --------------------------------------------------------- #

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
member_names = st.sampled_from(["a.bin", "lib/x.so", "../x", "/abs", "", "a\\b", "dir/", "manifest.json", "ok.txt"])


def _archive(tmp: Path, manifest: bytes, members: dict[str, bytes]) -> Path:
    path = tmp / "p.ekpkg"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(MANIFEST_NAME, manifest)
        for name, data in members.items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())
    return path


@settings(FAST, max_examples=100)
@given(
    st.dictionaries(st.sampled_from(["format_version", "board", "runtime", "files", "x"]), json_values, max_size=5),
    st.dictionaries(member_names, json_values, max_size=3),
)
def test_manifest_parser_accepts_or_raises_package_error(tmp_path: Path, top: dict, files: dict) -> None:
    manifest = {**top, "files": files} if "files" not in top or not isinstance(top.get("files"), dict) else top
    path = _archive(tmp_path, json.dumps(manifest).encode(), {"a.bin": b"abc"})
    try:
        pkg = open_package(path)
    except PackageError:
        return
    # Accepted: then it really is consistent.
    assert set(pkg.names()) == {"a.bin"} and pkg.read("a.bin") == b"abc"


@FAST
@given(st.binary(max_size=64), st.sampled_from(["a.bin", "lib/m.so", "w/x/y.bin"]), st.booleans())
def test_valid_manifests_round_trip_and_any_change_is_caught(data: bytes, name: str, tamper: bool) -> None:
    import tempfile

    manifest = {"format_version": 1, "board": "b", "runtime": "r", "files": {name: {"sha256": sha256_bytes(data), "size": len(data)}}}
    stored = data
    if tamper:
        assume(data)
        stored = bytes([data[0] ^ 1]) + data[1:]
    with tempfile.TemporaryDirectory() as tmp:
        path = _archive(Path(tmp), json.dumps(manifest).encode(), {name: stored})
        if tamper:
            with pytest.raises(PackageError, match=name):
                open_package(path)
        else:
            assert open_package(path).read(name) == data


# -- fuzz targets ------------------------------------------------------------ #


def _target(name: str):
    sys.path.insert(0, str(REPO / "fuzz"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "fuzz" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.test_one_input
    finally:
        sys.path.remove(str(REPO / "fuzz"))


@pytest.mark.parametrize("name, examples", [("fuzz_frame", 300), ("fuzz_manifest", 100)])
def test_fuzz_targets_under_hypothesis(name: str, examples: int) -> None:
    target = _target(name)

    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.binary(max_size=2048))
    def check(data: bytes) -> None:
        target(data)

    check()


@pytest.mark.parametrize("name, runs", [("fuzz_frame", 5000), ("fuzz_manifest", 200)])
def test_fuzz_targets_short_atheris_run(name: str, runs: int) -> None:
    pytest.importorskip("atheris")
    proc = subprocess.run(
        [sys.executable, str(REPO / "fuzz" / f"{name}.py"), f"-runs={runs}", "-seed=1"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Done {runs} runs" in proc.stderr

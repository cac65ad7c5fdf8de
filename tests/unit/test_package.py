"""The .ekpkg container: atomic writes, hash checks, unsafe names, board checks."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

import edgekit.package.archive as pkg
from edgekit.package import MANIFEST_NAME, open_package, write_package
from edgekit.core.errors import PackageError, PackageIntegrityError

MEMBERS = {"lib/model.so": b"\x7fELF" + bytes(range(256)) * 4, "params.bin": b"weights" * 100, "model.onnx": b"onnx"}


def _manifest(board: str = "host") -> dict:
    return {
        "board": board,
        "target": "x86_64-host",
        "runtime": "tvm-vm",
        "inputs": [{"name": "x", "shape": [1, 3], "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": [1, 2], "dtype": "float32"}],
    }


@pytest.fixture
def built(tmp_path: Path) -> Path:
    path = tmp_path / "m.ekpkg"
    write_package(path, _manifest(), MEMBERS)
    return path


def _rewrite(src: Path, dst: Path, *, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None,
             drop: tuple[str, ...] = ()) -> None:
    """Copies an archive member by member (keeping the manifest), changing some members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = (replace or {}).get(info.filename, zin.read(info.filename))
            zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)


def test_round_trip(built: Path, tmp_path: Path) -> None:
    p = open_package(built, board="host")
    assert p.board == "host" and p.runtime == "tvm-vm"
    assert sorted(p.names()) == sorted(MEMBERS)
    for name, data in MEMBERS.items():
        assert p.read(name) == data
        assert p.manifest.files[name].size == len(data)
        assert p.manifest.files[name].sha256 == pkg.sha256_bytes(data)
    assert p.manifest.format_version == pkg.FORMAT_VERSION
    assert p.manifest.created.endswith("+00:00")
    assert [s.name for s in p.inputs] == ["x"] and p.outputs[0].shape == (1, 2)
    root = p.extract_to(tmp_path / "out")
    assert (root / "lib" / "model.so").read_bytes() == MEMBERS["lib/model.so"]
    assert json.loads((root / MANIFEST_NAME).read_text())["board"] == "host"
    files = sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())
    assert files == sorted([*MEMBERS, MANIFEST_NAME])


def test_extract_refuses_non_empty_folder(built: Path, tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "x").write_text("keep")
    with pytest.raises(PackageError, match="not an empty folder"):
        open_package(built).extract_to(target)


def test_tampered_member_is_refused(built: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ekpkg"
    _rewrite(built, bad, replace={"params.bin": b"Weights" + MEMBERS["params.bin"][7:]})
    with pytest.raises(PackageIntegrityError, match="params.bin") as info:
        open_package(bad)
    assert info.value.fields["member"] == "params.bin"
    assert "rebuild" in info.value.hint.lower()


def test_bytes_flipped_in_place_are_refused(built: Path, tmp_path: Path) -> None:
    # Flip one byte inside the stored data of a member: zip's own CRC or our
    # SHA-256 must catch it, and the error must name the member.
    raw = bytearray(built.read_bytes())
    with zipfile.ZipFile(built) as zf:
        info = zf.getinfo("lib/model.so")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF
    bad = tmp_path / "flipped.ekpkg"
    bad.write_bytes(bytes(raw))
    with pytest.raises(PackageIntegrityError, match="lib/model.so"):
        open_package(bad)


def test_same_size_change_is_caught_by_sha256(built: Path, tmp_path: Path) -> None:
    bad = tmp_path / "same-size.ekpkg"
    data = bytearray(MEMBERS["model.onnx"])
    data[0] ^= 1
    _rewrite(built, bad, replace={"model.onnx": bytes(data)})
    with pytest.raises(PackageIntegrityError, match="model.onnx.*SHA-256"):
        open_package(bad)


def test_missing_member_is_refused(built: Path, tmp_path: Path) -> None:
    bad = tmp_path / "missing.ekpkg"
    _rewrite(built, bad, drop=("params.bin",))
    with pytest.raises(PackageIntegrityError, match="missing member 'params.bin'"):
        open_package(bad)


def test_extra_member_is_refused(built: Path, tmp_path: Path) -> None:
    bad = tmp_path / "extra.ekpkg"
    _rewrite(built, bad, add={"evil.so": b"x"})
    with pytest.raises(PackageError, match="does not list: evil.so"):
        open_package(bad)


@pytest.mark.parametrize("name", ["../escape.txt", "lib/../../x", "/etc/passwd", "lib\\model.so", "C:/x", "lib/", "a//b"])
def test_unsafe_names_are_refused_in_archive(built: Path, tmp_path: Path, name: str) -> None:
    bad = tmp_path / "unsafe.ekpkg"
    _rewrite(built, bad, add={name: b"x"})
    with pytest.raises(PackageError, match="member name"):
        open_package(bad)


def test_unsafe_names_are_refused_in_manifest(built: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(built) as zf:
        manifest = json.loads(zf.read(MANIFEST_NAME))
    manifest["files"]["../up.txt"] = {"sha256": "0" * 64, "size": 1}
    bad = tmp_path / "manifest-up.ekpkg"
    _rewrite(built, bad, replace={MANIFEST_NAME: json.dumps(manifest).encode()})
    with pytest.raises(PackageError, match=r"manifest: member name '\.\./up\.txt'"):
        open_package(bad)


def test_write_refuses_unsafe_names(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="member name"):
        write_package(tmp_path / "x.ekpkg", _manifest(), {"../x": b""})
    with pytest.raises(PackageError, match="reserved"):
        write_package(tmp_path / "x.ekpkg", _manifest(), {MANIFEST_NAME: b"{}"})
    assert list(tmp_path.iterdir()) == []


def test_duplicate_member_is_refused(built: Path, tmp_path: Path) -> None:
    bad = tmp_path / "dup.ekpkg"
    with pytest.warns(UserWarning, match="Duplicate name"):
        _rewrite(built, bad, add={"params.bin": MEMBERS["params.bin"]})
    with pytest.raises(PackageError, match="twice"):
        open_package(bad)


def test_other_board_refused_unless_allowed(built: Path) -> None:
    with pytest.raises(PackageError, match="built for board 'host', not 'stm32h7'") as info:
        open_package(built, board="stm32h7")
    assert "--allow-other-board" in info.value.hint and "--board stm32h7" in info.value.hint
    assert open_package(built, board="stm32h7", allow_other_board=True).board == "host"


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "no manifest.json"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"board": "host", "runtime": "tvm-vm", "files": {}}).encode(), "lacks 'format_version'"),
        (json.dumps({"format_version": 99, "board": "host", "runtime": "tvm-vm", "files": {}}).encode(), "format version 99"),
    ],
)
def test_bad_manifest(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "m.ekpkg"
    with zipfile.ZipFile(path, "w") as zf:
        if content is not None:
            zf.writestr(MANIFEST_NAME, content)
    with pytest.raises(PackageError, match=match):
        open_package(path)


def test_not_a_zip_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ekpkg"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(PackageError, match="not a zip archive"):
        open_package(junk)
    with pytest.raises(PackageError, match="does not exist"):
        open_package(tmp_path / "nope.ekpkg")


def test_size_cap_refuses_zip_bombs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.ekpkg"
    write_package(path, _manifest(), {"zeros.bin": bytes(1 << 20)})  # compresses to ~1 KiB
    monkeypatch.setattr(pkg, "MAX_PACKAGE_BYTES", 1 << 19)
    with pytest.raises(PackageError, match="would unpack to 1048576 bytes"):
        open_package(path)


def test_size_mismatch_with_manifest_is_refused(built: Path, tmp_path: Path) -> None:
    bad = tmp_path / "longer.ekpkg"
    _rewrite(built, bad, replace={"model.onnx": MEMBERS["model.onnx"] + b"!"})
    with pytest.raises(PackageIntegrityError, match="model.onnx' is 5 bytes, the manifest says 4"):
        open_package(bad)


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "m.ekpkg"
    write_package(dest, _manifest(), MEMBERS)
    before = dest.read_bytes()
    real = zipfile.ZipFile.writestr
    calls = {"n": 0}

    def failing(self, name, data, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(self, name, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing)
    with pytest.raises(PackageError, match="No space left on device") as info:
        write_package(dest, _manifest("stm32h7"), MEMBERS)
    assert "disk space" in info.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ekpkg"]  # no temp file left
    assert dest.read_bytes() == before  # the old package is untouched


def test_write_into_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="does not exist"):
        write_package(tmp_path / "no" / "m.ekpkg", _manifest(), MEMBERS)

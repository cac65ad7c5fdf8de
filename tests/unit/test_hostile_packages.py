"""Hostile .ekpkg archives (issue 10): every one is refused with nothing written.

"Nothing written" is checked two ways: an audit hook records every file opened
for writing while the package is opened (and extracted), and the folder tree
around the package is compared before and after.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import zipfile
from pathlib import Path
from typing import Callable

import pytest

import edgekit.package.archive as pkg
from edgekit.package import MANIFEST_NAME, open_package, sha256_bytes, write_package
from edgekit.core.errors import PackageError, PackageIntegrityError

_writes: list[str] | None = None
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    # Audit hooks cannot be removed; this one records only while a list is set.
    if _writes is None or event != "open":
        return
    path, mode, flags = (list(args) + [None, None])[:3]
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and flags & _WRITE_FLAGS
    )
    if writing:
        _writes.append(str(path))


sys.addaudithook(_audit)

MEMBERS = {"weights.bin": b"w" * 3000, "lib/model.so": b"\x7fELF" + bytes(200)}


def _manifest(members: dict[str, bytes], **extra: object) -> dict:
    files = {n: {"sha256": sha256_bytes(d), "size": len(d)} for n, d in members.items()}
    return {"format_version": 1, "board": "host", "runtime": "tvm-vm", "files": files, **extra}


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]], manifest: dict | bytes | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        if manifest is not None:
            zf.writestr(MANIFEST_NAME, manifest if isinstance(manifest, bytes) else json.dumps(manifest))
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _overlapping(path: Path) -> Path:
    """Two central-directory entries sharing one deflated stream (Fifield's
    non-recursive zip bomb, reduced to two members)."""
    data = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST_NAME, json.dumps(_manifest({"a.bin": data, "b.bin": data})))
        zf.writestr("a.bin", data)
        a = zf.getinfo("a.bin")
        b = zipfile.ZipInfo("b.bin", a.date_time)
        for attr in ("compress_type", "CRC", "compress_size", "file_size", "header_offset", "external_attr"):
            setattr(b, attr, getattr(a, attr))
        zf.filelist.append(b)
        zf.NameToInfo["b.bin"] = b
    return path


def _lying_size(path: Path) -> Path:
    """A member whose header and manifest say 100 bytes but that inflates to 16 MiB."""
    real = bytes(16 << 20)
    claimed = real[:100]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST_NAME, json.dumps(_manifest({"w.bin": claimed})))
        zf.writestr("w.bin", real)
    raw = bytearray(buf.getvalue())
    # Patch the uncompressed-size fields (local header +22, central header +24).
    big = (16 << 20).to_bytes(4, "little")
    small = (100).to_bytes(4, "little")
    assert raw.count(big) == 2
    raw = raw.replace(big, small)
    path.write_bytes(bytes(raw))
    return path


def _deep_json() -> bytes:
    return b'{"format_version": 1, "board": "host", "runtime": "x", "files": {}, "deep": ' + b"[" * 100000 + b"]" * 100000 + b"}"


CASES: dict[str, tuple[Callable[[Path], Path], type[PackageError], str]] = {
    "dotdot member": (lambda p: _zip(p, [("../evil.txt", b"x")], _manifest({"../evil.txt": b"x"})), PackageError, "member name"),
    "nested dotdot": (lambda p: _zip(p, [("lib/../../evil", b"x")], _manifest({})), PackageError, "member name"),
    "absolute member": (lambda p: _zip(p, [("/tmp/evil", b"x")], _manifest({})), PackageError, "absolute"),
    "drive member": (lambda p: _zip(p, [("C:/evil", b"x")], _manifest({})), PackageError, "absolute"),
    "backslash member": (lambda p: _zip(p, [("..\\evil", b"x")], _manifest({})), PackageError, "backslash"),
    "symlink member": (
        lambda p: _zip(p, [(_symlink_info("weights.bin"), b"/etc/passwd")], _manifest({"weights.bin": b"/etc/passwd"})),
        PackageError,
        "symbolic link",
    ),
    "directory member": (lambda p: _zip(p, [("lib/", b"")], _manifest({})), PackageError, "directory"),
    "duplicate names": (
        lambda p: _zip(p, [("weights.bin", MEMBERS["weights.bin"]), ("weights.bin", b"evil")], _manifest(MEMBERS)),
        PackageError,
        "twice",
    ),
    "duplicate manifest": (
        lambda p: _zip(p, [(MANIFEST_NAME, json.dumps(_manifest({})).encode())], _manifest({})),
        PackageError,
        "twice",
    ),
    "unknown member": (
        lambda p: _zip(p, [*MEMBERS.items(), ("extra.so", b"x")], _manifest(MEMBERS)),
        PackageError,
        "does not list: extra.so",
    ),
    "hash mismatch": (
        lambda p: _zip(p, [("weights.bin", b"W" * 3000), ("lib/model.so", MEMBERS["lib/model.so"])], _manifest(MEMBERS)),
        PackageIntegrityError,
        "SHA-256",
    ),
    "size mismatch": (
        lambda p: _zip(p, [("weights.bin", b"w" * 2999), ("lib/model.so", MEMBERS["lib/model.so"])], _manifest(MEMBERS)),
        PackageIntegrityError,
        "manifest says 3000",
    ),
    "missing member": (lambda p: _zip(p, [("weights.bin", MEMBERS["weights.bin"])], _manifest(MEMBERS)), PackageIntegrityError, "missing"),
    "manifest lists dotdot": (lambda p: _zip(p, [], _manifest({"../x": b""})), PackageError, "manifest: member name"),
    "manifest bad hash text": (
        lambda p: _zip(p, [("a", b"x")], {**_manifest({}), "files": {"a": {"sha256": "zz", "size": 1}}}),
        PackageError,
        "64 hex digits",
    ),
    "manifest negative size": (
        lambda p: _zip(p, [("a", b"")], {**_manifest({}), "files": {"a": {"sha256": "0" * 64, "size": -1}}}),
        PackageError,
        "bytes >= 0",
    ),
    "manifest duplicate keys": (
        lambda p: _zip(p, [], b'{"format_version": 1, "board": "host", "runtime": "x", "files": {}, "board": "other"}'),
        PackageError,
        "appears twice",
    ),
    "manifest deeply nested": (lambda p: _zip(p, [], _deep_json()), PackageError, "nested too deeply|not valid JSON"),
    "no manifest": (lambda p: _zip(p, [*MEMBERS.items()]), PackageError, "no manifest.json"),
    "encrypted flag": (lambda p: _encrypted(p), PackageError, "encrypted"),
    "bzip2 member": (lambda p: _bzip2(p), PackageError, "compression method"),
    "overlapping entries bomb": (_overlapping, PackageError, "overlaps"),
    "lying size bomb": (_lying_size, PackageIntegrityError, "w.bin"),
    "not a zip": (lambda p: (p.write_bytes(b"PK\x03\x04" + bytes(100)), p)[1], PackageError, "not a zip"),
}


def _encrypted(path: Path) -> Path:
    """Sets the 'encrypted' flag of weights.bin in its local and central headers."""
    _zip(path, [*MEMBERS.items()], _manifest(MEMBERS))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("weights.bin")
    raw[info.header_offset + 6] |= 1
    pos = raw.find(b"PK\x01\x02")
    while pos >= 0:
        if raw[pos + 46 : pos + 46 + len(b"weights.bin")] == b"weights.bin":
            raw[pos + 8] |= 1
        pos = raw.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(raw))
    return path


def _bzip2(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MANIFEST_NAME, json.dumps(_manifest(MEMBERS)))
        for name, data in MEMBERS.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_BZIP2)
    return path


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_archive_is_refused_with_nothing_written(case: str, tmp_path: Path) -> None:
    global _writes
    make, error, match = CASES[case]
    home = tmp_path / "home"
    home.mkdir()
    path = make(home / "p.ekpkg")
    before = _tree(tmp_path)
    _writes = []
    try:
        with pytest.raises(error, match=match) as err:
            open_package(path).extract_to(tmp_path / "out")
        written = list(_writes)
    finally:
        _writes = None
    assert err.value.hint
    assert written == [], written
    assert _tree(tmp_path) == before
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil").exists()


def test_zip_bomb_over_the_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.ekpkg"
    write_package(path, {"board": "host", "runtime": "tvm-vm"}, {"zeros.bin": bytes(8 << 20)})
    assert path.stat().st_size < 64 << 10  # ~1000:1
    monkeypatch.setattr(pkg, "MAX_PACKAGE_BYTES", 4 << 20)
    with pytest.raises(PackageError, match="would unpack to 8388608 bytes"):
        open_package(path)


def test_too_many_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    members = {f"m{i}.bin": b"x" for i in range(20)}
    path = tmp_path / "many.ekpkg"
    write_package(path, {"board": "host", "runtime": "tvm-vm"}, members)
    monkeypatch.setattr(pkg, "MAX_MEMBERS", 10)
    with pytest.raises(PackageError, match="21 members, more than the limit of 10"):
        open_package(path)


def test_tampered_after_open_leaves_no_extraction(tmp_path: Path) -> None:
    path = tmp_path / "p.ekpkg"
    write_package(path, {"board": "host", "runtime": "tvm-vm"}, MEMBERS)
    opened = open_package(path)
    swapped = {**MEMBERS, "lib/model.so": b"\x7fELF" + b"\x01" * 200}
    _zip(path, list(swapped.items()), _manifest(MEMBERS))  # same names and sizes, other bytes
    before = _tree(tmp_path)
    with pytest.raises(PackageIntegrityError, match="lib/model.so"):
        opened.extract_to(tmp_path / "out")
    assert _tree(tmp_path) == before  # no stage folder, no partial output


def test_extract_refuses_a_symlinked_target(tmp_path: Path) -> None:
    path = tmp_path / "p.ekpkg"
    write_package(path, {"board": "host", "runtime": "tvm-vm"}, MEMBERS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / "link")
    with pytest.raises(PackageError, match="not an empty folder"):
        open_package(path).extract_to(tmp_path / "link")
    assert list(elsewhere.iterdir()) == []


def test_good_package_still_extracts(tmp_path: Path) -> None:
    path = tmp_path / "p.ekpkg"
    write_package(path, {"board": "host", "runtime": "tvm-vm"}, MEMBERS)
    root = open_package(path).extract_to(tmp_path / "out")
    assert (root / "weights.bin").read_bytes() == MEMBERS["weights.bin"]
    assert sorted(_tree(root)) == sorted(["lib", "lib/model.so", "manifest.json", "weights.bin"])

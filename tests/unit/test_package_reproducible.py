"""write_package gives the same archive, byte for byte, for the same members and manifest.

Entries are written in name order with one fixed time (SOURCE_DATE_EPOCH when
set, else 1980-01-01); SOURCE_DATE_EPOCH also fixes the manifest's 'created'.
Packages written before (entries dated when written, in the backend's order)
still open.
"""

from __future__ import annotations

import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edgekit.core.errors import ConfigError
from edgekit.package import MANIFEST_NAME, open_package, write_package

MEMBERS = {"weights.bin": bytes(range(256)) * 64, "model.onnx": b"onnx", "firmware/firmware.elf": b"\x7fELF" * 50}
MANIFEST = {
    "board": "host",
    "target": "x86_64-host",
    "runtime": "tvm-vm",
    "inputs": [{"name": "x", "shape": [1, 3], "dtype": "float32"}],
    "outputs": [{"name": "y", "shape": [1, 2], "dtype": "float32"}],
}
EPOCH = 1796515200  # 2026-12-06 00:00:00 UTC


def _write(path: Path, members: dict[str, bytes]) -> bytes:
    write_package(path, MANIFEST, members)
    return path.read_bytes()


def test_source_date_epoch_gives_identical_archives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    first = _write(tmp_path / "a.ekpkg", MEMBERS)
    second = _write(tmp_path / "b.ekpkg", dict(reversed(MEMBERS.items())))  # another insertion order
    assert first == second
    with zipfile.ZipFile(tmp_path / "a.ekpkg") as zf:
        assert zf.namelist() == [MANIFEST_NAME, *sorted(MEMBERS)]
        assert {info.date_time for info in zf.infolist()} == {(2026, 12, 6, 0, 0, 0)}
        manifest = json.loads(zf.read(MANIFEST_NAME))
    assert manifest["created"] == "2026-12-06T00:00:00+00:00"
    assert list(manifest["files"]) == sorted(MEMBERS)
    assert open_package(tmp_path / "a.ekpkg").read("weights.bin") == MEMBERS["weights.bin"]


def test_without_it_only_created_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    _write(tmp_path / "a.ekpkg", MEMBERS)
    with zipfile.ZipFile(tmp_path / "a.ekpkg") as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {info.external_attr >> 16 for info in zf.infolist()} == {0o100644}
        created = datetime.fromisoformat(json.loads(zf.read(MANIFEST_NAME))["created"])
    assert created >= before
    # The same manifest with 'created' pinned gives the same bytes.
    stamped = dict(MANIFEST, created="2026-12-06T12:00:00+00:00")
    write_package(tmp_path / "b.ekpkg", stamped, MEMBERS)
    write_package(tmp_path / "c.ekpkg", stamped, dict(reversed(MEMBERS.items())))
    assert (tmp_path / "b.ekpkg").read_bytes() == (tmp_path / "c.ekpkg").read_bytes()


def test_epoch_before_1980_dates_entries_1980(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    _write(tmp_path / "a.ekpkg", MEMBERS)
    with zipfile.ZipFile(tmp_path / "a.ekpkg") as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert json.loads(zf.read(MANIFEST_NAME))["created"] == "1970-01-01T00:00:00+00:00"


@pytest.mark.parametrize("value", ["yesterday", "-5", "1.5", "99999999999999999999"])
def test_bad_source_date_epoch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH") as info:
        _write(tmp_path / "a.ekpkg", MEMBERS)
    assert "git log" in info.value.hint
    assert not list(tmp_path.iterdir())


def test_package_written_the_old_way_still_opens(tmp_path: Path) -> None:
    """Entries dated when written, permissions 0600, the backend's member order."""
    new = tmp_path / "new.ekpkg"
    write_package(new, MANIFEST, MEMBERS)
    old = tmp_path / "old.ekpkg"
    with zipfile.ZipFile(new) as zin, zipfile.ZipFile(old, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        zout.writestr(MANIFEST_NAME, zin.read(MANIFEST_NAME))
        for name in MEMBERS:
            zout.writestr(name, zin.read(name))
    with zipfile.ZipFile(old) as zf:
        assert zf.namelist() == [MANIFEST_NAME, *MEMBERS] and zf.getinfo("model.onnx").date_time[0] >= 2026
    package = open_package(old)
    assert {name: package.read(name) for name in MEMBERS} == MEMBERS

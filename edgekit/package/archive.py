"""The ``.ekpkg`` package: one zip archive with ``manifest.json`` and the artifacts.

The manifest records the SHA-256 and size of every other member. Opening a
package checks all of them before anything is used, refuses names that could
escape an extraction folder, refuses members the manifest does not list, caps
sizes (a zip bomb must not fill the disk or the memory) and refuses a package
built for another board unless told otherwise. The format is documented in
``docs/package-format.md``.

Writing is reproducible: entries in name order, each stamped with one fixed
time (``SOURCE_DATE_EPOCH`` when set, else 1980-01-01, the earliest time a zip
entry can hold), so two packages with equal members and manifests are equal
byte for byte; ``SOURCE_DATE_EPOCH`` also fixes the manifest's ``created``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from edgekit.core.errors import ConfigError, PackageError, PackageIntegrityError
from edgekit.core.files import temp_beside
from edgekit.core.tensors import TensorSpec
from edgekit.package.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    check_member_name,
    sha256_bytes,
)

__all__ = [
    "PACKAGE_SUFFIX",
    "MAX_PACKAGE_BYTES",
    "MAX_MEMBERS",
    "Package",
    "write_package",
    "open_package",
]

logger = logging.getLogger(__name__)

PACKAGE_SUFFIX = ".ekpkg"
#: Uncompressed size of all members together. Large enough for a VGG-class
#: model's weights, small enough that a zip bomb is refused before inflating.
MAX_PACKAGE_BYTES = 8 * 2**30
#: More members than any backend writes; a cap keeps a hostile central
#: directory from making us stat millions of entries.
MAX_MEMBERS = 4096
#: Compression methods edgekit writes; anything else is not one of ours.
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
#: Fixed part of a zip local file header.
_LOCAL_HEADER = 30

#: The reproducible-builds convention's variable: seconds since 1970 (UTC)
#: that stand for "when this was built" (https://reproducible-builds.org/specs/source-date-epoch/).
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
#: The time range a zip entry's DOS date can hold.
_ZIP_EARLIEST = (1980, 1, 1, 0, 0, 0)
_ZIP_LATEST = (2107, 12, 31, 23, 59, 58)
#: Permissions recorded for every member (a regular file, rw-r--r--), and the
#: Unix "made by" system they are written under, on every build machine.
_MEMBER_MODE = stat.S_IFREG | 0o644
_UNIX = 3

_CHUNK = 1 << 20
_COMPRESS_SAMPLE = 1 << 20
#: Members whose sample deflates to more than this fraction are stored.
_MIN_GAIN = 0.85


@dataclass
class Package:
    """An opened, verified ``.ekpkg`` package.

    Every member was hashed when the package was opened; :meth:`read` and
    :meth:`extract_to` hash again what they read, so a file swapped on disk in
    between is still caught.

    Attributes:
        path: The package file.
        manifest: The validated ``manifest.json``.
    """

    path: Path
    manifest: Manifest
    _names: list[str] = field(default_factory=list, repr=False)

    @property
    def board(self) -> str:
        """Name of the board the package was built for."""
        return self.manifest.board

    @property
    def runtime(self) -> str:
        """Runtime that executes the package (``tvm-vm``, ``aot-c`` ...)."""
        return self.manifest.runtime

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs."""
        return list(self.manifest.inputs or ())

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs."""
        return list(self.manifest.outputs or ())

    def names(self) -> list[str]:
        """Member names listed in the manifest (``manifest.json`` excluded)."""
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def read(self, name: str) -> bytes:
        """Returns the bytes of member ``name`` after checking its SHA-256.

        Raises:
            PackageError: if the manifest does not list ``name``.
            PackageIntegrityError: if the member changed since it was built.
        """
        if name not in self._names:
            raise PackageError(
                f"package '{self.path}' has no member '{name}'",
                hint=f"It holds: {', '.join(self._names) or '(nothing)'}. Rebuild it with `edgekit compile`.",
                member=name,
            )
        with _open_zip(self.path) as zf:
            return b"".join(_verified_chunks(zf, self.path, name, self.manifest.files[name]))

    def extract_to(self, fresh_dir: str | os.PathLike[str]) -> Path:
        """Writes the manifest and every member under ``fresh_dir``.

        ``fresh_dir`` must not exist or be empty; nothing is written outside it.

        Returns:
            The resolved extraction folder.

        Raises:
            PackageError: if ``fresh_dir`` holds files already.
            PackageIntegrityError: if a member changed since it was built.
        """
        root = Path(fresh_dir)
        if root.is_symlink() or (root.exists() and (not root.is_dir() or any(root.iterdir()))):
            raise PackageError(
                f"cannot extract package into '{root}': it is not an empty folder",
                hint="Extract into a new folder.",
            )
        root.parent.mkdir(parents=True, exist_ok=True)
        # Stage everything in a private sibling folder and move it into place
        # only when every member verified: a failure leaves nothing behind.
        stage = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent)).resolve()
        try:
            (stage / MANIFEST_NAME).write_bytes(self.manifest.to_bytes())
            with _open_zip(self.path) as zf:
                for name in self._names:
                    dest = (stage / name).resolve()
                    # Names were validated on open; this guards against symlinked
                    # folders inside the stage as well.
                    if not dest.is_relative_to(stage):
                        raise PackageError(
                            f"member '{name}' would be written outside '{root}'", hint="Do not use this package."
                        )
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                    with os.fdopen(os.open(dest, flags, 0o644), "wb") as fh:
                        for chunk in _verified_chunks(zf, self.path, name, self.manifest.files[name]):
                            fh.write(chunk)
            if root.exists():
                root.rmdir()  # empty, checked above
            os.replace(stage, root)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        root = root.resolve()
        logger.debug("extracted %s to %s", self.path, root)
        return root


def write_package(
    path: str | os.PathLike[str],
    manifest: Mapping[str, Any],
    members: Mapping[str, bytes],
) -> dict[str, Any]:
    """Writes a package atomically.

    The archive is written to a temporary file in the destination folder and
    moved into place with :func:`os.replace`, so a reader never sees a
    half-written package and a failure leaves no file behind.

    Members are written in name order with one fixed time (see the module's
    docstring), so equal inputs give equal archives.

    Args:
        path: Destination ``.ekpkg`` file.
        manifest: Manifest fields; ``files`` is computed here (in name
            order), and ``format_version``, ``created`` (``SOURCE_DATE_EPOCH``
            when set, else now) and ``edgekit_version`` are filled in when
            absent.
        members: Member name -> content.

    Returns:
        The manifest as written (its JSON form, a fresh dict).

    Raises:
        PackageError: for an unsafe member name or when the file cannot be written.
        ManifestError: ``manifest`` does not validate as a :class:`Manifest`.
        ConfigError: ``SOURCE_DATE_EPOCH`` is set but not a whole number of seconds.
    """
    from edgekit import __version__

    dest = Path(path)
    epoch = _source_date_epoch()
    built = epoch if epoch is not None else datetime.now(timezone.utc)
    final = dict(manifest)
    final.setdefault("format_version", FORMAT_VERSION)
    final.setdefault("edgekit_version", __version__)
    final.setdefault("created", built.isoformat(timespec="seconds"))
    members = dict(sorted(members.items()))
    files: dict[str, dict[str, Any]] = {}
    for name, data in members.items():
        check_member_name(name, where=str(dest))
        if name == MANIFEST_NAME:
            raise PackageError(f"'{MANIFEST_NAME}' is reserved for the manifest", hint="Rename the member.")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"member {name!r} must be bytes, got {type(data).__name__}")
        files[name] = {"sha256": sha256_bytes(data), "size": len(data)}
    final["files"] = files
    manifest_bytes = Manifest.from_json(final, source=str(dest)).to_bytes()

    if not dest.parent.is_dir():
        raise PackageError(f"cannot write package '{dest}': folder '{dest.parent}' does not exist", hint="Create it first.")
    fd, tmp = temp_beside(dest)
    try:
        stamp = _entry_time(epoch)
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.writestr(_entry(MANIFEST_NAME, stamp), manifest_bytes, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
            for name, data in members.items():
                zf.writestr(_entry(name, stamp), bytes(data), compress_type=_compression_for(data), compresslevel=1)
        os.replace(tmp, dest)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise PackageError(
            f"cannot write package '{dest}': {exc.strerror or exc}",
            hint="Check free disk space and write permission for that folder.",
        ) from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise
    logger.debug("wrote %s (%d members)", dest, len(files))
    return json.loads(manifest_bytes)


def open_package(
    path: str | os.PathLike[str],
    *,
    board: str | None = None,
    allow_other_board: bool = False,
) -> Package:
    """Opens a package and verifies it completely.

    Args:
        path: The ``.ekpkg`` file.
        board: The board the caller is about to use; a package built for
            another board is refused unless ``allow_other_board``.
        allow_other_board: Accept a package built for a different board.

    Raises:
        PackageError: unreadable archive, missing or malformed manifest,
            unsafe or duplicate names, unlisted members, size limits, or a
            package for another board.
        PackageIntegrityError: a member is missing, or its size or SHA-256
            does not match the manifest (the message names the member).
    """
    p = Path(path)
    if not p.is_file():
        raise PackageError(f"package '{p}' does not exist", hint="Check the path, or build one with `edgekit compile`.")
    with _open_zip(p) as zf:
        infos = _checked_members(zf, p)
        manifest = _read_manifest(zf, p)
        _check_listed(manifest, infos, p)
        for name, entry in manifest.files.items():
            for _ in _verified_chunks(zf, p, name, entry):
                pass
    _check_board(manifest, p, board, allow_other_board)
    return Package(path=p, manifest=manifest, _names=list(manifest.files))


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path, "r")
    except zipfile.BadZipFile:
        raise PackageError(
            f"'{path}' is not an edgekit package (not a zip archive)",
            hint="Pass a .ekpkg file written by `edgekit compile`.",
        ) from None
    except OSError as exc:
        raise PackageError(f"cannot read package '{path}': {exc.strerror or exc}", hint="Check the path and permissions.") from None


def _checked_members(zf: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    """The archive's entries, refused when too many, named twice or unsafely,
    not regular files, or overlapping."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise PackageError(
            f"package '{path}' has {len(infos)} members, more than the limit of {MAX_MEMBERS}",
            hint="This is not a package edgekit wrote; do not use it.",
        )
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if name in seen:
            raise PackageError(f"package '{path}' holds member '{name}' twice", hint="Do not use this package; rebuild it.")
        seen.add(name)
        check_member_name(name, where=str(path))
        _check_member_kind(info, path)
    _check_no_overlap(infos, zf, path)
    return infos


def _read_manifest(zf: zipfile.ZipFile, path: Path) -> Manifest:
    try:
        info = zf.getinfo(MANIFEST_NAME)
    except KeyError:
        raise PackageError(
            f"package '{path}' has no {MANIFEST_NAME}",
            hint="Pass a .ekpkg file written by `edgekit compile`.",
        ) from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise PackageError(f"package '{path}': {MANIFEST_NAME} is implausibly large", hint="Do not use this package.")
    try:
        raw = zf.read(MANIFEST_NAME)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(
            f"package '{path}': {MANIFEST_NAME} is not valid JSON ({exc})",
            hint="The package is damaged; rebuild it with `edgekit compile`.",
        ) from None
    return Manifest.from_bytes(raw, source=str(path))


def _check_listed(manifest: Manifest, infos: list[zipfile.ZipInfo], path: Path) -> None:
    """Every archive member is listed, every listed member is there with the
    listed size, and the sizes add up to no more than the cap."""
    unlisted = sorted({i.filename for i in infos} - set(manifest.files) - {MANIFEST_NAME})
    if unlisted:
        raise PackageError(
            f"package '{path}' holds member(s) its manifest does not list: {', '.join(unlisted)}",
            hint="Someone added files after the build; do not use this package, rebuild it.",
            members=unlisted,
        )
    by_name = {i.filename: i for i in infos}
    total = 0
    for name, entry in manifest.files.items():
        info = by_name.get(name)
        if info is None:
            raise PackageIntegrityError(f"package '{path}' is missing member '{name}'", hint="Rebuild the package.", member=name)
        if info.file_size != entry.size:
            raise PackageIntegrityError(
                f"package '{path}': member '{name}' is {info.file_size} bytes, the manifest says {entry.size}",
                hint="The package was altered after it was built; rebuild it.",
                member=name,
            )
        total += info.file_size
    if total > MAX_PACKAGE_BYTES:
        raise PackageError(
            f"package '{path}' would unpack to {total} bytes, more than the limit of {MAX_PACKAGE_BYTES}",
            hint="This is not a package edgekit wrote; do not use it.",
        )


def _check_board(manifest: Manifest, path: Path, board: str | None, allow_other_board: bool) -> None:
    built_for = manifest.board
    if board is None or board == built_for:
        return
    if not allow_other_board:
        raise PackageError(
            f"package '{path}' was built for board '{built_for}', not '{board}'",
            hint=f"Recompile it with --board {board}, or pass --allow-other-board to use it anyway.",
            built_for=built_for,
            board=board,
        )
    logger.warning("using package built for '%s' on board '%s' (--allow-other-board)", built_for, board)


def _check_member_kind(info: zipfile.ZipInfo, path: Path) -> None:
    """Refuses symlinks and other non-regular members, encryption and
    compression methods edgekit never writes."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind and kind != stat.S_IFREG:
        what = "a symbolic link" if kind == stat.S_IFLNK else f"not a regular file (mode {mode:o})"
        raise PackageError(
            f"package '{path}': member '{info.filename}' is {what}",
            hint="Packages hold regular files only; do not use this package.",
            member=info.filename,
        )
    if info.flag_bits & 0x1:
        raise PackageError(
            f"package '{path}': member '{info.filename}' is encrypted", hint="Do not use this package.", member=info.filename
        )
    if info.compress_type not in _METHODS:
        raise PackageError(
            f"package '{path}': member '{info.filename}' uses compression method {info.compress_type}",
            hint="edgekit writes stored or deflated members only; do not use this package.",
            member=info.filename,
        )


def _check_no_overlap(infos: list[zipfile.ZipInfo], zf: zipfile.ZipFile, path: Path) -> None:
    """Refuses members whose data overlap (the trick of non-recursive zip bombs:
    many central-directory entries pointing into one compressed stream)."""
    spans = []
    for i in infos:
        # Bytes the name takes in the local header (UTF-8 flag, else cp437):
        # a lower bound of the entry's extent is enough to prove an overlap.
        raw_name = i.filename.encode("utf-8" if i.flag_bits & 0x800 else "cp437", "replace")
        spans.append((i.header_offset, i.header_offset + _LOCAL_HEADER + len(raw_name) + i.compress_size, i.filename))
    spans.sort()
    end_of_data = getattr(zf, "start_dir", None)
    for (start, end, name), nxt in zip(spans, [*spans[1:], None]):
        limit = nxt[0] if nxt is not None else end_of_data
        if limit is not None and end > limit:
            raise PackageError(
                f"package '{path}': member '{name}' overlaps {'member ' + repr(nxt[2]) if nxt else 'the central directory'}",
                hint="This archive is crafted (overlapping entries are a zip-bomb technique); do not use it.",
                member=name,
            )


def _verified_chunks(zf: zipfile.ZipFile, path: Path, name: str, entry: FileEntry) -> Iterator[bytes]:
    """Yields the member's bytes in chunks; raises after the last chunk if the
    hash or size differs (callers that write must discard what they wrote)."""
    digest = hashlib.sha256()
    size = 0
    limit = entry.size
    try:
        with zf.open(name) as fh:
            while chunk := fh.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    break
                digest.update(chunk)
                yield chunk
    except KeyError:
        raise PackageIntegrityError(f"package '{path}' is missing member '{name}'", hint="Rebuild the package.", member=name) from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        # zipfile's own CRC check fires first when bytes were flipped in place.
        raise PackageIntegrityError(
            f"package '{path}': member '{name}' is damaged ({exc})",
            hint="The package was altered or truncated after it was built; rebuild it.",
            member=name,
        ) from None
    if size != limit or digest.hexdigest() != entry.sha256:
        raise PackageIntegrityError(
            f"package '{path}': member '{name}' does not match its SHA-256 in the manifest",
            hint="The package was altered after it was built; rebuild it with `edgekit compile`.",
            member=name,
        )


def _source_date_epoch() -> datetime | None:
    """``SOURCE_DATE_EPOCH`` as a UTC time, None when unset or empty."""
    raw = os.environ.get(SOURCE_DATE_EPOCH, "").strip()
    if not raw:
        return None
    try:
        seconds = int(raw)
        if seconds >= 0:
            return datetime.fromtimestamp(seconds, timezone.utc)
    except (ValueError, OverflowError, OSError):
        pass
    raise ConfigError(
        f"{SOURCE_DATE_EPOCH}={raw!r} is not a number of seconds since 1970-01-01 UTC",
        hint=f"Set it to a whole number such as $(git log -1 --format=%ct), or unset {SOURCE_DATE_EPOCH}.",
    )


def _entry_time(epoch: datetime | None) -> tuple[int, int, int, int, int, int]:
    """The time every entry records: ``epoch`` held within what a zip entry
    can store, or the earliest such time when there is none."""
    if epoch is None:
        return _ZIP_EARLIEST
    when = tuple(epoch.timetuple()[:6])
    return min(max(when, _ZIP_EARLIEST), _ZIP_LATEST)  # type: ignore[return-value]


def _entry(name: str, stamp: tuple[int, int, int, int, int, int]) -> zipfile.ZipInfo:
    """A zip entry whose header holds nothing of the machine or the moment it is written on."""
    info = zipfile.ZipInfo(name, date_time=stamp)
    info.create_system = _UNIX
    info.external_attr = _MEMBER_MODE << 16
    return info


def _compression_for(data: bytes | bytearray | memoryview) -> int:
    """Deflate members that shrink, store those that do not.

    Trained float weights barely compress (a few percent) while deflating
    hundreds of megabytes costs seconds on every write and read, so a 1 MiB
    sample decides.
    """
    sample = bytes(data[:_COMPRESS_SAMPLE])
    if len(sample) < 4096:
        return zipfile.ZIP_DEFLATED
    ratio = len(zlib.compress(sample, 1)) / len(sample)
    return zipfile.ZIP_DEFLATED if ratio < _MIN_GAIN else zipfile.ZIP_STORED


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

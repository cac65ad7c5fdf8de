"""The package manifest (``manifest.json``), typed; read and written here only.

:meth:`Manifest.from_json` validates every key it knows and keeps the
backend-specific sections (``entry``, ``library``, ``params``, ``aot``,
``npu``, ``linux``, ``cuda``, ``int8_choice`` ...) as JSON in
:attr:`Manifest.extra`; :meth:`Manifest.to_json` writes the same layout back,
so packages written before this module existed load unchanged. The layout is
documented in ``docs/package-format.md``. Callers read the typed attributes;
a backend's own section through its typed class, ``XSection.of(manifest)``
(:mod:`edgekit.package.sections`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from edgekit.core.errors import ManifestError, PackageError
from edgekit.core.tensors import TensorSpec
from edgekit.package.sections import ParamsSection

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "FileEntry",
    "ModelInfo",
    "Manifest",
    "check_member_name",
    "sha256_bytes",
]

#: Version of the layout described in docs/package-format.md.
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: A manifest is small JSON; anything larger is not one of ours.
MAX_MANIFEST_BYTES = 16 * 2**20

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_REQUIRED_KEYS = {"format_version": int, "board": str, "runtime": str, "files": dict}
_OPTIONAL_STR_KEYS = ("edgekit_version", "tvm_version", "created", "target", "codegen")
#: Keys with a typed field; every other key is backend-specific (``extra``).
_TYPED_KEYS = frozenset(
    [*_REQUIRED_KEYS, *_OPTIONAL_STR_KEYS, "tvm_target", "model", "inputs", "outputs", "memory", "options"]
)
_DAMAGED = "The package is damaged or not from edgekit; rebuild it with `edgekit compile`."


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def check_member_name(name: str, *, where: str = "package") -> str:
    """Returns ``name`` if it is a safe relative POSIX path inside an archive.

    Raises:
        PackageError: for an empty, absolute, drive-qualified, backslashed,
            ``.``/``..``-containing or directory name.
    """
    problem = ""
    if not isinstance(name, str) or not name:
        problem = "is empty"
    elif "\\" in name:
        problem = "contains a backslash"
    elif name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        problem = "is an absolute path"
    elif name.endswith("/"):
        problem = "is a directory entry"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        problem = "contains an empty, '.' or '..' path component"
    elif "\x00" in name:
        problem = "contains a NUL character"
    if problem:
        raise PackageError(
            f"{where}: member name {name!r} {problem}",
            hint="Package members must be relative paths like 'lib/model.so'; do not use this package.",
            member=name,
        )
    return name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class FileEntry:
    """SHA-256 (hex) and size in bytes of one package member."""

    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class ModelInfo:
    """The compiled model: name, SHA-256 of ``model.onnx``, source file name,
    opset, and what the front end changed."""

    name: str = ""
    sha256: str = ""
    source: str = ""
    opset: int = 0
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "source": self.source, "opset": self.opset, "notes": list(self.notes)}


@dataclass(frozen=True)
class Manifest:
    """The typed ``manifest.json`` of a package.

    Optional keys an older package lacks are ``None`` here and stay absent in
    :meth:`to_json`.

    Attributes:
        board: Board profile the package was built for.
        runtime: What executes it; selects the runner (``tvm-vm``, ``aot-c`` ...).
        files: Member name -> SHA-256 and size, for every member but the manifest.
        format_version: Layout version (readers refuse newer ones).
        extra: Backend-specific sections, as JSON.
    """

    board: str
    runtime: str
    files: Mapping[str, FileEntry]
    format_version: int = FORMAT_VERSION
    edgekit_version: str | None = None
    tvm_version: str | None = None
    created: str | None = None
    target: str | None = None
    tvm_target: dict[str, Any] | str | None = None
    codegen: str | None = None
    model: ModelInfo | None = None
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None
    memory: Mapping[str, int] | None = None
    options: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, *, source: str = "<manifest>") -> Manifest:
        """Validates a decoded ``manifest.json``.

        Args:
            data: The decoded JSON.
            source: The package path, for messages.

        Raises:
            ManifestError: a key is missing or has the wrong type, or the
                format version is newer than this edgekit reads.
            PackageError: a listed member name is unsafe.
        """
        where = f"package '{source}'"
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: {MANIFEST_NAME} is not a JSON object", hint="Rebuild the package.")
        for key, kind in _REQUIRED_KEYS.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise ManifestError(f"{where}: {MANIFEST_NAME} lacks '{key}' ({kind.__name__})", hint=_DAMAGED, key=key)
        if data["format_version"] > FORMAT_VERSION:
            raise ManifestError(
                f"{where} uses format version {data['format_version']}; this edgekit reads up to {FORMAT_VERSION}",
                hint="Upgrade edgekit, or rebuild the package with this version.",
                key="format_version",
            )
        for key in _OPTIONAL_STR_KEYS:
            if key in data and not isinstance(data[key], str):
                _bad(where, key, "a string")
        if "tvm_target" in data and not isinstance(data["tvm_target"], (dict, str)):
            _bad(where, "tvm_target", "an object or a string")
        if "options" in data and not isinstance(data["options"], dict):
            _bad(where, "options", "an object")
        if "memory" in data and not _is_int_map(data["memory"]):
            _bad(where, "memory", "an object of integers")
        return cls(
            board=data["board"],
            runtime=data["runtime"],
            files=_files(data["files"], source),
            format_version=data["format_version"],
            **{key: data.get(key) for key in _OPTIONAL_STR_KEYS},
            tvm_target=data.get("tvm_target"),
            model=_model(data["model"], where) if "model" in data else None,
            inputs=_specs(data["inputs"], where, "inputs") if "inputs" in data else None,
            outputs=_specs(data["outputs"], where, "outputs") if "outputs" in data else None,
            memory=dict(data["memory"]) if "memory" in data else None,
            options=dict(data["options"]) if "options" in data else None,
            extra={k: v for k, v in data.items() if k not in _TYPED_KEYS},
        )

    @classmethod
    def from_bytes(cls, raw: bytes, *, source: str = "<manifest>") -> Manifest:
        """Decodes and validates the bytes of ``manifest.json``.

        Raises:
            ManifestError: not UTF-8 JSON, a key given twice, nested too
                deeply, or as for :meth:`from_json`.
        """
        where = f"package '{source}'"
        try:
            data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        except RecursionError:
            raise ManifestError(
                f"{where}: {MANIFEST_NAME} is nested too deeply to be a manifest", hint="Do not use this package."
            ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(
                f"{where}: {MANIFEST_NAME} is not valid JSON ({exc})",
                hint="The package is damaged; rebuild it with `edgekit compile`.",
            ) from None
        return cls.from_json(data, source=source)

    def to_json(self) -> dict[str, Any]:
        """The ``manifest.json`` object (a fresh dict; ``files`` last)."""
        out: dict[str, Any] = {"format_version": self.format_version}
        for key in ("edgekit_version", "tvm_version", "created"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["board"] = self.board
        for key in ("target", "tvm_target", "codegen"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["runtime"] = self.runtime
        if self.model is not None:
            out["model"] = self.model.to_json()
        for key in ("inputs", "outputs"):
            specs = getattr(self, key)
            if specs is not None:
                out[key] = [s.to_json() for s in specs]
        for key in ("memory", "options"):
            if getattr(self, key) is not None:
                out[key] = dict(getattr(self, key))
        out.update(self.extra)
        out["files"] = {name: entry.to_json() for name, entry in self.files.items()}
        return out

    def to_bytes(self) -> bytes:
        """``manifest.json`` as written into a package (UTF-8, indented)."""
        return json.dumps(self.to_json(), indent=2).encode("utf-8")

    @property
    def model_name(self) -> str:
        """The compiled model's name (``""`` when the manifest has no ``model``)."""
        return self.model.name if self.model is not None else ""

    def section(self, name: str) -> Mapping[str, Any]:
        """A backend's own object (``linux``, ``aot``, ``npu``, ``params``...) as JSON, empty when absent.

        The built-in backends' sections have typed classes, read with
        ``XSection.of(manifest)`` (:mod:`edgekit.package.sections`); this is
        the raw form, for a plugin backend's keys.

        Raises:
            ManifestError: the key holds something other than a JSON object.
        """
        value = self.extra.get(name, {})
        if not isinstance(value, dict):
            _bad(f"package manifest for board '{self.board}'", name, "an object")
        return value

    @property
    def library(self) -> str:
        """The shared library member of a TVM VM package (``library``)."""
        return str(self.extra.get("library", "lib/model.so"))

    @property
    def params_member(self) -> str:
        """The weights member of a TVM VM package (``params.member``)."""
        return (ParamsSection.of(self) or ParamsSection()).member

    @property
    def entry(self) -> str:
        """The VM function a TVM VM package runs (``entry``)."""
        return str(self.extra.get("entry", "main"))


def _bad(where: str, key: str, what: str) -> NoReturn:
    raise ManifestError(f"{where}: {MANIFEST_NAME} key '{key}' must be {what}", hint=_DAMAGED, key=key)


def _is_int_map(value: Any) -> bool:
    return isinstance(value, dict) and all(_is_int(v) for v in value.values())


def _files(listed: dict[str, Any], source: str) -> dict[str, FileEntry]:
    files = {}
    for name, entry in listed.items():
        check_member_name(name, where=f"{source}: manifest")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256_HEX.fullmatch(entry["sha256"])
            or not _is_int(entry.get("size"))
            or entry["size"] < 0
        ):
            raise ManifestError(
                f"package '{source}': manifest entry for '{name}' needs 'sha256' (64 hex digits) and 'size' (bytes >= 0)",
                hint="Do not use this package; rebuild it.",
                member=name,
                key="files",
            )
        if name == MANIFEST_NAME:
            raise ManifestError(f"package '{source}': the manifest lists itself", hint="Do not use this package; rebuild it.")
        files[name] = FileEntry(entry["sha256"], entry["size"])
    return files


def _model(data: Any, where: str) -> ModelInfo:
    if not isinstance(data, dict):
        _bad(where, "model", "an object")
    kinds = {"name": (str, "a string"), "sha256": (str, "a string"), "source": (str, "a string"),
             "opset": (int, "an integer"), "notes": (list, "a list")}  # fmt: skip
    for key, (kind, what) in kinds.items():
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            _bad(where, f"model.{key}", what)
    notes = data.get("notes", [])
    if not all(isinstance(n, str) for n in notes):
        _bad(where, "model.notes", "a list of strings")
    return ModelInfo(
        name=data.get("name", ""), sha256=data.get("sha256", ""), source=data.get("source", ""),
        opset=data.get("opset", 0), notes=tuple(notes),
    )  # fmt: skip


def _specs(data: Any, where: str, key: str) -> tuple[TensorSpec, ...]:
    if not isinstance(data, list):
        _bad(where, key, "a list of tensor specs")
    specs = []
    for i, spec in enumerate(data):
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("name"), str)
            or not isinstance(spec.get("dtype"), str)
            or not isinstance(spec.get("shape"), list)
            or not all(_is_int(d) and d >= -1 for d in spec["shape"])
        ):
            # -1: a dimension shape inference left unknown (seen on outputs).
            _bad(where, f"{key}[{i}]", "an object with 'name' (string), 'shape' (integers >= -1) and 'dtype' (string)")
        specs.append(TensorSpec.from_json(spec))
    return tuple(specs)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: a key given twice is ambiguous (which one is checked?)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out

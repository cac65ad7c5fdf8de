"""The typed manifest: old packages load, the JSON layout round-trips, bad keys get typed errors."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import pytest

from edgekit.core.errors import ManifestError, PackageError
from edgekit.core.tensors import TensorSpec
from edgekit.package import MANIFEST_NAME, FileEntry, Manifest, ModelInfo, open_package, sha256_bytes, write_package

MEMBERS = {"lib/model.so": b"\x7fELF" + bytes(64), "params.bin": b"w" * 300, "model.onnx": b"onnx"}

#: A manifest as `edgekit compile` wrote it before the typed Manifest existed
#: (key order and backend sections included; docs/package-format.md).
OLD_MANIFEST = {
    "format_version": 1,
    "tvm_version": "0.27.0.post1",
    "board": "host",
    "target": "x86_64-host",
    "tvm_target": {"kind": "llvm", "mcpu": "znver5", "keys": ["cpu"], "tag": ""},
    "codegen": "llvm",
    "runtime": "tvm-vm",
    "model": {"name": "digits", "sha256": "ab" * 32, "source": "digits.onnx", "opset": 13, "notes": ["opset upgraded from 9 to 13"]},
    "inputs": [{"name": "x", "shape": [1, 1, 8, 8], "dtype": "float32"}],
    "outputs": [{"name": "y", "shape": [-1, 10], "dtype": "float32"}],  # -1: left unknown
    "memory": {"arena_bytes": 4096, "weight_bytes": 300, "code_bytes": 68},
    "options": {"opt_level": 3, "tune_trials": 0, "allow_unsupported": False, "weight_storage": "auto"},
    "entry": "main",
    "library": "lib/model.so",
    "params": {"member": "params.bin", "format": "tvm-param-dict", "count": 2, "names": ["w", "b"]},
    "int8_choice": {"choice": "int8"},
    "edgekit_version": "0.1.0",
    "created": "2026-11-22T22:54:35+00:00",
    "files": {name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in MEMBERS.items()},
}


def _old_package(path: Path, manifest: dict) -> Path:
    """A package zipped by hand, as an older edgekit wrote it."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST_NAME, json.dumps(manifest, indent=2))
        for name, data in MEMBERS.items():
            zf.writestr(name, data)
    return path


def test_package_written_before_the_typed_manifest_loads(tmp_path: Path) -> None:
    package = open_package(_old_package(tmp_path / "old.ekpkg", OLD_MANIFEST), board="host")

    m = package.manifest
    assert m.board == "host" and m.runtime == "tvm-vm" and m.codegen == "llvm"
    assert m.model == ModelInfo("digits", "ab" * 32, "digits.onnx", 13, ("opset upgraded from 9 to 13",))
    assert m.inputs == (TensorSpec("x", (1, 1, 8, 8), "float32"),)
    assert package.outputs == [TensorSpec("y", (-1, 10), "float32")]
    assert m.memory == {"arena_bytes": 4096, "weight_bytes": 300, "code_bytes": 68}
    assert m.files["params.bin"] == FileEntry(sha256_bytes(MEMBERS["params.bin"]), 300)
    assert set(m.extra) == {"entry", "library", "params", "int8_choice"}
    # Typed access to the backends' sections (the manifest is not a mapping).
    assert m.params_member == "params.bin" and m.library == OLD_MANIFEST["library"] and m.entry == "main"
    assert m.section("linux") == {} and m.section("params")["count"] == OLD_MANIFEST["params"]["count"]
    assert m.model_name == "digits"
    assert m.to_json() == OLD_MANIFEST
    with pytest.raises(TypeError):
        m["params"]  # noqa: B018
    assert package.read("params.bin") == MEMBERS["params.bin"]


def test_minimal_old_manifest_keeps_its_keys(tmp_path: Path) -> None:
    minimal = {"format_version": 1, "board": "host", "runtime": "tvm-vm", "files": OLD_MANIFEST["files"]}
    package = open_package(_old_package(tmp_path / "min.ekpkg", minimal))

    assert package.manifest.to_json() == minimal  # absent keys stay absent
    assert package.inputs == [] and package.manifest.model is None
    root = package.extract_to(tmp_path / "out")
    assert json.loads((root / MANIFEST_NAME).read_text()) == minimal


def test_json_round_trip_is_identical() -> None:
    assert Manifest.from_json(copy.deepcopy(OLD_MANIFEST)).to_json() == OLD_MANIFEST
    assert json.loads(Manifest.from_json(OLD_MANIFEST).to_bytes()) == OLD_MANIFEST


def test_write_package_writes_the_same_layout(tmp_path: Path) -> None:
    given = {k: v for k, v in OLD_MANIFEST.items() if k != "files"}
    written = write_package(tmp_path / "new.ekpkg", given, MEMBERS)

    assert written == OLD_MANIFEST
    assert open_package(tmp_path / "new.ekpkg").manifest.to_json() == OLD_MANIFEST


@pytest.mark.parametrize(
    ("change", "key", "match"),
    [
        ({"inputs": [{"name": "x", "shape": [1, -2], "dtype": "float32"}]}, "inputs[0]", "'inputs\\[0\\]' must be"),
        ({"outputs": "y"}, "outputs", "'outputs' must be a list"),
        ({"memory": {"arena_bytes": "4 KiB"}}, "memory", "'memory' must be an object of integers"),
        ({"model": {"name": "m", "opset": "13"}}, "model.opset", "'model.opset' must be an integer"),
        ({"codegen": 7}, "codegen", "'codegen' must be a string"),
        ({"tvm_target": 3}, "tvm_target", "'tvm_target' must be an object or a string"),
        ({"runtime": None}, "runtime", "lacks 'runtime'"),
        ({"format_version": 2}, "format_version", "uses format version 2"),
    ],
)
def test_bad_keys_raise_manifest_error_naming_the_key(tmp_path: Path, change: dict, key: str, match: str) -> None:
    path = _old_package(tmp_path / "bad.ekpkg", {**OLD_MANIFEST, **change})

    with pytest.raises(ManifestError, match=match) as info:
        open_package(path)

    assert info.value.fields["key"] == key
    assert isinstance(info.value, PackageError)  # callers that catch PackageError still do
    assert info.value.hint


def test_write_package_refuses_a_manifest_that_would_not_load(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="'inputs' must be a list"):
        write_package(tmp_path / "x.ekpkg", {"board": "host", "runtime": "tvm-vm", "inputs": {"x": 1}}, MEMBERS)
    assert not (tmp_path / "x.ekpkg").exists()

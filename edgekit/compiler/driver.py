"""``compile_model``: ONNX file (or prepared model) + board name -> ``.ekpkg``.

The driver is backend-neutral: it loads and prepares the model, resolves the
board and its target, hands both to the backend chosen by ``target.codegen``
and writes the package with the manifest described in
``docs/package-format.md``. The prepared ONNX goes into the package as
``model.onnx`` so ``bench --compare-ort`` runs onnxruntime on exactly what was
compiled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import onnx

from edgekit.compiler.backend import (
    BuildResult, CompileOptions, ProgressFn, build_with_choice, get_backend, no_progress, refuse_weight_storage,
)  # fmt: skip
from edgekit.compiler.result import CompileResult
from edgekit.package import FORMAT_VERSION, Manifest, write_package
from edgekit.core.errors import CompileError, DoesNotFitError, InputError, PackageError
from edgekit.core.profiles import Board, Target, load_profiles
from edgekit.frontend.loader import PreparedModel, load_model

__all__ = ["compile_model", "CompileResult", "MODEL_MEMBER"]

logger = logging.getLogger(__name__)

#: The prepared ONNX model inside every package.
MODEL_MEMBER = "model.onnx"
#: Members of MCU packages the firmware check reads.
FIRMWARE_MEMBER = "firmware/firmware.elf"
WEIGHTS_MEMBER = "weights.bin"

# Keys the driver owns; a backend's extra_manifest may not replace them.
_CORE_KEYS = {
    "format_version", "edgekit_version", "tvm_version", "created", "board", "target", "tvm_target",
    "codegen", "runtime", "model", "inputs", "outputs", "memory", "options", "files", "int8_choice",
}


def _tvm_version() -> str:
    import tvm

    return str(tvm.__version__)


def _normalize_qoperator(prepared: PreparedModel, report: Any) -> PreparedModel:
    """Pre-quantized models in QOperator form (QLinearConv, ConvInteger, ...)
    have no TVM importer; rewritten to QDQ they take the integer-only path."""
    from edgekit.frontend.qoperator import is_qoperator_model, normalize_qoperator

    if not is_qoperator_model(prepared.model):
        return prepared
    report("normalize", "rewriting QOperator nodes to QDQ")
    result = normalize_qoperator(prepared.model)
    prepared.model = result.model
    prepared.notes.append(f"QOperator model normalized to QDQ ({sum(result.rewritten.values())} nodes rewritten)")
    return prepared


def _int8_activations(prepared: PreparedModel, report: Any) -> PreparedModel:
    """uint8 activations (onnxruntime's QUInt8) retyped to the int8
    the integer lowering reads; exact (:mod:`edgekit.frontend.uint8_activations`)."""
    from edgekit.frontend.uint8_activations import int8_activations

    result = int8_activations(prepared.model)
    if result.modified:
        report("normalize", "rewriting uint8 activations to int8")
        prepared.model = result.model
        prepared.notes.append(f"uint8 QDQ rewritten to int8 ({result.activations} activations, {result.weights} weights)")
    if result.kept:
        prepared.notes.append(
            f"{result.kept} uint8 activations kept uint8 (read by ops that compute with them, e.g. Pad, Resize): their chains stay float"
        )
    return prepared


def _check_firmware(members: Mapping[str, bytes], board: Any, report: ProgressFn) -> dict[str, int]:
    """Placement and slot-capacity check of a linked firmware image (see
    :mod:`edgekit.compiler.image_check`); returns its figures for the manifest."""
    elf = members.get(FIRMWARE_MEMBER)
    if elf is None:
        return {}
    from edgekit.compiler.image_check import check_image

    report("check-image", "checking the firmware's memory map and weights slot")
    return check_image(elf, board, len(members.get(WEIGHTS_MEMBER, b"")))


def compile_model(
    model: str | os.PathLike[str] | onnx.ModelProto | PreparedModel,
    board: str,
    output: str | os.PathLike[str],
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    options: CompileOptions | None = None,
    board_dirs: Iterable[str | os.PathLike[str]] = (),
    progress: ProgressFn | None = None,
    int8_cost: Any = None,
) -> CompileResult:
    """Compiles a model for a board and writes the package.

    Args:
        model: Path of an ONNX file, a loaded ``ModelProto``, or a model already prepared by
            :func:`edgekit.frontend.loader.load_model`.
        board: Board profile name (``edgekit boards`` lists them).
        output: The ``.ekpkg`` file to write (replaced atomically).
        input_shapes: Static input shapes by name (only with a path).
        options: Compile options; defaults to :class:`CompileOptions()`.
        board_dirs: Extra folders of board/target profiles.
        progress: Called with ``(stage, message)`` as each stage starts.
        int8_cost: A cost model for the backend's precision hook
            (:class:`~edgekit.compiler.backend.PrecisionChooser`; the CPU
            backend's int8/fp32 choice takes a ``CostProvider`` and by default
            measures on this machine where the target runs here); for tests
            and for boards that are not attached.

    Returns:
        The package written, its manifest (typed), the compile time and the file's size.

    Raises:
        EdgekitError: ``ModelError``/``InputError`` for the model,
            ``BoardNotFoundError`` for the board, ``ConfigError`` for
            ``weight_storage="sparse"`` on a non-MCU board, ``CompileError`` from the
            backend, ``DoesNotFitError`` when the arena exceeds the board's
            RAM, ``PackageError`` when the file cannot be written.
    """
    report = progress or no_progress
    options = options or CompileOptions()
    started = time.perf_counter()
    out = Path(output)
    if not out.parent.is_dir():
        raise PackageError(f"cannot write '{out}': folder '{out.parent}' does not exist", hint="Create it, or choose another -o path.")

    profiles = load_profiles(board_dirs)
    brd = profiles.board(board)
    target = profiles.target_of(brd)
    refuse_weight_storage(options, target.codegen, brd.name)
    backend = get_backend(target.codegen, brd.name)

    prepared = _int8_activations(_normalize_qoperator(_prepare(model, input_shapes, report), report), report)
    built = build_with_choice(backend, prepared, brd, target, options, report, cost=int8_cost)
    prepared, result = built.prepared, built.result
    _check_arena(prepared, brd, result)
    memory = {**result.memory, **_check_firmware(result.members, brd, report)}

    report("package", f"writing {out}")
    onnx_bytes = prepared.serialize()
    members = dict(result.members)
    if MODEL_MEMBER in members:
        raise CompileError(f"backend for {target.codegen} returned a member named {MODEL_MEMBER}", hint="Report this as a bug.")
    members[MODEL_MEMBER] = onnx_bytes
    manifest = _manifest(prepared, onnx_bytes, brd, target, result, memory, options, built.choice)
    written = write_package(out, manifest, members)
    compiled = CompileResult(out, Manifest.from_json(written, source=str(out)),
                             round(time.perf_counter() - started, 3), out.stat().st_size)  # fmt: skip
    logger.debug("wrote %s (%d bytes) in %.1f s", out, compiled.package_bytes, compiled.compile_seconds)
    return compiled


def _prepare(
    model: str | os.PathLike[str] | onnx.ModelProto | PreparedModel,
    input_shapes: Mapping[str, tuple[int, ...]] | None,
    report: ProgressFn,
) -> PreparedModel:
    """The model as the backends take it (loaded and fixed unless it already is)."""
    if not isinstance(model, PreparedModel):
        report("load", f"loading {model}" if isinstance(model, (str, os.PathLike)) else "preparing the model")
        return load_model(model, input_shapes)
    if input_shapes:
        raise InputError(
            "input_shapes cannot be applied to an already prepared model",
            hint="Pass them to load_model, or pass the model's path here.",
        )
    return model


def _check_arena(prepared: PreparedModel, board: Board, result: BuildResult) -> None:
    """Raises :class:`DoesNotFitError` when the build's arena exceeds the board's RAM."""
    ram = board.memory.ram_bytes
    arena = int(result.memory.get("arena_bytes", 0))
    if ram and arena > ram:
        raise DoesNotFitError(
            f"model '{prepared.name}' needs {arena} bytes of activation memory; board '{board.name}' has {ram} bytes of RAM",
            hint="Compress the model (edgekit compress), use smaller inputs, or choose a board with more RAM.",
            arena_bytes=arena,
            ram_bytes=ram,
        )


def _manifest(
    prepared: PreparedModel, onnx_bytes: bytes, board: Board, target: Target, result: BuildResult,
    memory: Mapping[str, int], options: CompileOptions, choice: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The manifest the driver writes: its own keys, then the backend's ``extra_manifest``."""
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tvm_version": _tvm_version(),
        "board": board.name,
        "target": target.name,
        "tvm_target": target.tvm_target_dict(),
        "codegen": target.codegen,
        "runtime": result.runtime,
        "model": {
            "name": prepared.name,
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "source": Path(prepared.source).name if prepared.source else "",
            "opset": prepared.opset,
            "notes": list(prepared.notes),
        },
        "inputs": [s.to_json() for s in prepared.inputs],
        "outputs": [s.to_json() for s in prepared.outputs],
        "memory": {"arena_bytes": 0, "weight_bytes": 0, "code_bytes": 0, **memory},
        "options": options.to_json(),
    }
    if choice is not None:
        manifest["int8_choice"] = dict(choice)
    clash = sorted(set(result.extra_manifest) & _CORE_KEYS)
    if clash:
        raise CompileError(f"backend for {target.codegen} tried to set manifest key(s) {clash}", hint="Report this as a bug.")
    manifest.update(result.extra_manifest)
    return manifest

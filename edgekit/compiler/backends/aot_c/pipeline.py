"""AOT C backend for bare-metal microcontrollers (codegen ``aot-c``).

TVM 0.27 has no microTVM, C runtime or AOT executor any more, but it still
builds kernels for bare-metal triples. This backend supplies the rest; its
steps, in order, are :data:`PASSES` (one module of this folder each):

1. :mod:`~edgekit.compiler.backends.aot_c.lower` imports the model and lowers
   Relax ``main`` to a list of destination-passing kernel calls (int8 layers
   to edgekit's C kernels first, :mod:`~edgekit.compiler.backends.aot_c.nn`);
2. :mod:`~edgekit.compiler.backends.aot_c.graph` turns ``main`` into tensors and calls;
3. :mod:`~edgekit.compiler.backends.aot_c.memory` plans the arena before any
   kernel is built and refuses a model that cannot fit the board;
4. :mod:`~edgekit.compiler.backends.aot_c.kernels` builds the kernels into one
   object for the device triple and measures their workspaces;
5. :mod:`~edgekit.compiler.backends.aot_c.layout` plans one arena for inputs,
   intermediates, outputs and workspaces, and packs ``weights.bin`` (each
   weight dense, or bitmask-sparse where that makes flash smaller and
   ``CompileOptions.weight_storage`` allows it; a sparse weight is decoded
   into a short-lived arena buffer before the kernel that reads it);
6. :mod:`~edgekit.compiler.backends.aot_c.emit` writes ``model.c`` / ``model.h``;
7. :mod:`~edgekit.compiler.firmware` compiles ``model.c`` for the device to
   measure code size and, when ``firmware_stubs`` describes the board,
   links ``firmware/firmware.elf``.

The result is checked against the board: arena (decode buffers included)
larger than RAM, or weights plus code larger than flash, raises
:class:`DoesNotFitError` with all numbers. With ``weight_storage="auto"`` a
sparse layout whose arena does not fit RAM falls back to dense weights.
See docs/aot.md.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable

from edgekit.compiler.backends.aot_c.emit import emit_model_c, emit_model_h
from edgekit.compiler.backends.aot_c.graph import AotGraph
from edgekit.compiler.backends.aot_c.kernels import KernelBuild, build_kernels
from edgekit.compiler.backends.aot_c.layout import AotLayout, float_ops, layout_model
from edgekit.compiler.backends.aot_c.memory import check_plan_fits, lower_to_graph, plan_graph, plan_memory
from edgekit.compiler.backends.aot_c.section import AotSection, WeightStorage
from edgekit.compiler.backend import CHECK_OPERATORS, BuildResult, CompileOptions, Pass, ProgressFn, no_progress, check_operators, refuse_tuning
from edgekit.compiler import firmware
from edgekit.core.errors import CompileError, DoesNotFitError

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target
    from edgekit.frontend.loader import PreparedModel

__all__ = [
    "PASSES",
    "COMPILE_PASSES",
    "build",
    "compile_aot",
    "check_fits",
    "AotArtifacts",
    "RUNTIME",
    "MODEL_C",
    "MODEL_H",
    "KERNELS_O",
    "WEIGHTS_BIN",
    "FIRMWARE_ELF",
    "with_weight_storage",
    "choose_storage",
    "measure_and_link",
]

logger = logging.getLogger(__name__)

RUNTIME = "aot-c"
MODEL_C = "model/model.c"
MODEL_H = "model/model.h"
KERNELS_O = "model/kernels.o"
WEIGHTS_BIN = "weights.bin"
FIRMWARE_ELF = "firmware/firmware.elf"

_HERE = "edgekit.compiler.backends.aot_c"

#: The steps of :func:`compile_aot` (``fit`` only with a ``before_build`` check).
COMPILE_PASSES: tuple[Pass, ...] = (
    Pass("import", "ONNX to Relax (QDQ chains to integer-only compute), weights bound back as constants",
         f"{_HERE}.lower:import_model"),
    Pass("lower", "int8 layers to edgekit's C kernels (unless mcu_int8_kernels is off), then Relax "
         "legalize/fuse/CallTIRRewrite to a list of kernel calls", f"{_HERE}.memory:lower_to_graph"),
    Pass("fit", "plan the arena before any kernel is built; refuse a model that cannot fit, with planned advice",
         f"{_HERE}.memory:check_plan_fits", when="compiling for an MCU board"),
    Pass("build", "build the TVM kernels into one object for the device triple; measure their workspaces",
         f"{_HERE}.kernels:build_kernels"),
    Pass("plan", "one arena for inputs, intermediates, outputs and workspaces; pack weights.bin",
         f"{_HERE}.layout:layout_model"),
    Pass("emit", "write model.c / model.h (static call schedule, tensors, sparse-weight decoding)",
         f"{_HERE}.emit:emit_model_c"),
)

#: The steps :func:`build` runs, in order (names are its progress stages).
PASSES: tuple[Pass, ...] = (
    CHECK_OPERATORS,
    *COMPILE_PASSES,
    Pass("storage", "keep sparse weights only where the board's RAM allows the decode buffers",
         f"{_HERE}.pipeline:choose_storage", when="weight storage is auto or sparse"),
    Pass("measure", "compile model.c for the device to measure code size; check RAM and flash",
         f"{_HERE}.pipeline:measure_and_link"),
    Pass("link", "link firmware/firmware.elf from firmware_stubs", f"{_HERE}.pipeline:measure_and_link",
         when="firmware_stubs describes the board and a cross toolchain is found"),
)


@dataclass
class AotArtifacts:
    """Everything the emitter produced for one model and one kernel triple."""

    graph: AotGraph
    layout: AotLayout
    kernels: KernelBuild
    model_c: str
    model_h: str
    model_name: str = "model"

    def members(self) -> dict[str, bytes]:
        """Package members: model sources, kernel object and weights."""
        return {
            MODEL_C: self.model_c.encode(),
            MODEL_H: self.model_h.encode(),
            KERNELS_O: self.kernels.object_bytes,
            WEIGHTS_BIN: self.layout.weights_blob,
        }


def compile_aot(
    prepared: "PreparedModel",
    tvm_target: Any,
    *,
    opt_level: int = 3,
    disable_asserts: bool = True,
    schedule: bool = True,
    fast_math: bool = True,
    sparse_weights: bool = False,
    int8_kernels: bool = True,
    progress: ProgressFn = no_progress,
    before_build: Callable[[AotGraph], None] | None = None,
) -> AotArtifacts:
    """Compiles ``prepared`` to static C plus kernels for ``tvm_target``.

    Args:
        prepared: The loaded model.
        tvm_target: An LLVM ``tvm.target.Target`` (a bare-metal triple, or the
            host for numerical checks with :func:`edgekit.compiler.backends.aot_c.host.run_on_host`).
        opt_level: Relax ``PassContext`` optimisation level.
        disable_asserts: Drop the kernels' argument checks (see
            :func:`~edgekit.compiler.backends.aot_c.kernels.build_kernels`).
        schedule: Inline producers and fuse epilogues in the kernels (see
            :func:`~edgekit.compiler.backends.aot_c.kernels.schedule_for_mcu`).
        fast_math: Use TVM's polynomial exp/tanh/erf/softmax (no libm needed).
        sparse_weights: Store each weight bitmask-sparse where that makes
            ``weights.bin`` smaller (see :func:`~edgekit.compiler.backends.aot_c.layout.choose_encodings`).
        int8_kernels: Run int8 conv2d/depthwise/matmul layers on edgekit's C
            kernels (:mod:`~edgekit.compiler.backends.aot_c.nn`) instead of TVM's loop nests.
        progress: Stage callback.
        before_build: Called with the lowered graph before any kernel is
            built (the board fit check, :func:`edgekit.compiler.backends.aot_c.memory.check_plan_fits`).

    Raises:
        CompileError: when any stage fails, naming it.
    """
    lowered, graph = lower_to_graph(
        prepared, tvm_target, opt_level=opt_level, fast_math=fast_math, int8_kernels=int8_kernels, progress=progress
    )
    if len(graph.inputs) != len(prepared.inputs):
        raise CompileError(
            f"the lowered model takes {len(graph.inputs)} inputs, the ONNX model {len(prepared.inputs)}",
            hint="Report the model; this is a bug.",
        )
    if before_build is not None:
        before_build(graph)
    progress("build", f"building {len(graph.kernel_names())} kernels")
    kernels = build_kernels(
        lowered, graph.kernel_names(), tvm_target, disable_asserts=disable_asserts, schedule=schedule
    )
    progress("plan", "planning the arena")
    layout = layout_model(graph, kernels.workspace, sparse_weights=sparse_weights)
    progress("emit", "writing model.c")
    return AotArtifacts(
        graph=graph,
        layout=layout,
        kernels=kernels,
        model_c=emit_model_c(graph, layout, model_name=prepared.name),
        model_h=emit_model_h(graph, layout, model_name=prepared.name),
        model_name=prepared.name,
    )


def with_weight_storage(artifacts: AotArtifacts, *, sparse_weights: bool) -> AotArtifacts:
    """The same kernels with the arena and ``weights.bin`` planned again for
    another weight storage (no TVM work: only the plan and the C change)."""
    graph = artifacts.graph
    alignment = artifacts.layout.plan.alignment
    layout = layout_model(graph, artifacts.kernels.workspace, alignment, sparse_weights=sparse_weights)
    return replace(
        artifacts,
        layout=layout,
        model_c=emit_model_c(graph, layout, model_name=artifacts.model_name),
        model_h=emit_model_h(graph, layout, model_name=artifacts.model_name),
    )


def choose_storage(artifacts: AotArtifacts, board: "Board", mode: str) -> tuple[AotArtifacts, str]:
    """Applies ``mode``'s RAM rule to a layout that stores weights sparse where smaller.

    Returns:
        The artifacts to package and a note saying why weights stayed dense ("" if none).

    Raises:
        DoesNotFitError: in ``sparse`` mode, when the decode buffers push the
            arena past the board's RAM (and it would fit with dense weights).
    """
    layout = artifacts.layout
    if mode == "dense":
        return artifacts, ""
    if not layout.decoded:
        note = "no weight is smaller stored sparse (too few zeros)"
        logger.info("weight storage %s: %s; all weights stay dense", mode, note)
        return artifacts, note
    ram = board.memory.ram_bytes
    if not ram or layout.arena_bytes <= ram:
        logger.info(
            "weight storage %s: %d of %d weights stored sparse, weights %d B instead of %d B, "
            "decode buffers add %d B to the arena",
            mode, len(layout.decoded), len(layout.storage), layout.weight_bytes, layout.dense_weight_bytes,
            layout.arena_bytes - layout.dense_arena_bytes,
        )  # fmt: skip
        return artifacts, ""
    why = (
        f"with sparse weights the arena is {layout.arena_bytes} B ({layout.decode_scratch_bytes} B of decoded weights "
        f"at the peak), more than the {ram} B of RAM of board '{board.name}'"
    )
    if mode == "sparse" and layout.dense_arena_bytes <= ram:
        raise DoesNotFitError(
            f"weight storage 'sparse': {why}",
            hint="Use --weight-storage auto (sparse only where RAM allows) or dense, or shrink the activations "
            "(int8, smaller inputs).",
            board=board.name,
            arena_bytes=layout.arena_bytes,
            dense_arena_bytes=layout.dense_arena_bytes,
            decode_scratch_bytes=layout.decode_scratch_bytes,
            ram_bytes=ram,
        )
    if mode == "sparse":
        return artifacts, ""  # does not fit dense either: check_fits reports the numbers
    logger.info("weight storage auto: %s; storing every weight dense", why)
    return with_weight_storage(artifacts, sparse_weights=False), why


def check_fits(
    board: "Board", arena_bytes: int, weight_bytes: int, code_bytes: int, decode_scratch_bytes: int = 0
) -> None:
    """Raises :class:`DoesNotFitError` if the model does not fit ``board``.

    The arena must fit RAM (``arena_bytes`` includes the buffers sparse
    weights are decoded into; ``decode_scratch_bytes`` only names them in the
    message); weights and code are stored in flash (the device agent keeps
    the weights image there). A size of 0 in the profile means unknown and is
    not checked.
    """
    ram, flash = board.memory.ram_bytes, board.memory.flash_bytes
    problems = []
    if ram and arena_bytes > ram:
        scratch = f" (incl. {decode_scratch_bytes} B of decoded sparse weights)" if decode_scratch_bytes else ""
        problems.append(f"arena {arena_bytes} B{scratch} > RAM {ram} B")
    if flash and weight_bytes + code_bytes > flash:
        problems.append(f"weights {weight_bytes} B + code {code_bytes} B = {weight_bytes + code_bytes} B > flash {flash} B")
    if problems:
        # The plan before the build (memory.check_plan_fits) already
        # refused what cannot fit without workspaces; advice there is planned
        # for the model, so point there rather than guess here.
        hint = ("`edgekit inspect MODEL --board {b}` lists the largest tensors and what would shrink the arena, "
                "each option planned for this model. ").format(b=board.name) if ram and arena_bytes > ram else ""
        if flash and weight_bytes + code_bytes > flash:
            hint += "Shrink the weights: quantize to int8 (`edgekit compress --quantize int8`) or prune them."
        raise DoesNotFitError(
            f"the model does not fit board '{board.name}': {'; '.join(problems)}",
            hint=hint.strip(),
            board=board.name,
            arena_bytes=arena_bytes,
            weight_bytes=weight_bytes,
            code_bytes=code_bytes,
            ram_bytes=ram,
            flash_bytes=flash,
            decode_scratch_bytes=decode_scratch_bytes,
        )


def _device_code_bytes(artifacts: AotArtifacts, target: "Target", tmp: Path) -> tuple[int, Path | None]:
    """Flash bytes of kernels + model.c compiled for the device (model.o path too)."""
    kernels = tmp / "kernels.o"
    kernels.write_bytes(artifacts.kernels.object_bytes)
    try:
        toolchain = firmware.find_toolchain(cross=True)
    except CompileError as exc:
        logger.warning("%s; code size counts the kernels only", exc)
        return firmware.flash_bytes([kernels]), None
    (tmp / "model.c").write_text(artifacts.model_c, encoding="utf-8")
    (tmp / "model.h").write_text(artifacts.model_h, encoding="utf-8")
    (model_o,) = firmware.compile_c(toolchain, [tmp / "model.c"], tmp / "obj", firmware.cc_flags(target), [tmp])
    return firmware.flash_bytes([kernels, model_o]), model_o


def _link_firmware(board: "Board", target: "Target", tmp: Path) -> bytes | None:
    spec = firmware.firmware_spec(board)
    if spec is None:
        logger.info("firmware_stubs describes no image for board '%s'; packaging the model without firmware", board.name)
        return None
    toolchain = firmware.find_toolchain(cross=True)
    # The image records its sources as the package's model/ and firmware_stubs/, not
    # this temporary folder and this install: two compiles of one model are the same bytes.
    paths = {tmp: str(PurePosixPath(MODEL_C).parent), **({spec.root: "firmware_stubs"} if spec.root else {})}
    elf = firmware.link_image(
        toolchain,
        [*spec.sources, tmp / "model.c", tmp / "kernels.o"],
        tmp / "firmware.elf",
        [*firmware.cc_flags(target), *spec.flags, *firmware.path_map_flags(paths)],
        linker_script=spec.linker_script,
        include_dirs=[tmp, *spec.include_dirs],
        cwd=tmp,
    )
    return elf.read_bytes()


def measure_and_link(
    artifacts: AotArtifacts, board: "Board", target: "Target", progress: ProgressFn
) -> tuple[dict[str, bytes], dict[str, int], list[str], bool]:
    """Measures code size, checks the fit and links the firmware image.

    Returns:
        ``(members, memory, kernel_imports, code_measured)``.
    """
    members = artifacts.members()
    with tempfile.TemporaryDirectory(prefix="edgekit-aot-") as tmp_name:
        tmp = Path(tmp_name)
        progress("measure", "compiling model.c for the device to measure code size")
        code_bytes, model_o = _device_code_bytes(artifacts, target, tmp)
        kernel_imports = firmware.undefined_symbols(tmp / "kernels.o")
        layout = artifacts.layout
        memory = {
            "arena_bytes": layout.arena_bytes,
            "weight_bytes": layout.weight_bytes,
            "code_bytes": code_bytes,
            "workspace_bytes": max((b for _, b in layout.workspace), default=0),
            "dense_weight_bytes": layout.dense_weight_bytes,
            "decode_scratch_bytes": layout.decode_scratch_bytes,
        }
        check_fits(
            board, memory["arena_bytes"], memory["weight_bytes"], memory["code_bytes"], layout.decode_scratch_bytes
        )
        if model_o is not None:
            progress("link", "linking the firmware image")
            elf = _link_firmware(board, target, tmp)
            if elf is not None:
                members[FIRMWARE_ELF] = elf
    return members, memory, kernel_imports, model_o is not None


def build(
    prepared: "PreparedModel",
    board: "Board",
    target: "Target",
    options: CompileOptions,
    progress: ProgressFn,
) -> BuildResult:
    """Compiles ``prepared`` to AOT C and kernels for a bare-metal ``board``.

    Raises:
        UnsupportedOpsError: listing every operator TVM cannot import.
        DoesNotFitError: when the arena exceeds RAM or weights + code exceed flash.
        CompileError: when a stage fails.
    """
    refuse_tuning(options, "the aot-c backend")
    check_operators(prepared, options, progress)

    mode = options.weight_storage

    def fit_check(graph: AotGraph) -> None:
        progress("fit", f"planning memory for {board.name} before the build")
        plan = plan_graph(graph, prepared, board, weight_storage=mode)
        check_plan_fits(plan, board, target, prepared=prepared, replan=lambda other: plan_memory(
            other, board, target, weight_storage=mode, opt_level=options.opt_level,
            int8_kernels=options.mcu_int8_kernels))  # fmt: skip

    artifacts = compile_aot(
        prepared, target.tvm_target(), opt_level=options.opt_level, sparse_weights=mode != "dense",
        int8_kernels=options.mcu_int8_kernels, progress=progress, before_build=fit_check,
    )  # fmt: skip
    if mode != "dense":
        progress("storage", f"weight storage {mode}: choosing dense or sparse per weight")
    artifacts, storage_note = choose_storage(artifacts, board, mode)
    try:
        members, memory, kernel_imports, measured = measure_and_link(artifacts, board, target, progress)
    except CompileError as exc:
        # The arena check cannot see the firmware's own .data/.bss and stack:
        # decode buffers that fit the arena check can still overflow RAM at
        # link time. auto then falls back to dense weights.
        if mode != "auto" or not artifacts.layout.decoded or "overflow" not in str(exc):
            raise
        storage_note = f"with sparse weights the firmware did not link ({str(exc)[:200]})"
        logger.info("weight storage auto: %s; storing every weight dense", storage_note)
        artifacts = with_weight_storage(artifacts, sparse_weights=False)
        members, memory, kernel_imports, measured = measure_and_link(artifacts, board, target, progress)
    graph = artifacts.graph
    logger.debug("aot-c build for %s: %s", board.name, memory)  # compile's summary table shows these
    return BuildResult(
        members=members,
        runtime=RUNTIME,
        memory=memory,
        extra_manifest={
            AotSection.KEY: AotSection(
                model_c=MODEL_C,
                model_h=MODEL_H,
                kernels=KERNELS_O,
                weights=WEIGHTS_BIN,
                firmware=FIRMWARE_ELF if FIRMWARE_ELF in members else None,
                alignment=artifacts.layout.plan.alignment,
                kernel_calls=len(graph.calls),
                int8_c_kernel_calls=sum(1 for c in graph.calls if c.extern),
                arena_bytes_without_reuse=artifacts.layout.plan.total_bytes,
                code_bytes_measured=measured,
                kernel_imports=tuple(kernel_imports),
                input_offsets=tuple(artifacts.layout.tensor_offsets[t] for t in graph.inputs),
                output_offsets=tuple(artifacts.layout.tensor_offsets[t] for t in graph.outputs),
                weight_storage=_storage_manifest(artifacts.layout, mode, storage_note),
                float_ops=tuple(float_ops(graph, artifacts.layout)),
            ).to_json()
        },
    )


def _storage_manifest(layout: AotLayout, mode: str, note: str) -> WeightStorage:
    """The manifest's ``aot.weight_storage``: both sizes and every tensor's encoding."""
    return WeightStorage(
        mode=mode,
        dense_bytes=layout.dense_weight_bytes,
        stored_bytes=layout.weight_bytes,
        sparse_tensors=len(layout.decoded),
        decode_scratch_bytes=layout.decode_scratch_bytes,
        arena_bytes_dense=layout.dense_arena_bytes,
        note=note,
        tensors=tuple(layout.storage),  # StoredWeights: the manifest writes their StoredTensor part
    )

"""LLVM backend, the boards that run the TVM runtime: a Relax VM executable.

Used for boards of this machine's ISA (:mod:`edgekit.compiler.backends.llvm.pipeline`
sends other ISAs' Linux boards to :mod:`~edgekit.compiler.backends.llvm.linux_cross`).

Weights are imported as function parameters (``keep_params_in_input=True``)
and detached, so they go into the ``params.bin`` member instead of through
LLVM as constants: a VGG-sized model would otherwise take minutes and
gigabytes to build. The package holds:

* ``lib/model.so`` — the exported Relax VM executable for the target, its
  ``main`` compiled code rather than VM bytecode (manifest key ``vm_exec_mode``;
  :data:`~edgekit.compiler.backends.llvm.relax_build.DEFAULT_EXEC_MODE`). The
  runtime runs either form: packages from before hold bytecode;
* ``params.bin`` — the weights in TVM's param-dict format
  (:func:`tvm.runtime.save_param_dict`), keyed ``p00000``, ``p00001``, ... in
  the order ``main`` takes them after the model inputs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.compiler.backend import BuildResult, CompileOptions, ProgressFn, check_operators
from edgekit.compiler.importer import tvm_error_line
from edgekit.core.cpu_features import host_arch
from edgekit.core.errors import CompileError
from edgekit.package.sections import ParamsSection

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target
    from edgekit.frontend.loader import PreparedModel

__all__ = ["build", "runs_here", "RUNTIME", "LIBRARY_MEMBER", "PARAMS_MEMBER", "param_key", "tvm_error_line"]

logger = logging.getLogger(__name__)

RUNTIME = "tvm-vm"
LIBRARY_MEMBER = "lib/model.so"
PARAMS_MEMBER = "params.bin"


def param_key(index: int) -> str:
    """Key of the ``index``-th weight in ``params.bin`` (sorts in call order)."""
    return f"p{index:05d}"


def runs_here(target: "Target") -> bool:
    """Whether ``target`` has this machine's ISA (a Relax VM library built here runs here)."""
    return target.isa.lower() == host_arch()


def _check_runs_here(board: "Board", target: "Target") -> None:
    # Exporting a shared library needs a linker for the target; only the host
    # toolchain is wired up for Relax VM libraries (other ISAs' Linux boards
    # go through edgekit.compiler.backends.llvm.linux_cross, see pipeline.build).
    if not runs_here(target):
        raise CompileError(
            f"compiling for board '{board.name}' ({target.isa}) on this {host_arch()} machine is not available yet",
            hint="Cross-compiling is available for 64-bit Linux boards (aarch64, riscv64); "
            "compile on the board itself or use --board host.",
            board=board.name,
        )


def _arena_bytes(lowered: Any) -> int:
    """Sum of the statically planned ``alloc_storage`` sizes in ``main``."""
    import tvm
    from tvm import relax

    total = 0
    main = lowered["main"]
    body = main.body
    blocks = body.blocks if isinstance(body, relax.SeqExpr) else []
    for block in blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
                continue
            if value.op.name not in ("relax.vm.alloc_storage", "relax.memory.alloc_storage"):
                continue
            shape = value.args[0]
            if isinstance(shape, relax.ShapeExpr) and all(isinstance(v, tvm.tirx.IntImm) for v in shape.values):
                n = 1
                for v in shape.values:
                    n *= int(v)
                total += n
    return total


def build(
    prepared: "PreparedModel",
    board: "Board",
    target: "Target",
    options: CompileOptions,
    progress: ProgressFn,
) -> BuildResult:
    """Compiles ``prepared`` to a Relax VM shared library for ``target``.

    Raises:
        UnsupportedOpsError: listing every operator TVM cannot import.
        CompileError: when TVM fails; the message carries TVM's first line.
    """
    _check_runs_here(board, target)

    check_operators(prepared, options, progress)

    import tvm

    from edgekit.compiler.importer import import_onnx

    progress("import", "importing into TVM Relax")
    mod, weights, integer_report = import_onnx(prepared)

    progress("build", f"building for {target.name}")
    from edgekit.compiler.backends.llvm.relax_build import build_cpu

    tvm_target = target.tvm_target()
    database = None
    if options.tune_trials:
        from edgekit.compiler.backends.llvm.tuning import open_database, tune_model

        progress("tune", f"tuning with {options.tune_trials} MetaSchedule trials")
        tune_model(prepared, board, target, options.tune_trials,
                   tracker=options.tune_tracker or None, key=options.tune_key or None)
        database = open_database(tvm_target)
    build = build_cpu(
        mod, tvm_target, weights, database=database, num_threads=board.cores, opt_level=options.opt_level
    )
    executable = build.executable
    # The CPU pipeline transforms weight layouts once at compile time; the
    # package stores the transformed weights the executable expects.
    weights = list(build.params)
    arena = _arena_bytes(build.lowered)

    progress("export", "exporting the shared library and weights")
    try:
        with tempfile.TemporaryDirectory(prefix="edgekit-build-") as tmp:
            lib_path = Path(tmp) / "model.so"
            executable.export_library(str(lib_path))
            library = lib_path.read_bytes()
        blob = bytes(tvm.runtime.save_param_dict({param_key(i): w for i, w in enumerate(weights)}))
    except Exception as exc:
        raise CompileError(
            f"could not export the compiled model: {tvm_error_line(exc)}",
            hint="Exporting needs a C compiler (gcc or clang) on PATH; install one.",
        ) from exc

    weight_bytes = sum(int(np.prod(w.shape, dtype=np.int64)) * np.dtype(w.dtype).itemsize for w in weights)
    param_names = [str(v.name) for v in mod["main"].params[len(prepared.inputs):]]
    logger.debug("built %s: %d bytes code, %d weights (%d bytes)", prepared.name, len(library), len(weights), weight_bytes)
    return BuildResult(
        members={LIBRARY_MEMBER: library, PARAMS_MEMBER: blob},
        runtime=RUNTIME,
        memory={"arena_bytes": arena, "weight_bytes": weight_bytes, "code_bytes": len(library)},
        extra_manifest={
            "entry": "main",
            "library": LIBRARY_MEMBER,
            "vm_exec_mode": build.exec_mode,
            ParamsSection.KEY: ParamsSection(PARAMS_MEMBER, "tvm-param-dict", len(weights), tuple(param_names)).to_json(),
            **({"integer_lowering": integer_report} if integer_report else {}),
        },
    )

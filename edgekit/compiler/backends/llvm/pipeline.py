"""The ``llvm`` backend's entry point: CPUs, as a Relax VM library or a static runner.

A board of this machine's ISA gets a Relax VM shared library plus
``params.bin`` (:mod:`~edgekit.compiler.backends.llvm.host`, the steps in
:data:`PASSES`); another ISA's 64-bit Linux board gets a static runner
executable built from the AOT C output
(:mod:`~edgekit.compiler.backends.llvm.linux_cross`, :data:`CROSS_PASSES`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgekit.compiler.backend import CHECK_OPERATORS, BuildResult, CompileOptions, Pass, ProgressFn
from edgekit.compiler.backends.aot_c.pipeline import COMPILE_PASSES
from edgekit.compiler.backends.llvm import host, linux_cross

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target
    from edgekit.frontend.loader import PreparedModel

__all__ = ["build", "passes_for", "PASSES", "CROSS_PASSES"]

logger = logging.getLogger(__name__)

_HERE = "edgekit.compiler.backends.llvm"

#: Boards of this machine's ISA: a Relax VM library (names are progress stages).
PASSES: tuple[Pass, ...] = (
    CHECK_OPERATORS,
    Pass("import", "ONNX to Relax (QDQ chains to integer-only compute), weights detached into params.bin",
         "edgekit.compiler.importer:import_onnx"),
    Pass("tune", "MetaSchedule tuning into the target's database (this machine or an RPC tracker)",
         "edgekit.compiler.backends.llvm.tuning:tune_model", when="tune_trials > 0"),
    Pass("build", "edgekit's CPU pipeline (Relax rewrites, int8 and layout schedules) to a Relax VM executable",
         "edgekit.compiler.backends.llvm.relax_build:build_cpu"),
    Pass("export", "export lib/model.so and params.bin", f"{_HERE}.host:build"),
)

#: Another ISA's 64-bit Linux board: the AOT C steps for the board's triple
#: (exact libm math, no fit plan) and a static runner linked with zig.
CROSS_PASSES: tuple[Pass, ...] = (
    CHECK_OPERATORS,
    *(p for p in COMPILE_PASSES if p.name != "fit"),
    Pass("link", "link bin/runner statically for <arch>-linux-musl with zig cc", f"{_HERE}.linux_cross:link_runner"),
)


def _cross(target: "Target") -> bool:
    return not host.runs_here(target) and linux_cross.supports(target)


def passes_for(target: "Target") -> tuple[Pass, ...]:
    """The steps :func:`build` runs for ``target``."""
    return CROSS_PASSES if _cross(target) else PASSES


def build(
    prepared: "PreparedModel",
    board: "Board",
    target: "Target",
    options: CompileOptions,
    progress: ProgressFn,
) -> BuildResult:
    """Compiles ``prepared`` for a CPU ``board``: a Relax VM library where the
    target is this machine's ISA, a static runner for another ISA's Linux board.

    Raises:
        UnsupportedOpsError: listing every operator TVM cannot import.
        CompileError: when a stage fails, or the board is another ISA's
            non-Linux board (no cross path for it).
    """
    if _cross(target):
        # No TVM runtime on the board: one self-contained executable instead.
        return linux_cross.build(prepared, board, target, options, progress)
    return host.build(prepared, board, target, options, progress)

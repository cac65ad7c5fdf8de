"""NPU backend: int8 layers onto the board's accelerator, the rest as host sub-graphs.

The model must already be int8 QDQ (``edgekit compress --quantize int8``);
layers that are not int8, or whose tiles cannot fit the accelerator's
buffers, stay on the host with the reason recorded in the manifest's
``npu.partition``. Members are described in :mod:`edgekit.npu.build`.
The host sub-graphs are stored as ONNX; they run with onnxruntime in the
simulator (compiling them with TVM for the board's CPU needs a cross linker
that is not wired up yet).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgekit.compiler.backend import BuildResult, CompileOptions, ProgressFn
from edgekit.core.errors import CompileError, DoesNotFitError

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target
    from edgekit.frontend.loader import PreparedModel

__all__ = ["build", "RUNTIME"]

logger = logging.getLogger(__name__)

RUNTIME = "npu"


def build(
    prepared: "PreparedModel",
    board: "Board",
    target: "Target",
    options: CompileOptions,
    progress: ProgressFn,
) -> BuildResult:
    """Compiles a QDQ model for ``board``'s accelerator.

    Raises:
        CompileError: the board has no ``[npu]`` section, or tuning was asked for.
    """
    from edgekit.npu.build import compile_npu

    if board.npu is None:
        raise CompileError(
            f"board '{board.name}' uses the npu codegen but its profile has no [npu] section",
            hint="Add rows, cols, clock_hz, buffers and dma_bytes_per_cycle under [npu] (see board_configs/pynq-z2.toml).",
        )
    if options.tune_trials:
        raise CompileError("tuning (tune_trials > 0) does not apply to the NPU backend", hint="Compile without --tune.")
    progress("partition", "partitioning int8 layers onto the accelerator")
    result = compile_npu(prepared.model, board.npu)
    summary = result.partition.summary()
    progress("package", f"{summary['offloaded_layers']} layers offloaded ({100 * summary['offloaded_macs_fraction']:.1f}% of MACs)")
    dram = result.plan["dram"]
    if board.memory.ram_bytes and dram["size"] > board.memory.ram_bytes:
        raise DoesNotFitError(
            f"the model needs {dram['size']} bytes of accelerator memory (activations, weights, program), "
            f"board '{board.name}' has {board.memory.ram_bytes} bytes",
            hint="Compile a smaller model, or use a board (profile memory.ram) with more memory.",
        )
    return BuildResult(
        members=result.members,
        runtime=RUNTIME,
        memory={
            "arena_bytes": int(dram["act_end"] - dram["act_base"]),
            "weight_bytes": int(dram["const_size"]),
            "code_bytes": len(result.members["npu/program.bin"]),
            "npu_dram_bytes": int(dram["size"]),
        },
        extra_manifest={"npu": {"plan": "npu/plan.json", "partition": summary, "layers": len(result.program.layers)}},
    )

"""The ``npu`` backend: int8 layers onto the board's accelerator, the rest as
host sub-graphs. One module per step of :data:`PASSES` (see docs/npu-isa.md):
``partition`` (QDQ model -> accelerator layers and host nodes), ``tiling``
(loop order and tile sizes), ``codegen`` (instructions, packed constants,
DRAM places), ``host_split`` (step order, host sub-graphs), ``pipeline``
(:func:`build`, the entry point, :func:`compile_npu` and the members).
The ISA, the layer semantics, the cycle model, the simulator and the
package loader it shares with the runners live in :mod:`edgekit.npu`.
"""

from edgekit.compiler.backends.npu.pipeline import PASSES, RUNTIME, NpuBuild, build, compile_npu

__all__ = ["build", "compile_npu", "NpuBuild", "PASSES", "RUNTIME"]

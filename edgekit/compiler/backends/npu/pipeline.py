"""NPU backend: int8 layers onto the board's accelerator, the rest as host sub-graphs.

The model must already be int8 QDQ (``edgekit compress --quantize int8``);
layers that are not int8, or whose tiles cannot fit the accelerator's
buffers, stay on the host with the reason recorded in the manifest's
``npu.partition``. Members are described in :mod:`edgekit.npu.package`.
The host sub-graphs are stored as ONNX; they run with onnxruntime in the
simulator (compiling them with TVM for the board's CPU needs a cross linker
that is not wired up yet).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import onnx

from edgekit.compiler.backend import BuildResult, CompileOptions, Pass, ProgressFn, no_progress
from edgekit.compiler.backends.npu.codegen import Program, generate
from edgekit.compiler.backends.npu.host_split import split_host_graph
from edgekit.compiler.backends.npu.partition import Partition, partition
from edgekit.compiler.backends.npu.section import NpuSection
from edgekit.compiler.backends.npu.tiling import Tiling, plan
from edgekit.core.errors import CompileError, DoesNotFitError
from edgekit.core.profiles import NpuConfig
from edgekit.npu.isa import encode_program
from edgekit.npu.package import PLAN_MEMBER, PLAN_VERSION, PROGRAM_MEMBER, RING_ENTRIES, WEIGHTS_MEMBER, HostSegment, host_member
from edgekit.npu.placement import align

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target
    from edgekit.frontend.loader import PreparedModel

__all__ = ["build", "compile_npu", "NpuBuild", "PASSES", "RUNTIME"]

logger = logging.getLogger(__name__)

RUNTIME = "npu"

_HERE = "edgekit.compiler.backends.npu"

#: The steps :func:`compile_npu` runs, in order (names are its progress stages).
PASSES: tuple[Pass, ...] = (
    Pass("partition", "int8 Conv/Add layers with their requantization to the accelerator, every other node to the host",
         f"{_HERE}.partition:partition"),
    Pass("tile", "loop order and tile sizes per layer; a layer whose tiles do not fit the buffers goes back to the host "
         "and partition runs again", f"{_HERE}.tiling:plan"),
    Pass("lower", "instruction streams, packed weights and per-channel parameters, activation places in DRAM",
         f"{_HERE}.codegen:generate"),
    Pass("split", "host and accelerator steps in order; host nodes cut into ONNX sub-graphs",
         f"{_HERE}.host_split:split_host_graph"),
    Pass("package", "npu/plan.json (DRAM map, layers, steps), program.bin, weights.bin, host_<k>.onnx",
         f"{_HERE}.pipeline:package_members"),
)


@dataclass
class NpuBuild:
    """The compiled model: package members plus the objects they came from."""

    members: dict[str, bytes]
    plan: dict[str, Any]
    partition: Partition
    program: Program
    segments: list[HostSegment]


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    return {
        vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    }


def _partition_and_tile(model: onnx.ModelProto, npu: NpuConfig, progress: ProgressFn) -> tuple[Partition, dict[str, Tiling]]:
    """The ``partition`` and ``tile`` passes, repeated until every offloaded layer fits."""
    force_host: dict[str, str] = {}
    while True:
        progress("partition", "partitioning int8 layers onto the accelerator")
        part = partition(model, force_host)
        progress("tile", f"tiling {len(part.layers)} layers for the buffers")
        tilings: dict[str, Tiling] = {}
        refused = False
        for layer in part.layers:
            try:
                tilings[layer.name] = plan(layer, npu)
            except DoesNotFitError as exc:
                force_host[layer.name] = exc.message
                refused = True
        if not refused:
            return part, tilings


def package_members(
    model: onnx.ModelProto, npu: NpuConfig, part: Partition, program: Program,
    steps: list[tuple[str, Any]], segments: list[HostSegment],
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The ``package`` pass: the members (:mod:`edgekit.npu.package`) and the plan they hold."""
    code = bytearray()
    layers_json = []
    const_end = program.const_base + len(program.const_image)
    prog_base = align(const_end)
    for lc in program.layers:
        offset = prog_base + len(code)
        code += encode_program(lc.insns)
        layers_json.append({
            "name": lc.name, "kind": lc.kind, "op": lc.op, "program_addr": offset, "insn_count": len(lc.insns),
            "macs": lc.macs, "inputs": list(lc.inputs), "output": lc.output, "tiling": lc.tiling.to_json(),
        })  # fmt: skip
    ring_base = align(prog_base + len(code))
    dram_size = ring_base + 2 * 32 * RING_ENTRIES
    plan_json = {
        "version": PLAN_VERSION,
        "npu": {k: getattr(npu, k) for k in npu.__dataclass_fields__},
        "dram": {"size": dram_size, "act_base": program.act_base, "act_end": program.act_end, "const_base": program.const_base,
                 "const_size": len(program.const_image), "program_base": prog_base, "ring_base": ring_base,
                 "ring_entries": RING_ENTRIES},  # fmt: skip
        "tensors": {n: t.to_json() for n, t in program.tensors.items()},
        "layers": layers_json,
        "steps": [[kind, idx] for kind, idx in steps],
        "host_segments": [{"member": host_member(k), "inputs": s.inputs, "outputs": s.outputs, "nodes": s.nodes} for k, s in enumerate(segments)],
        "inputs": [i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}],
        "outputs": [o.name for o in model.graph.output],
        "partition": part.summary(),
    }
    members = {
        PLAN_MEMBER: json.dumps(plan_json, indent=1).encode(),
        PROGRAM_MEMBER: bytes(code),
        WEIGHTS_MEMBER: program.const_image,
    }
    for k, seg in enumerate(segments):
        members[host_member(k)] = seg.model.SerializeToString()
    return members, plan_json


def compile_npu(model: onnx.ModelProto, npu: NpuConfig, progress: ProgressFn = no_progress) -> NpuBuild:
    """Partitions, tiles and lowers a QDQ model for one accelerator (:data:`PASSES`).

    Layers whose tiles cannot fit the buffers are moved to the host with the
    reason recorded in the partition report.

    Raises:
        CompileError: the model cannot be scheduled or lowered.
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    for i, node in enumerate(work.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    part, tilings = _partition_and_tile(work, npu, progress)
    progress("lower", f"lowering {len(part.layers)} layers to instructions")
    program = generate(part.layers, tilings, npu, _shapes(work))
    progress("split", f"cutting {len(part.host_nodes)} host nodes into sub-graphs")
    steps, segments = split_host_graph(work, part.layers, part.host_nodes)
    summary = part.record()
    progress("package", f"{summary.offloaded_layers} layers offloaded ({100 * summary.offloaded_macs_fraction:.1f}% of MACs)")
    members, plan_json = package_members(work, npu, part, program, steps, segments)
    if not part.layers:
        logger.warning("no layer of the model runs on the accelerator; everything stays on the host")
    return NpuBuild(members, plan_json, part, program, segments)


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
        DoesNotFitError: the accelerator's memory (profile ``memory.ram``) is too small.
    """
    if board.npu is None:
        raise CompileError(
            f"board '{board.name}' uses the npu codegen but its profile has no [npu] section",
            hint="Add rows, cols, clock_hz, buffers and dma_bytes_per_cycle under [npu] (see board_configs/pynq-z2.toml).",
        )
    if options.tune_trials:
        raise CompileError("tuning (tune_trials > 0) does not apply to the NPU backend", hint="Compile without --tune.")
    result = compile_npu(prepared.model, board.npu, progress)
    record = result.partition.record()
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
            "code_bytes": len(result.members[PROGRAM_MEMBER]),
            "npu_dram_bytes": int(dram["size"]),
        },
        extra_manifest={NpuSection.KEY: NpuSection(PLAN_MEMBER, record, len(result.program.layers)).to_json()},
    )

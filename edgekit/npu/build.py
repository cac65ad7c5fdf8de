"""Model -> accelerator package members, and members -> a runnable executor.

Package members (see ``docs/npu-isa.md``):

* ``npu/plan.json`` — DRAM map, tensor placements, layers (program offset,
  instruction count, tiling, MACs), the step order and the partition report;
* ``npu/program.bin`` — every layer's instructions, 32 bytes each;
* ``npu/weights.bin`` — packed weights and per-channel parameters, loaded at
  ``dram.const_base``;
* ``npu/host_<k>.onnx`` — the host sub-graphs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

import onnx

from edgekit.core.errors import ConfigError, DoesNotFitError, PackageError
from edgekit.core.profiles import NpuConfig
from edgekit.npu.codegen import ALIGN, Program, TensorPlace, generate
from edgekit.npu.driver import NpuDriver
from edgekit.npu.host_exec import HostSegment, HybridExecutor, split_host_graph
from edgekit.npu.isa import INSN_BYTES, encode_program
from edgekit.npu.partition import Partition, partition
from edgekit.npu.sim_device import RingDevice, SimulatedNpuDevice
from edgekit.npu.tiling import Tiling, plan

__all__ = ["NpuBuild", "compile_npu", "open_simulated", "open_on_device", "PLAN_MEMBER", "PROGRAM_MEMBER", "WEIGHTS_MEMBER", "RING_ENTRIES"]

logger = logging.getLogger(__name__)

PLAN_MEMBER = "npu/plan.json"
PROGRAM_MEMBER = "npu/program.bin"
WEIGHTS_MEMBER = "npu/weights.bin"
RING_ENTRIES = 64
PLAN_VERSION = 1


def _host_member(k: int) -> str:
    return f"npu/host_{k}.onnx"


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


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


def compile_npu(model: onnx.ModelProto, npu: NpuConfig) -> NpuBuild:
    """Partitions, tiles and lowers a QDQ model for one accelerator.

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
    force_host: dict[str, str] = {}
    while True:
        part = partition(work, force_host)
        tilings: dict[str, Tiling] = {}
        refused = False
        for layer in part.layers:
            try:
                tilings[layer.name] = plan(layer, npu)
            except DoesNotFitError as exc:
                force_host[layer.name] = exc.message
                refused = True
        if not refused:
            break
    program = generate(part.layers, tilings, npu, _shapes(work))
    steps, segments = split_host_graph(work, part.layers, part.host_nodes)

    code = bytearray()
    layers_json = []
    const_end = program.const_base + len(program.const_image)
    prog_base = _align(const_end)
    for lc in program.layers:
        offset = prog_base + len(code)
        code += encode_program(lc.insns)
        layers_json.append({
            "name": lc.name, "kind": lc.kind, "op": lc.op, "program_addr": offset, "insn_count": len(lc.insns),
            "macs": lc.macs, "inputs": list(lc.inputs), "output": lc.output, "tiling": lc.tiling.to_json(),
        })  # fmt: skip
    ring_base = _align(prog_base + len(code))
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
        "host_segments": [{"member": _host_member(k), "inputs": s.inputs, "outputs": s.outputs, "nodes": s.nodes} for k, s in enumerate(segments)],
        "inputs": [i.name for i in work.graph.input if i.name not in {x.name for x in work.graph.initializer}],
        "outputs": [o.name for o in work.graph.output],
        "partition": part.summary(),
    }
    members = {
        PLAN_MEMBER: json.dumps(plan_json, indent=1).encode(),
        PROGRAM_MEMBER: bytes(code),
        WEIGHTS_MEMBER: program.const_image,
    }
    for k, seg in enumerate(segments):
        members[_host_member(k)] = seg.model.SerializeToString()
    if not part.layers:
        logger.warning("no layer of the model runs on the accelerator; everything stays on the host")
    return NpuBuild(members, plan_json, part, program, segments)


def open_simulated(
    read: Callable[[str], bytes], npu: NpuConfig, functional: bool = True, engine: str = "model"
) -> tuple[HybridExecutor, RingDevice, dict[str, Any]]:
    """Loads package members into a simulated accelerator and returns a ready executor.

    Args:
        read: Returns a package member's bytes by name.
        npu: The accelerator to simulate (the board's, or another for what-if runs).
        functional: Compute values (``False``: timing only; the Python model only).
        engine: ``model`` (the Python simulator and cycle model) or ``rtl``
            (the accelerator's Verilog under Verilator).

    Raises:
        PackageError: the plan is missing, of another version, or for another array geometry.
        ConfigError: ``engine`` is unknown, or ``rtl`` cannot be built here.
    """

    def device_for(size: int) -> RingDevice:
        if engine == "model":
            return SimulatedNpuDevice(npu, size, functional=functional)
        if engine == "rtl":
            from edgekit.npu.rtl_device import RtlNpuDevice

            return RtlNpuDevice(npu, size)
        raise ConfigError(f"unknown NPU simulator engine {engine!r}", hint="Use 'model' or 'rtl'.")

    return open_on_device(read, npu, device_for)


def open_on_device(
    read: Callable[[str], bytes], npu: NpuConfig, device_for: Callable[[int], RingDevice]
) -> tuple[HybridExecutor, RingDevice, dict[str, Any]]:
    """Loads package members into the accelerator ``device_for(dram_bytes)`` returns and returns a ready executor.

    Raises:
        PackageError: the plan is missing, of another version, or for another array geometry.
    """
    try:
        plan_json = json.loads(read(PLAN_MEMBER))
    except (KeyError, ValueError) as exc:
        raise PackageError(f"package has no valid {PLAN_MEMBER}", hint="Rebuild it with `edgekit compile --board`.") from exc
    if plan_json.get("version") != PLAN_VERSION:
        raise PackageError(f"NPU plan version {plan_json.get('version')} is not {PLAN_VERSION}", hint="Rebuild the package with this edgekit.")
    built_for = plan_json["npu"]
    for key in ("rows", "cols", "input_buffer_bytes", "weight_buffer_bytes", "acc_buffer_bytes"):
        if built_for[key] != getattr(npu, key):
            raise PackageError(
                f"package was compiled for an NPU with {key}={built_for[key]}, this board has {getattr(npu, key)}",
                hint="Recompile the model for this board.",
            )
    dram = plan_json["dram"]
    device = device_for(dram["size"])
    device.write(dram["const_base"], read(WEIGHTS_MEMBER))
    device.write(dram["program_base"], read(PROGRAM_MEMBER))
    driver = NpuDriver(device, device, dram["ring_base"], dram["ring_entries"])
    segments = [
        HostSegment(onnx.load_from_string(read(s["member"])), list(s["inputs"]), list(s["outputs"]), list(s["nodes"]))
        for s in plan_json["host_segments"]
    ]
    programs = [(lj["name"], lj["program_addr"], lj["insn_count"], tuple(lj["inputs"]), lj["output"]) for lj in plan_json["layers"]]
    if any(lj["insn_count"] * INSN_BYTES + lj["program_addr"] > dram["ring_base"] for lj in plan_json["layers"]):
        raise PackageError("NPU plan places a program outside its region", hint="Rebuild the package.")
    executor = HybridExecutor(
        steps=[(k, int(i)) for k, i in plan_json["steps"]],
        segments=segments,
        layer_programs=programs,
        tensors={n: TensorPlace.from_json(t) for n, t in plan_json["tensors"].items()},
        driver=driver,
        inputs=plan_json["inputs"],
        outputs=plan_json["outputs"],
        stats_source=lambda: device.last_stats[-1] if device.last_stats else None,
    )
    return executor, device, plan_json





"""The NPU package's members, shared by the backend that writes them
(:mod:`edgekit.compiler.backends.npu`) and the runners that load them:
member names and plan version, and members -> a runnable executor
(:func:`open_on_device`; the simulator's :func:`edgekit.sim.npu.device.open_simulated`
wraps it).

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
from typing import Any, Callable

import onnx

from edgekit.core.errors import PackageError
from edgekit.core.profiles import NpuConfig
from edgekit.npu.driver import NpuDriver
from edgekit.npu.host_exec import HostSegment, HybridExecutor
from edgekit.npu.isa import INSN_BYTES
from edgekit.npu.placement import TensorPlace
from edgekit.npu.ring import RingDevice

__all__ = [
    "open_on_device", "host_member",
    "PLAN_MEMBER", "PLAN_VERSION", "PROGRAM_MEMBER", "WEIGHTS_MEMBER", "RING_ENTRIES",
]

logger = logging.getLogger(__name__)

PLAN_MEMBER = "npu/plan.json"
PROGRAM_MEMBER = "npu/program.bin"
WEIGHTS_MEMBER = "npu/weights.bin"
RING_ENTRIES = 64
PLAN_VERSION = 1


def host_member(k: int) -> str:
    """The member that holds host sub-graph ``k``."""
    return f"npu/host_{k}.onnx"


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





"""An NPU package's members into an accelerator, and a ready :class:`~edgekit.runtime.npu.executor.HybridExecutor`.

:func:`open_on_device` loads the members (:mod:`edgekit.npu.package`) into
whichever device serves the rings: a simulator's or a board's.
:func:`open_simulated` does so on the board's simulator, which it reaches
through the SIMULATORS registry (:mod:`edgekit.core.links`, the ``npu``
entry and its parts), not by import: ``sim`` is ``runtime``'s sibling.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import onnx

from edgekit.core.errors import ConfigError, PackageError
from edgekit.core.links import SIMULATORS
from edgekit.core.profiles import NpuConfig
from edgekit.npu.isa import INSN_BYTES
from edgekit.npu.package import PLAN_MEMBER, PLAN_VERSION, PROGRAM_MEMBER, WEIGHTS_MEMBER, HostSegment
from edgekit.npu.placement import TensorPlace
from edgekit.npu.ring import RingDevice
from edgekit.runtime.npu.driver import NpuDriver
from edgekit.runtime.npu.executor import HybridExecutor

__all__ = ["open_on_device", "open_simulated"]

logger = logging.getLogger(__name__)


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


def open_simulated(
    read: Callable[[str], bytes], npu: NpuConfig, *, engine: str = "model", functional: bool = True
) -> tuple[HybridExecutor, RingDevice, dict[str, Any]]:
    """Loads package members into a simulated accelerator and returns a ready executor.

    Args:
        read: Returns a package member's bytes by name.
        npu: The accelerator to simulate (the board's, or another for what-if runs).
        engine: ``model`` (the Python simulator and cycle model) or ``rtl``
            (the accelerator's Verilog under Verilator).
        functional: Compute values (``False``: timing only; the Python model only).

    Raises:
        PackageError: the plan is missing, of another version, or for another array geometry.
        ConfigError: ``engine`` is unknown, or ``rtl`` cannot be built here.
    """
    simulator = SIMULATORS.get("npu")
    if engine not in simulator.engines:
        raise ConfigError(f"unknown NPU simulator engine {engine!r}", hint=f"Use one of: {', '.join(simulator.engines)}.")
    device_class = simulator.load(engine)
    options = {"functional": functional} if engine == "model" else {}
    return open_on_device(read, npu, lambda size: device_class(npu, size, **options))

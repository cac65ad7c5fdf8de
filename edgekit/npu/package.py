"""The NPU package's members, shared by the backend that writes them
(:mod:`edgekit.compiler.backends.npu`) and the runner that loads them
(:mod:`edgekit.runtime.npu.loader`): member names, the plan's version and
:class:`HostSegment`, a host sub-graph.

Package members (see ``docs/npu-isa.md``):

* ``npu/plan.json`` — DRAM map, tensor placements, layers (program offset,
  instruction count, tiling, MACs), the step order and the partition report;
* ``npu/program.bin`` — every layer's instructions, 32 bytes each;
* ``npu/weights.bin`` — packed weights and per-channel parameters, loaded at
  ``dram.const_base``;
* ``npu/host_<k>.onnx`` — the host sub-graphs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx

__all__ = [
    "HostSegment", "host_member",
    "PLAN_MEMBER", "PLAN_VERSION", "PROGRAM_MEMBER", "WEIGHTS_MEMBER", "RING_ENTRIES",
]

logger = logging.getLogger(__name__)

PLAN_MEMBER = "npu/plan.json"
PROGRAM_MEMBER = "npu/program.bin"
WEIGHTS_MEMBER = "npu/weights.bin"
RING_ENTRIES = 64
PLAN_VERSION = 1


@dataclass
class HostSegment:
    """A run of host nodes as one ONNX model (``npu/host_<k>.onnx``)."""

    model: onnx.ModelProto
    inputs: list[str]
    outputs: list[str]
    nodes: list[str]


def host_member(k: int) -> str:
    """The member that holds host sub-graph ``k``."""
    return f"npu/host_{k}.onnx"

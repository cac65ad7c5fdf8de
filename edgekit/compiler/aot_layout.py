"""Addresses for every tensor of an :class:`~edgekit.compiler.aot_graph.AotGraph`.

Inputs, intermediates, outputs and kernel workspaces share one arena planned
by :func:`edgekit.compiler.aot_plan.plan_arena`; weights go into one blob
(``weights.bin``) at aligned offsets. Views share the offset of the tensor
they view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edgekit.compiler.aot_graph import AotGraph
from edgekit.compiler.aot_plan import DEFAULT_ALIGNMENT, ArenaPlan, Buffer, align_up, find_overlaps, plan_arena
from edgekit.core.errors import CompileError

__all__ = ["AotLayout", "arena_buffers", "layout_model", "pack_weights"]

logger = logging.getLogger(__name__)


@dataclass
class AotLayout:
    """Where everything lives at run time.

    Attributes:
        plan: The arena plan (buffer names ``t<index>`` and ``ws<step>``).
        buffers: The buffers that were planned (for checks and reports).
        tensor_offsets: Tensor index -> arena offset, for inputs, arena
            tensors and views.
        weight_offsets: Tensor index -> offset in the weights blob.
        weights_blob: The ``weights.bin`` bytes.
        workspace: Per kernel call, ``(arena offset, bytes)`` of its workspace.
    """

    plan: ArenaPlan
    buffers: list[Buffer]
    tensor_offsets: dict[int, int]
    weight_offsets: dict[int, int]
    weights_blob: bytes
    workspace: list[tuple[int, int]]

    @property
    def arena_bytes(self) -> int:
        """Size of ``ek_arena``."""
        return self.plan.arena_bytes

    @property
    def weight_bytes(self) -> int:
        """Size of ``weights.bin``."""
        return len(self.weights_blob)


def arena_buffers(graph: AotGraph, workspace: dict[str, int]) -> list[Buffer]:
    """The buffers the arena must hold, with lifetimes in kernel-call steps."""
    end = len(graph.calls)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for step, call in enumerate(graph.calls):
        for arg in call.args:
            root = graph.root(arg)
            first.setdefault(root, step)
            last[root] = step
    for out in graph.outputs:
        last[graph.root(out)] = end
    buffers = []
    for t in graph.tensors:
        if t.kind == "input":
            buffers.append(Buffer(f"t{t.index}", t.nbytes, -1, end))
        elif t.kind == "arena" and t.index in first:
            buffers.append(Buffer(f"t{t.index}", t.nbytes, first[t.index], last[t.index]))
    for step, call in enumerate(graph.calls):
        size = workspace.get(call.func, 0)
        if size:
            buffers.append(Buffer(f"ws{step}", size, step, step))
    return buffers


def pack_weights(graph: AotGraph, alignment: int = DEFAULT_ALIGNMENT) -> tuple[bytes, dict[int, int]]:
    """Lays the weight constants out in one blob, each at an aligned offset.

    Returns:
        The blob (little-endian, as every supported MCU is) and tensor index -> offset.
    """
    chunks: list[bytes] = []
    offsets: dict[int, int] = {}
    pos = 0
    for t in graph.weights():
        assert t.value is not None
        data = np.ascontiguousarray(t.value).astype(t.value.dtype.newbyteorder("<"), copy=False).tobytes()
        start = align_up(pos, alignment)
        chunks.append(b"\0" * (start - pos))
        chunks.append(data)
        offsets[t.index] = start
        pos = start + len(data)
    return b"".join(chunks), offsets


def layout_model(graph: AotGraph, workspace: dict[str, int], alignment: int = DEFAULT_ALIGNMENT) -> AotLayout:
    """Plans the arena and the weights blob of ``graph``.

    Raises:
        CompileError: if the plan were ever unsound (a bug, checked every time).
    """
    buffers = arena_buffers(graph, workspace)
    plan = plan_arena(buffers, alignment)
    overlaps = find_overlaps(buffers, plan)
    if overlaps:
        raise CompileError(f"arena plan puts live tensors on the same bytes: {overlaps[:3]}", hint="Report this as a bug.")
    offsets: dict[int, int] = {}
    for t in graph.tensors:
        if t.kind in ("input", "arena", "view"):
            name = f"t{graph.root(t.index)}"
            if name in plan.offsets:
                offsets[t.index] = plan.offsets[name]
    ws = [(plan.offsets.get(f"ws{i}", 0), workspace.get(c.func, 0)) for i, c in enumerate(graph.calls)]
    blob, weight_offsets = pack_weights(graph, alignment)
    logger.info(
        "arena %d bytes (%d without reuse), weights %d bytes",
        plan.arena_bytes,
        plan.total_bytes,
        len(blob),
    )
    return AotLayout(plan, buffers, offsets, weight_offsets, blob, ws)

"""Addresses for every tensor of an :class:`~edgekit.compiler.backends.aot_c.graph.AotGraph`.

Inputs, intermediates, outputs and kernel workspaces share one arena planned
by :func:`edgekit.compiler.backends.aot_c.plan.plan_arena`; weights go into one blob
(``weights.bin``) at aligned offsets. Views share the offset of the tensor
they view.

A weight is stored either **dense** (the kernels read it in place, from
flash) or **bitmask-sparse** (:mod:`edgekit.core.sparse`): ``model.c`` then
decodes it just before the first kernel call that reads it, into an arena
buffer alive only from that call to the last one that reads it, so the RAM
it costs is the largest set of weights decoded at the same time, not all of
them. :func:`choose_encodings` takes sparse only where it makes flash
strictly smaller (see :func:`sparse_pays`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from typing import Collection

import numpy as np

from edgekit.compiler.backends.aot_c.graph import AotGraph, TensorInfo
from edgekit.compiler.backends.aot_c.nn import IN_PLACE
from edgekit.compiler.backends.aot_c.plan import DEFAULT_ALIGNMENT, ArenaPlan, Buffer, align_up, find_overlaps, plan_arena
from edgekit.compiler.backends.aot_c.section import FloatOp, FloatTensor, StoredTensor
from edgekit.core.errors import CompileError
from edgekit.core.sparse import bitmask_bytes, encode_bitmask

__all__ = [
    "AotLayout",
    "StoredWeight",
    "arena_buffers",
    "layout_model",
    "pack_weights",
    "choose_encodings",
    "sparse_pays",
    "DENSE",
    "BITMASK",
    "DECODE_ENTRY_BYTES",
    "float_ops",
]

logger = logging.getLogger(__name__)

#: Encodings of a weight in ``weights.bin``.
DENSE = "dense"
BITMASK = "bitmask"
#: Flash bytes of one row of ``model.c``'s decode table (``ek_decode_t``),
#: counted against each sparse weight when deciding whether sparse pays.
DECODE_ENTRY_BYTES = 16


@dataclass(frozen=True)
class StoredWeight(StoredTensor):
    """How one weight is stored in ``weights.bin``: what the manifest records
    (:class:`~edgekit.compiler.backends.aot_c.section.StoredTensor`: name, TVM
    dtype, shape, :data:`DENSE` or :data:`BITMASK`, offset, dense and stored
    bytes), and what the build needs besides.

    Attributes:
        index: Tensor index in the graph.
        decode_step: For a sparse weight, the kernel call before which it is decoded (-1 if dense).
    """

    index: int
    decode_step: int = -1


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
        storage: Every weight's encoding, in blob order.
        decoded: Sparse weight tensor index -> arena offset of its decoded copy.
        dense_arena_bytes: The arena with every weight stored dense (no decode buffers).
        decode_scratch_bytes: Most bytes of decoded weights alive at one kernel call.
    """

    plan: ArenaPlan
    buffers: list[Buffer]
    tensor_offsets: dict[int, int]
    weight_offsets: dict[int, int]
    weights_blob: bytes
    workspace: list[tuple[int, int]]
    storage: list[StoredWeight]
    decoded: dict[int, int]
    dense_arena_bytes: int
    decode_scratch_bytes: int

    @property
    def arena_bytes(self) -> int:
        """Size of ``ek_arena``."""
        return self.plan.arena_bytes

    @property
    def weight_bytes(self) -> int:
        """Size of ``weights.bin`` as stored."""
        return len(self.weights_blob)

    @property
    def dense_weight_bytes(self) -> int:
        """Size ``weights.bin`` would have with every weight dense (the same packing)."""
        pos = 0
        for w in self.storage:
            pos = align_up(pos, self.plan.alignment) + w.dense_bytes
        return pos

    def sparse_weights(self) -> list[StoredWeight]:
        """The weights stored bitmask-sparse, in blob order."""
        return [w for w in self.storage if w.encoding == BITMASK]


def _uses(graph: AotGraph) -> tuple[dict[int, int], dict[int, int]]:
    """First and last kernel call reading or writing each root tensor."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for step, call in enumerate(graph.calls):
        for arg in call.args:
            root = graph.root(arg)
            first.setdefault(root, step)
            last[root] = step
    return first, last


def _in_place(graph: AotGraph, first: dict[int, int], last: dict[int, int]) -> dict[int, str]:
    """Output tensor -> name of the input buffer it is written over, for the
    in-place kernel calls whose input is not read afterwards."""
    within: dict[int, str] = {}
    for step, call in enumerate(graph.calls):
        args = IN_PLACE.get(call.func) if call.extern else None
        if args is None:
            continue
        src, dst = graph.root(call.args[args[0]]), graph.root(call.args[args[1]])
        kinds = (graph.tensors[src].kind, graph.tensors[dst].kind)
        if kinds[0] in ("input", "arena") and kinds[1] == "arena" and last.get(src) == step and first.get(dst) == step:
            if graph.tensors[dst].nbytes <= graph.tensors[src].nbytes:
                within[dst] = f"t{src}"
    return within


def arena_buffers(graph: AotGraph, workspace: dict[str, int], decoded: Collection[int] = ()) -> list[Buffer]:
    """The buffers the arena must hold, with lifetimes in kernel-call steps.

    A model input lives from before the first call (-1) to the last call
    that reads it: its bytes are reused afterwards (a float input that the
    first kernel quantizes is the largest buffer of many int8 models), so
    the host writes the inputs again before every run, as the runners do
    (docs/protocol.md). An input that is also an output lives to the end.

    The output of a kernel that can work in place (:data:`~edgekit.compiler.backends.aot_c.nn.IN_PLACE`)
    is placed within its input when the input dies at that call.

    ``decoded`` names the weights stored sparse: each gets a buffer (named
    ``t<index>`` like other tensors) from the first call that reads it to the
    last one.
    """
    end = len(graph.calls)
    first, last = _uses(graph)
    for out in graph.outputs:
        last[graph.root(out)] = end
    within = _in_place(graph, first, last)
    buffers = []
    for t in graph.tensors:
        if t.kind == "input":
            buffers.append(Buffer(f"t{t.index}", t.nbytes, -1, last.get(t.index, -1)))
        elif t.kind == "arena" and t.index in first:
            buffers.append(Buffer(f"t{t.index}", t.nbytes, first[t.index], last[t.index], within.get(t.index, "")))
        elif t.kind == "weight" and t.index in decoded:
            if t.index not in first:
                raise CompileError(
                    f"weight '{t.name}' is stored sparse but no kernel reads it", hint="Report this as a bug."
                )
            buffers.append(Buffer(f"t{t.index}", t.nbytes, first[t.index], last[t.index]))
    for step, call in enumerate(graph.calls):
        size = workspace.get(call.func, 0)
        if size:
            buffers.append(Buffer(f"ws{step}", size, step, step))
    return buffers


def _dense(t: TensorInfo) -> bytes:
    assert t.value is not None
    return np.ascontiguousarray(t.value).astype(t.value.dtype.newbyteorder("<"), copy=False).tobytes()


def sparse_pays(t: TensorInfo, alignment: int = DEFAULT_ALIGNMENT) -> bool:
    """Whether weight ``t`` takes strictly less flash bitmask-sparse than dense.

    Both sides are counted as the blob really stores them: rounded up to the
    blob's alignment, and the sparse side also pays its row of the decode
    table (:data:`DECODE_ENTRY_BYTES`).
    """
    assert t.value is not None
    if t.value.size == 0 or t.value.nbytes != t.nbytes:
        return False  # empty, or packed differently from numpy (sub-byte dtypes): keep it as the kernels expect
    sparse = align_up(bitmask_bytes(t.value), alignment) + DECODE_ENTRY_BYTES
    return sparse < align_up(t.nbytes, alignment)


def choose_encodings(graph: AotGraph, alignment: int = DEFAULT_ALIGNMENT) -> set[int]:
    """Indices of the weights to store bitmask-sparse: those a kernel reads
    and for which :func:`sparse_pays`, except the int32 parameter blocks of
    edgekit's C kernels (shapes, requantization constants, gather tables):
    a bitmask saves a few hundred bytes of flash there, for a decode into
    the arena before every run of the layer."""
    first, _ = _uses(graph)
    params = {a for c in graph.calls if c.extern for a in c.args if graph.tensors[a].dtype == "int32"}
    return {t.index for t in graph.weights() if t.index in first and t.index not in params and sparse_pays(t, alignment)}


def pack_weights(
    graph: AotGraph, alignment: int = DEFAULT_ALIGNMENT, sparse: Collection[int] = ()
) -> tuple[bytes, dict[int, int]]:
    """Lays the weight constants out in one blob, each at an aligned offset.

    Args:
        graph: The graph whose weights are packed, in first-use order.
        alignment: Alignment of every weight's offset.
        sparse: Indices of the weights to store bitmask-sparse
            (:func:`edgekit.core.sparse.encode_bitmask`); the others are dense.

    Returns:
        The blob (little-endian, as every supported MCU is) and tensor index -> offset.
    """
    chunks: list[bytes] = []
    offsets: dict[int, int] = {}
    pos = 0
    for t in graph.weights():
        assert t.value is not None
        data = encode_bitmask(t.value) if t.index in sparse else _dense(t)
        start = align_up(pos, alignment)
        chunks.append(b"\0" * (start - pos))
        chunks.append(data)
        offsets[t.index] = start
        pos = start + len(data)
    return b"".join(chunks), offsets


def _scratch_peak(buffers: list[Buffer], decoded: Collection[int], alignment: int) -> int:
    names = {f"t{i}" for i in decoded}
    mine = [b for b in buffers if b.name in names]
    steps = {s for b in mine for s in range(b.first, b.last + 1)}
    return max((sum(align_up(b.size, alignment) for b in mine if b.first <= s <= b.last) for s in steps), default=0)


def float_ops(graph: AotGraph, layout: AotLayout) -> list[FloatOp]:
    """The kernel calls of an int8 model that still read or write float
    activations (the input's quantization, the output's dequantization, an
    op the integer lowering left in float), each with what it costs: the
    bytes of its float tensors and how much smaller the arena would be if
    they were int8 (the arena planned again with those tensors at one byte
    per element). Empty for a model without int8 activations.
    """
    tensors = graph.tensors
    if not any(t.kind == "arena" and t.dtype == "int8" for t in tensors):
        return []
    planned = {b.name for b in layout.buffers}
    report = []
    for step, call in enumerate(graph.calls):
        roots = sorted({graph.root(a) for a in call.args if tensors[a].kind != "weight"})
        floats = [r for r in roots if tensors[r].dtype.startswith("float") and f"t{r}" in planned]
        if not floats:
            continue
        shrunk = {f"t{r}": tensors[r].nbytes // max(_dtype_bytes(tensors[r].dtype), 1) for r in floats}
        buffers = [replace(b, size=shrunk.get(b.name, b.size)) for b in layout.buffers]
        arena = plan_arena(buffers, layout.plan.alignment).arena_bytes
        report.append(FloatOp(
            step=step,
            kernel=call.func,
            tensors=tuple(FloatTensor(tensors[r].name, tensors[r].dtype, tuple(tensors[r].shape), tensors[r].nbytes)
                          for r in floats),
            float_bytes=sum(tensors[r].nbytes for r in floats),
            arena_cost_bytes=max(layout.arena_bytes - arena, 0),
        ))  # fmt: skip
    return report


def _dtype_bytes(dtype: str) -> int:
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return int(digits) // 8 if digits else 1


def layout_model(
    graph: AotGraph, workspace: dict[str, int], alignment: int = DEFAULT_ALIGNMENT, *, sparse_weights: bool = False
) -> AotLayout:
    """Plans the arena and the weights blob of ``graph``.

    Args:
        graph: The model.
        workspace: Kernel name -> workspace bytes.
        alignment: Of every arena and blob offset.
        sparse_weights: Store each weight bitmask-sparse where that makes
            flash smaller (:func:`choose_encodings`); dense otherwise.

    Raises:
        CompileError: if the plan were ever unsound (a bug, checked every time).
    """
    sparse = choose_encodings(graph, alignment) if sparse_weights else set()
    buffers = arena_buffers(graph, workspace, sparse)
    plan = plan_arena(buffers, alignment)
    overlaps = find_overlaps(buffers, plan)
    if overlaps:
        raise CompileError(f"arena plan puts live tensors on the same bytes: {overlaps[:3]}", hint="Report this as a bug.")
    dense_arena = plan_arena(arena_buffers(graph, workspace), alignment).arena_bytes if sparse else plan.arena_bytes
    offsets: dict[int, int] = {}
    for t in graph.tensors:
        if t.kind in ("input", "arena", "view"):
            name = f"t{graph.root(t.index)}"
            if name in plan.offsets:
                offsets[t.index] = plan.offsets[name]
    decoded = {i: plan.offsets[f"t{i}"] for i in sorted(sparse)}
    ws = [(plan.offsets.get(f"ws{i}", 0), workspace.get(c.func, 0)) for i, c in enumerate(graph.calls)]
    blob, weight_offsets = pack_weights(graph, alignment, sparse)
    first, _ = _uses(graph)
    storage = []
    for t in graph.weights():
        assert t.value is not None
        enc = BITMASK if t.index in sparse else DENSE
        storage.append(StoredWeight(
            t.name, t.dtype, t.shape, enc, weight_offsets[t.index], t.nbytes,
            bitmask_bytes(t.value) if enc == BITMASK else t.nbytes, t.index, first[t.index] if enc == BITMASK else -1,
        ))  # fmt: skip
    layout = AotLayout(plan, buffers, offsets, weight_offsets, blob, ws, storage, decoded, dense_arena,
                       _scratch_peak(buffers, sparse, alignment))  # fmt: skip
    logger.info(
        "arena %d bytes (%d without reuse), weights %d bytes (%d dense; %d of %d stored sparse, "
        "decode scratch %d bytes)",
        plan.arena_bytes,
        plan.total_bytes,
        len(blob),
        layout.dense_weight_bytes,
        len(sparse),
        len(storage),
        layout.decode_scratch_bytes,
    )
    return layout

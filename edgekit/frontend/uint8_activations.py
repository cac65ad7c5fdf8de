"""Rewriting uint8 QDQ activations to int8, with no numerical change.

onnxruntime's ``quantize_static`` quantizes activations to uint8 when asked
for ``activation_type=QUInt8`` (the default of its older releases; 1.32's is
QInt8), in both QDQ and QOperator formats, and so do many published int8
models; the compiler's integer lowering reads only int8 activations, so every
chain of such a model stayed in float (issue #14). The two encodings hold the same values:

* ``QuantizeLinear`` to uint8 computes ``clamp(round(x / s) + z, 0, 255)``,
  which is ``clamp(round(x / s) + (z - 128), -128, 127) + 128``: the int8
  quantization with zero point ``z - 128``, plus 128;
* ``DequantizeLinear`` reads ``(q - z) * s``, the same number for the uint8
  ``q`` with ``z`` as for the int8 ``q - 128`` with ``z - 128``.

So :func:`int8_activations` gives every *internal* uint8 activation (a tensor
a ``QuantizeLinear`` writes and only ``DequantizeLinear`` nodes read, directly
or through ops that only move values: QOperator models run ``MaxPool`` and
``Reshape`` on the uint8 tensor itself) the int8 type with zero point
``z - 128``; the model computes bit for bit what it
computed before (dequantized values are identical, so every float result is).
A folded ReLU's zero point 0 becomes -128: still the type's minimum, so the
range it represents, ``[(lo - z) * s, (hi - z) * s]``, is unchanged and the
folded-activation detection of :mod:`edgekit.frontend.qdq_graph` still sees a
lower bound of exactly 0.

A uint8 model input or output keeps its type, so the model's interface does
not change: the rewrite converts at the edge instead. An input becomes
``int8(int16(u) - 128)`` (``Cast``, ``Sub``, ``Cast``: the top bit flipped)
before the int8 chain reads it, and an output the int8 chain writes becomes
``uint8(int16(q) + 128)``; both are exact, so the values a user feeds and
reads are the same.

uint8 weights (``DequantizeLinear`` of a uint8 initializer) become int8 with
zero point ``z - 128``, by the same identity: zero point 128 (symmetric
weights) becomes 0, any other zero point an asymmetric int8 one, which the
integer lowering takes too (:mod:`edgekit.compiler.integer.linear`).

No library does this rewrite (onnxruntime's quantizer chooses the type
before it quantizes), so it is hand-written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Uint8Rewrite", "int8_activations"]

logger = logging.getLogger(__name__)

_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class Uint8Rewrite:
    """What :func:`int8_activations` changed."""

    model: onnx.ModelProto
    #: uint8 activation tensors now int8.
    activations: int = 0
    #: uint8 weight initializers now int8 (zero point z -> z - 128).
    weights: int = 0
    #: uint8 activations left as they are (read by a node that computes
    #: with them other than DequantizeLinear).
    kept: int = 0

    @property
    def modified(self) -> bool:
        return bool(self.activations or self.weights)


def _zp_dtype(node: onnx.NodeProto, inits: dict[str, TensorProto]) -> int | None:
    """The integer type of a QDQ node's zero point: a QuantizeLinear without
    one writes uint8 (or opset 21's ``output_dtype``); None where not known
    at compile time."""
    if len(node.input) > 2 and node.input[2]:
        zp = inits.get(node.input[2])
        return zp.data_type if zp is not None else None
    if node.op_type == "QuantizeLinear":
        return next((a.i for a in node.attribute if a.name == "output_dtype" and a.i), TensorProto.UINT8)
    return TensorProto.UNDEFINED  # a DequantizeLinear without one takes its type from its input


#: Ops that move or select uint8 values without arithmetic: on ``q - 128``
#: they compute their uint8 result minus 128 (``MaxPool``: the maximum is
#: monotone), so the values they pass on can be retyped with them. Pad (its
#: constant would move too), Resize (interpolation rounds) and ops with more
#: than one quantized input are not among them.
_MOVES = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Gather",
                    "GatherElements", "MaxPool", "Identity", "DepthToSpace", "SpaceToDepth"})  # fmt: skip


def _group(start: str, readers: dict[str, list[onnx.NodeProto]]) -> tuple[set[str], bool]:
    """The tensors ``start``'s values reach through :data:`_MOVES` ops, and
    whether every reader of them is such an op (on its data input) or a
    DequantizeLinear."""
    members, todo, closed = {start}, [start], True
    while todo:
        name = todo.pop()
        for u in readers.get(name, []):
            if u.op_type in _MOVES and u.input[0] == name and name not in u.input[1:]:
                outs = u.output if u.op_type == "Split" else u.output[:1]
                todo.extend(o for o in outs if o and o not in members)
                members.update(o for o in outs if o)
            elif u.op_type != "DequantizeLinear" or u.input[0] != name:
                closed = False
    return members, closed


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _uint8_activations(graph: onnx.GraphProto, inits: dict[str, TensorProto]) -> tuple[list[set[str]], int]:
    """The groups of uint8 activations safe to retype (each: a tensor a
    QuantizeLinear writes or a uint8 model input, and the tensors its values
    reach through moves), and how many uint8 activations are kept."""
    readers = _readers(graph)
    outputs = {v.name for v in graph.output}
    inputs = [v.name for v in graph.input if v.name not in inits and v.type.tensor_type.elem_type == TensorProto.UINT8]
    written = [
        n.output[0]
        for n in graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and _zp_dtype(n, inits) == TensorProto.UINT8
    ]
    dequantized = {  # what each DequantizeLinear reads, uint8 where it says so
        n.input[0]: _zp_dtype(n, inits)
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] not in inits
    }
    groups: list[set[str]] = []
    for name in written + inputs:
        members, closed = _group(name, readers)
        readable = all(dequantized.get(m, TensorProto.UINT8) in (TensorProto.UINT8, TensorProto.UNDEFINED) for m in members)
        if closed and readable and not (name in inputs and members & outputs):
            groups.append(members)
    uint8 = set(written) | set(inputs) | {t for t, dtype in dequantized.items() if dtype == TensorProto.UINT8}
    return groups, len(uint8 - set().union(*groups))


def _edge(retype: "_Retyper", source: str, target: str, delta: int, dtype: int) -> list[onnx.NodeProto]:
    """``target = dtype(int16(source) + delta)``: the exact uint8 <-> int8 conversion at a model input or output."""
    wide = retype.free(source + "_i16")
    moved = retype.free(source + "_moved")
    step = retype.add(f"int16_{delta:+d}".replace("+", "plus").replace("-", "minus"), np.array(delta, np.int16))
    return [
        helper.make_node("Cast", [source], [wide], retype.free(wide), to=TensorProto.INT16),
        helper.make_node("Add", [wide, step], [moved], retype.free(moved)),
        helper.make_node("Cast", [moved], [target], retype.free(target + "_cast"), to=dtype),
    ]


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for io in (node.input, node.output):
            for i, name in enumerate(io):
                if name == old:
                    io[i] = new


def _convert_edges(graph: onnx.GraphProto, groups: list[set[str]], retype: "_Retyper") -> set[str]:
    """Puts the exact conversions between the model's uint8 inputs/outputs and
    the int8 tensors inside; returns every tensor to retype (the groups, with
    the boundary tensors replaced by their int8 names inside the graph)."""
    inputs = {v.name for v in graph.input}
    outputs = {v.name for v in graph.output}
    first: list[onnx.NodeProto] = []
    last: list[onnx.NodeProto] = []
    safe: set[str] = set()
    for members in groups:
        for name in sorted(members & (inputs | outputs)):
            inner = retype.free(name + "_s8")
            _rename(graph, name, inner)
            if name in inputs:
                first += _edge(retype, name, inner, -128, TensorProto.INT8)
            else:
                last += _edge(retype, inner, name, 128, TensorProto.UINT8)
            members = (members - {name}) | {inner}
        safe |= members
    if first or last:
        nodes = first + list(graph.node) + last
        del graph.node[:]
        graph.node.extend(nodes)
    return safe


class _Retyper:
    """Makes int8 zero points (``z - 128``) next to the uint8 ones."""

    def __init__(self, graph: onnx.GraphProto, inits: dict[str, TensorProto]) -> None:
        self.graph = graph
        self.inits = inits
        self.made: dict[str, str] = {}
        self.taken: set[str] = set()

    def zero_point(self, node: onnx.NodeProto) -> None:
        old = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        if old not in self.made:
            z = numpy_helper.to_array(self.inits[old]).astype(np.int16) if old else np.array(0, np.int16)
            self.made[old] = self.add((old or node.output[0] + "_zero_point") + "_s8", (z - 128).astype(np.int8))
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = self.made[old]
        for a in node.attribute:
            if a.name == "output_dtype" and a.i:
                a.i = TensorProto.INT8

    def free(self, name: str) -> str:
        """``name``, or a name like it that no tensor or node of the graph has yet."""
        if not self.taken:
            self.taken = {o for n in self.graph.node for o in (n.name, *n.input, *n.output)} | set(self.inits)
            self.taken |= {v.name for v in (*self.graph.input, *self.graph.output)}
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name

    def add(self, name: str, value: np.ndarray) -> str:
        """A new initializer holding ``value``, under ``name`` or a free name like it."""
        name = self.free(name)
        tensor = numpy_helper.from_array(value, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name


def _retype_value_info(graph: onnx.GraphProto, names: set[str]) -> None:
    for vi in graph.value_info:
        if vi.name in names and vi.type.tensor_type.elem_type == TensorProto.UINT8:
            vi.type.tensor_type.elem_type = TensorProto.INT8


def _int8_weights(graph: onnx.GraphProto, retype: _Retyper) -> tuple[int, set[str]]:
    """uint8 weights become int8 with zero point ``z - 128`` (new
    initializers: the simplifier shares equal ones between layers); how
    many, and the names the rewritten nodes no longer read."""
    inits, count = retype.inits, 0
    old: set[str] = set()
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        w = inits.get(node.input[0])
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if w is None or w.data_type != TensorProto.UINT8 or (zp is not None and zp.data_type != TensorProto.UINT8):
            continue
        z = numpy_helper.to_array(zp).astype(np.int16) if zp is not None else np.array(0, np.int16)
        old |= {w.name} | ({zp.name} if zp is not None else set())
        q = (numpy_helper.to_array(w).astype(np.int16) - 128).astype(np.int8)
        node.input[0] = retype.add(w.name + "_s8", q)
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = retype.add((zp.name if zp is not None else w.name + "_zero_point") + "_s8", (z - 128).astype(np.int8))
        count += 1
    return count, old


def _drop_unused_initializers(graph: onnx.GraphProto, names: set[str]) -> None:
    used = {i for n in graph.node for i in n.input} | {v.name for v in graph.output}
    keep = [t for t in graph.initializer if t.name not in names or t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def int8_activations(model: onnx.ModelProto) -> Uint8Rewrite:
    """A copy of a QDQ model with its uint8 activations and weights in int8,
    converted exactly at uint8 model inputs and outputs; see the module docstring."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    groups, kept = _uint8_activations(graph, inits)
    retype = _Retyper(graph, inits)
    safe = _convert_edges(graph, groups, retype)
    old_zps: set[str] = set()
    for node in graph.node:
        if node.op_type in _QDQ and (node.output[0] if node.op_type == "QuantizeLinear" else node.input[0]) in safe:
            if len(node.input) > 2 and node.input[2]:
                old_zps.add(node.input[2])
            retype.zero_point(node)
    _retype_value_info(graph, safe)
    weights, old_weights = _int8_weights(graph, retype)
    _drop_unused_initializers(graph, old_zps | old_weights)
    if safe or weights or kept:
        logger.info("uint8 -> int8: %d activations, %d weights; %d uint8 activations kept", len(safe), weights, kept)
    return Uint8Rewrite(out, activations=len(safe), weights=weights, kept=kept)

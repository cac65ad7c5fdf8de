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

uint8 tensors at the model's boundary (a uint8 model input or output) keep
their type and stay uint8: the chains reading or writing them stay in float.
uint8 weights (``DequantizeLinear`` of a uint8 initializer) become int8 only
where their zero point is 128 everywhere, i.e. where the int8 weights are
symmetric (zero point 0); the integer lowering takes no other weights, so
others are left as they are.

No library does this rewrite (onnxruntime's quantizer chooses the type
before it quantizes), so it is hand-written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

__all__ = ["Uint8Rewrite", "int8_activations"]

logger = logging.getLogger(__name__)

_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class Uint8Rewrite:
    """What :func:`int8_activations` changed."""

    model: onnx.ModelProto
    #: uint8 activation tensors now int8.
    activations: int = 0
    #: uint8 weight initializers now int8 (zero point 128 -> 0).
    weights: int = 0
    #: uint8 activations left as they are (model inputs/outputs, or read by
    #: a node that computes with them other than DequantizeLinear).
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


def _uint8_activations(graph: onnx.GraphProto, inits: dict[str, TensorProto]) -> tuple[set[str], int]:
    """The uint8 activations safe to retype, and how many are kept."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    boundary = {v.name for v in graph.input} | {v.name for v in graph.output}
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
    safe: set[str] = set()
    for name in written:
        members, closed = _group(name, readers)
        readable = all(dequantized.get(m, TensorProto.UINT8) in (TensorProto.UINT8, TensorProto.UNDEFINED) for m in members)
        if closed and readable and not members & boundary:
            safe |= members
    uint8 = set(written) | {t for t, dtype in dequantized.items() if dtype == TensorProto.UINT8}
    return safe, len(uint8 - safe)


class _Retyper:
    """Makes int8 zero points (``z - 128``) next to the uint8 ones."""

    def __init__(self, graph: onnx.GraphProto, inits: dict[str, TensorProto]) -> None:
        self.graph = graph
        self.inits = inits
        self.made: dict[str, str] = {}

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

    def add(self, name: str, value: np.ndarray) -> str:
        """A new initializer holding ``value``, under ``name`` or a free name like it."""
        while name in self.inits:
            name += "_"
        tensor = numpy_helper.from_array(value, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name


def _retype_value_info(graph: onnx.GraphProto, names: set[str]) -> None:
    for vi in graph.value_info:
        if vi.name in names and vi.type.tensor_type.elem_type == TensorProto.UINT8:
            vi.type.tensor_type.elem_type = TensorProto.INT8


def _int8_weights(graph: onnx.GraphProto, retype: _Retyper) -> tuple[int, set[str]]:
    """uint8 weights with zero point 128 everywhere become symmetric int8
    (new initializers: the simplifier shares equal ones between layers);
    how many, and the names the rewritten nodes no longer read."""
    inits, count = retype.inits, 0
    old: set[str] = set()
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3 or not node.input[2]:
            continue
        w, zp = inits.get(node.input[0]), inits.get(node.input[2])
        if w is None or zp is None or w.data_type != TensorProto.UINT8 or zp.data_type != TensorProto.UINT8:
            continue
        z = numpy_helper.to_array(zp)
        if np.any(z != 128):
            continue
        old |= {w.name, zp.name}
        q = (numpy_helper.to_array(w).astype(np.int16) - 128).astype(np.int8)
        node.input[0] = retype.add(w.name + "_s8", q)
        node.input[2] = retype.add(zp.name + "_s8", np.zeros_like(z, dtype=np.int8))
        count += 1
    return count, old


def _drop_unused_initializers(graph: onnx.GraphProto, names: set[str]) -> None:
    used = {i for n in graph.node for i in n.input} | {v.name for v in graph.output}
    keep = [t for t in graph.initializer if t.name not in names or t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def int8_activations(model: onnx.ModelProto) -> Uint8Rewrite:
    """A copy of a QDQ model with its internal uint8 activations (and its
    symmetric uint8 weights) in int8; see the module docstring."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    safe, kept = _uint8_activations(graph, inits)
    retype = _Retyper(graph, inits)
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

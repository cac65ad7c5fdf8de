"""What a legalization rule reads and returns.

A rule (:data:`Rule`) looks at one node with a :class:`Context` of the graph
(static shapes, types, small constants, which values are used) and answers
None (TVM converts the node right), :data:`EXPAND` (replace it by its ONNX
function body), a :class:`Rewrite`, or the text of a refusal naming the
attribute. :mod:`edgekit.frontend.legalize` runs the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["Context", "Rewrite", "Rule", "EXPAND", "FLOATS", "attr", "text_attr", "rank", "elem", "scalar", "build_context"]

_T = onnx.TensorProto
EXPAND = "expand"
#: Floating-point element types.
FLOATS = (_T.FLOAT, _T.FLOAT16, _T.DOUBLE, _T.BFLOAT16)


@dataclass
class Context:
    """What rules may read about the graph."""

    shapes: dict[str, tuple[int, ...] | None]
    types: dict[str, onnx.TypeProto]
    consts: dict[str, np.ndarray]
    used: set[str]
    opset: int
    #: Op type of the node producing each value.
    producers: dict[str, str] = field(default_factory=dict)

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        if index < len(node.input) and node.input[index] in self.consts:
            return self.consts[node.input[index]]
        return None


@dataclass
class Rewrite:
    """Nodes (and initializers) that replace one node."""

    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto] = field(default_factory=list)


#: A rule returns None (TVM converts the node right), EXPAND, a Rewrite, or
#: the text of a refusal naming the attribute.
Rule = Callable[[onnx.NodeProto, Context], "str | Rewrite | None"]


def attr(node: onnx.NodeProto, name: str, default=None):
    """The value of attribute ``name`` of ``node`` (``default`` when unset)."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def rank(ctx: Context, name: str) -> int | None:
    """The rank of value ``name`` where its shape is static."""
    shape = ctx.shape(name)
    return None if shape is None else len(shape)


def text_attr(node: onnx.NodeProto, name: str, default: str) -> str:
    """A string attribute as ``str`` (ONNX stores them as bytes)."""
    value = attr(node, name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def elem(ctx: Context, name: str) -> int | None:
    """The ONNX element type of value ``name`` (None where unknown)."""
    t = ctx.types.get(name)
    return t.tensor_type.elem_type if t is not None and t.HasField("tensor_type") else None


def scalar(ctx: Context, like: str, value: float, name: str) -> onnx.TensorProto:
    """A 0-d initializer ``name`` holding ``value`` in the element type of ``like``."""
    dtype = helper.tensor_dtype_to_np_dtype(elem(ctx, like) or _T.FLOAT)
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def build_context(model: onnx.ModelProto, opset: int) -> Context:
    """The :class:`Context` of ``model``'s main graph (constants up to 4096 elements)."""
    graph = model.graph
    shapes: dict[str, tuple[int, ...] | None] = {}
    types: dict[str, onnx.TypeProto] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        types[vi.name] = vi.type
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            shapes[vi.name] = tuple(dims) if all(d >= 0 for d in dims) else None
    consts = {}
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
        types[init.name] = helper.make_tensor_type_proto(init.data_type, list(init.dims))
        if np.prod(init.dims, dtype=np.int64) <= 4096:
            consts[init.name] = numpy_helper.to_array(init)
    used = {o.name for o in graph.output}
    producers = {}
    for node in graph.node:
        used.update(node.input)
        producers.update((o, node.op_type) for o in node.output if o)
    return Context(shapes, types, consts, used, opset, producers)

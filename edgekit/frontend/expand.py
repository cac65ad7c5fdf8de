"""Expanding an ONNX operator into its ONNX *function* body.

Many newer operators (Attention, RotaryEmbedding, LayerNormalization, Celu,
CenterCropPad, ...) are defined by the ONNX standard as a function of simpler
operators; the schema carries that body (``onnx.defs``). Replacing a node by
its body gives TVM's importer operators it converts correctly, with the
standard's own semantics. This is how ONNX's ``*_expanded`` node tests are
built, and those pass where the fused converter is missing or wrong.
"""

from __future__ import annotations

import logging
from typing import Callable

import onnx
from onnx import AttributeProto, FunctionProto, NodeProto

__all__ = ["function_body", "expand_node", "has_function", "copy_node"]

logger = logging.getLogger(__name__)


def _schema(op_type: str, opset: int, domain: str = "") -> onnx.defs.OpSchema | None:
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return None


def has_function(op_type: str, opset: int, domain: str = "") -> bool:
    """Whether the standard defines ``op_type`` (at ``opset``) as a function."""
    schema = _schema(op_type, opset, domain)
    return bool(schema and (schema.function_opset_versions or schema.context_dependent_function_opset_versions))


def function_body(node: NodeProto, opset: int, input_types: list[onnx.TypeProto]) -> FunctionProto | None:
    """The function body of ``node`` for a model at ``opset`` (None if it has none).

    Context-dependent bodies (built from the node's attributes and input
    types) need ``input_types``; every input type must be known.
    """
    schema = _schema(node.op_type, opset, node.domain)
    if schema is None:
        return None
    static = [v for v in schema.function_opset_versions if v <= opset]
    dependent = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    proto = FunctionProto()
    if dependent and (not static or max(dependent) >= max(static)):
        with_defaults = NodeProto()
        with_defaults.CopyFrom(node)
        _add_default_attributes(with_defaults, schema)
        text = schema.get_context_dependent_function_with_opset_version(
            max(dependent), with_defaults.SerializeToString(), [t.SerializeToString() for t in input_types]
        )
        if not text:
            return None
        proto.ParseFromString(text)
        return proto
    if static:
        proto.ParseFromString(schema.get_function_with_opset_version(max(static)))
        return proto
    return None


def _add_default_attributes(node: NodeProto, schema: onnx.defs.OpSchema) -> None:
    present = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in present and attr.default_value and attr.default_value.name:
            node.attribute.append(attr.default_value)


def expand_node(node: NodeProto, body: FunctionProto, prefix: str, opset: int) -> list[NodeProto]:
    """``node`` replaced by the nodes of ``body``: inputs and outputs renamed
    to the node's, internal values prefixed, attribute references resolved
    (unset optional attributes take the schema default)."""
    schema = _schema(node.op_type, opset, node.domain)
    attrs = {a.name: a for a in node.attribute}
    if schema is not None:
        for name, attr in schema.attributes.items():
            if name not in attrs and attr.default_value and attr.default_value.name:
                attrs[name] = attr.default_value
    names: dict[str, str] = {}
    for i, name in enumerate(body.input):
        names[name] = node.input[i] if i < len(node.input) else ""
    for i, name in enumerate(body.output):
        if i < len(node.output) and node.output[i]:
            names[name] = node.output[i]

    def rename(name: str) -> str:
        if name == "":
            return ""
        return names.get(name, prefix + name)

    return [copy_node(n, rename, attrs, prefix) for n in body.node]


def copy_node(inner: NodeProto, rename: Callable[[str], str], attrs: dict[str, AttributeProto], prefix: str) -> NodeProto:
    """A copy of ``inner`` with values renamed by ``rename`` (subgraphs too), its
    name prefixed, and attribute references resolved from ``attrs``."""
    out = NodeProto()
    out.CopyFrom(inner)
    del out.input[:]
    del out.output[:]
    del out.attribute[:]
    out.input.extend(rename(n) for n in inner.input)
    out.output.extend(rename(n) for n in inner.output)
    if inner.name:
        out.name = prefix + inner.name
    for attr in inner.attribute:
        if attr.ref_attr_name:
            if attr.ref_attr_name in attrs:
                new = AttributeProto()
                new.CopyFrom(attrs[attr.ref_attr_name])
                new.name = attr.name
                out.attribute.append(new)
            continue
        new = AttributeProto()
        new.CopyFrom(attr)
        if attr.type == AttributeProto.GRAPH:
            _rename_subgraph(new.g, rename, attrs, prefix)
        out.attribute.append(new)
    return out


def _rename_subgraph(graph: onnx.GraphProto, rename: Callable[[str], str], attrs: dict[str, AttributeProto], prefix: str) -> None:
    local: dict[str, str] = {}
    for vi in [*graph.input, *graph.output]:
        local[vi.name] = vi.name = prefix + vi.name
    for init in graph.initializer:
        local[init.name] = init.name = prefix + init.name

    def inner(name: str) -> str:
        return local.get(name) or rename(name)

    nodes = [copy_node(n, inner, attrs, prefix) for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes)

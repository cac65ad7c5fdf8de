"""Elementwise chains of one tensor, quantized only at their ends.

Hard-swish exported as ``Add(+3) -> Clip -> Mul(x) -> Div(6)``, GELU as
``Div -> Erf -> Add -> Mul(x) -> Mul(0.5)``, SiLU as ``x * Sigmoid(x)``: each
is a function of one tensor, yet onnxruntime's quantizer puts an int8 rounding
after every op it knows (``Add``, ``Mul``, ``Sigmoid``). Those inner roundings
add noise, and where an inner step is finer than the input's (hard-swish's
``x + 3`` requantized to 6/255) they amplify a 1-LSB difference of the input
into several LSB of the output.

A chain's value depends on 256 possible input values, so the integer lowering
(:mod:`edgekit.compiler.integer.lut`) turns ``DequantizeLinear -> float chain
-> QuantizeLinear`` into one lookup table either way. This module finds the
chains in the fp32 model so that :func:`edgekit.compress.quantize.quantize`
can leave their nodes out of ``quantize_static``: the chain's source stays
quantized (by its producer), its output is quantized by its consumers, and no
rounding sits inside.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Collection, Iterable

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["UnaryChain", "CHAIN_OPS", "find_unary_chains", "chain_exclusions", "unquantized_chains"]

logger = logging.getLogger(__name__)

#: ONNX ops a chain may contain: elementwise, and each one the integer
#: lowering's table builder evaluates (``lut.ELEMENTWISE`` and its clip /
#: leaky-relu cases, after TVM's ONNX import). Constant operands must be
#: scalars.
CHAIN_OPS = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Neg", "Abs", "Sqrt", "Exp", "Log", "Tanh", "Sigmoid",
        "Relu", "Erf", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Softplus", "Mish", "Identity",
    }
)  # fmt: skip


@dataclass(frozen=True)
class UnaryChain:
    """Elementwise nodes that together compute functions of one tensor.

    Attributes:
        source: The tensor every node is a function of.
        nodes: The chain's node names, in graph order.
        outputs: Tensors of the chain read outside it (by other nodes or as
            graph outputs); each becomes one table after quantization.
    """

    source: str
    nodes: tuple[str, ...]
    outputs: tuple[str, ...]


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def find_unary_chains(model: onnx.ModelProto, min_nodes: int = 2) -> list[UnaryChain]:
    """The elementwise chains of ``model`` with at least ``min_nodes`` nodes.

    A node belongs to the chain of tensor ``s`` when its op is in
    :data:`CHAIN_OPS`, every constant operand is a scalar float, and every
    other operand is ``s`` itself or computed from ``s`` alone by nodes of the
    chain. The chain's interior (tensors only its own nodes read) never needs
    to be materialized; its outputs do.

    Args:
        model: An fp32 model in topological order (as the loader leaves it).
        min_nodes: Smallest chain reported; a single op is quantized at its
            input and output anyway.
    """
    graph = model.graph
    consts = _constants(model)
    root: dict[str, str] = {}  # tensor computed by a chain node -> its source
    members: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type not in CHAIN_OPS or len(node.output) != 1:
            continue
        sources: set[str] = set()
        ok = True
        for name in node.input:
            if not name:
                continue
            if name in consts:
                value = consts[name]
                ok = ok and value.size == 1 and value.dtype.kind == "f"
            else:
                sources.add(root.get(name, name))
        if not ok or len(sources) != 1:
            continue
        source = sources.pop()
        root[node.output[0]] = source
        members.setdefault(source, []).append(node)

    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.name)
    graph_outputs = {o.name for o in graph.output}
    chains = []
    for source, nodes in members.items():
        if len(nodes) < min_nodes:
            continue
        names = {n.name for n in nodes}
        outputs = tuple(
            n.output[0] for n in nodes if n.output[0] in graph_outputs or readers.get(n.output[0], set()) - names
        )
        chains.append(UnaryChain(source, tuple(n.name for n in nodes), outputs))
    return chains


def _quantized_tensors(model: onnx.ModelProto, op_types: Collection[str], skip: set[str]) -> set[str]:
    """Tensors onnxruntime's QDQ quantizer will quantize: every input and
    output of a node it quantizes (an op it knows, not excluded).

    A prediction: a data-movement op such as MaxPool whose input is not
    quantized yet gets a QuantizeLinear after it, not before (PP-OCR cls's
    last hard-swish); the integer lowering takes such a pool into the table.
    """
    out: set[str] = set()
    for node in model.graph.node:
        if node.op_type in op_types and node.name not in skip:
            out.update(t for t in (*node.input, *node.output) if t)
    return out


def chain_exclusions(
    model: onnx.ModelProto, op_types: Collection[str], excluded: Iterable[str] = ()
) -> tuple[list[UnaryChain], list[str]]:
    """The chains to quantize only at their ends, and the nodes to exclude for that.

    A chain qualifies when, with all of its nodes excluded, its source is
    still quantized by another node (its producer, say a Conv) and so is every
    output (by a consumer; a graph output is not); otherwise excluding it would leave a float
    island where there was int8 before, and it is left as onnxruntime
    quantizes it. A chain with a node the user excluded is left alone too.

    Args:
        model: The fp32 model (node names unique).
        op_types: The op types ``quantize_static`` quantizes.
        excluded: Nodes excluded already (by name).

    Returns:
        The chains and the names of their nodes, in graph order.
    """
    user = set(excluded)
    candidates = [c for c in find_unary_chains(model) if not user & set(c.nodes)]
    skip = user | {n for c in candidates for n in c.nodes}
    quantized = _quantized_tensors(model, op_types, skip)
    chains = [c for c in candidates if c.source in quantized and all(o in quantized for o in c.outputs)]
    for c in candidates:
        if c not in chains:
            logger.debug("chain of %s (%s) left to onnxruntime: its ends would not be quantized", c.source, ", ".join(c.nodes))
    names = {n for c in chains for n in c.nodes}
    return chains, [n.name for n in model.graph.node if n.name in names]


def unquantized_chains(qmodel: onnx.ModelProto, chains: Iterable[UnaryChain]) -> list[UnaryChain]:
    """The chains whose source did not end up quantized in ``qmodel`` (a QDQ
    model): each stays a float computation. Checked after quantizing, since
    :func:`chain_exclusions` predicts what onnxruntime's quantizer does."""
    quantized = {n.input[0] for n in qmodel.graph.node if n.op_type == "QuantizeLinear"}
    return [c for c in chains if c.source not in quantized]

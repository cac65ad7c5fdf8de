"""Static analysis of a prepared model: MACs, parameters, activation memory.

:func:`analyze` reads a :class:`~edgekit.frontend.loader.PreparedModel` and
returns a :class:`ModelReport` — what ``edgekit inspect`` prints. Nothing is
executed: every number comes from the graph, its inferred shapes and its
initializers.

MACs are multiply-accumulates of the contractions only (convolutions, matrix
products, recurrent cells); element-wise ops, normalization and pooling count
as 0, and bias additions are not MACs. Each MAC-bearing op type has a handler
in :data:`MAC_HANDLERS`. A handler that lacks a shape counts 0 and adds a
warning to the report instead of failing. See ``docs/macs.md`` for the
formulas and two hand-checked models.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper

from edgekit.core.profiles import Board
from edgekit.core.tensors import TensorSpec
from edgekit.frontend.support import walk_nodes
from edgekit.frontend.loader import PreparedModel
from edgekit.frontend.shapes import ShapeTable, ShapeUnknown

__all__ = [
    "LayerInfo",
    "BoardFit",
    "ModelReport",
    "analyze",
    "MAC_HANDLERS",
    "MacHandler",
    "ShapeTable",
    "GRAPH_WALK",
]

logger = logging.getLogger(__name__)

_DEFAULT_DOMAINS = ("", "ai.onnx")

# Input positions that take shapes, axes or indices rather than data: an
# integer initializer used only in such positions is a constant of the graph's
# plumbing, not a weight.
_INDEX_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "Pad": (1, 3),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "Unsqueeze": (1,),
    "Squeeze": (1,),
    "Split": (1,),
    "TopK": (1,),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "OneHot": (1,),
    "Gather": (1,),
    "GatherElements": (1,),
    "GatherND": (1,),
    "ScatterND": (1,),
    "ScatterElements": (1,),
    "CumSum": (1,),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
    "ReduceL1": (1,),
    "ReduceL2": (1,),
    "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,),
}


#: How :func:`analyze` finds peak activation memory (see :func:`_peak_activations`).
GRAPH_WALK = (
    "ONNX graph walk: every node output its own buffer, from its node to its last reader (no fusion, no "
    "views); an upper bound of what a compiler plans"
)


# --------------------------------------------------------------------------- #
# Report dataclasses
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class LayerInfo:
    """One node of the main graph.

    Attributes:
        name: Node name (``<Op #i>`` when the node has none).
        op: Op type (``domain::Op`` for custom domains).
        output_shape: Shape of the first output, or ``None`` if unknown.
        macs: Multiply-accumulates of this node.
        params: Weight elements this node reads from initializers.
    """

    name: str
    op: str
    output_shape: tuple[int, ...] | None
    macs: int
    params: int

    def to_json(self) -> dict[str, Any]:
        """JSON form used in ``inspect --json``."""
        shape = None if self.output_shape is None else list(self.output_shape)
        return {"name": self.name, "op": self.op, "output_shape": shape, "macs": self.macs, "params": self.params}


@dataclass(frozen=True)
class BoardFit:
    """Whether the model's weights and activations fit a board's memories.

    A board memory of 0 means unknown / not limited and always fits.

    Attributes:
        planner: How ``needed_ram`` was found. :func:`analyze` walks the
            ONNX graph (:data:`GRAPH_WALK`); for microcontroller boards
            ``edgekit inspect`` replaces the fit with compile's own arena plan
            (:mod:`edgekit.compiler.backends.aot_c.memory`).
        ram_label: What ``needed_ram`` is, for people.
        flash_label: What ``needed_flash`` is checked against, for people.
    """

    board: str
    ram_bytes: int
    flash_bytes: int
    needed_ram: int
    needed_flash: int
    planner: str = ""
    ram_label: str = "RAM (peak activations)"
    flash_label: str = "flash (weights)"

    @property
    def ram_ok(self) -> bool:
        """Peak activations fit in RAM."""
        return self.ram_bytes == 0 or self.needed_ram <= self.ram_bytes

    @property
    def flash_ok(self) -> bool:
        """Weights fit in flash."""
        return self.flash_bytes == 0 or self.needed_flash <= self.flash_bytes

    def to_json(self) -> dict[str, Any]:
        """JSON form used in ``inspect --json`` under ``fits``."""
        return {
            "board": self.board,
            "ram_ok": self.ram_ok,
            "flash_ok": self.flash_ok,
            "ram_bytes": self.ram_bytes,
            "flash_bytes": self.flash_bytes,
            "needed_ram": self.needed_ram,
            "needed_flash": self.needed_flash,
            "planner": self.planner or GRAPH_WALK,
        }


@dataclass
class ModelReport:
    """Everything :func:`analyze` found out about a model.

    Attributes:
        name: Short model name.
        source: File the model came from, if any.
        opset: Default-domain opset.
        inputs: Model inputs.
        outputs: Model outputs.
        ops: Op type -> number of nodes (subgraphs included).
        params: Weight elements (each initializer counted once).
        weight_bytes: Bytes of those weights.
        macs: Total multiply-accumulates of one inference.
        layers: One entry per main-graph node, in execution order.
        peak_activation_bytes: Estimated peak of live activations.
        peak_activation_node: Node during which that peak occurs.
        notes: What model preparation changed (from the loader).
        warnings: What could not be counted, and why.
        fits: Memory fit on a board, when one was given.
    """

    name: str
    source: str
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ops: dict[str, int]
    params: int
    weight_bytes: int
    macs: int
    layers: list[LayerInfo]
    peak_activation_bytes: int
    peak_activation_node: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fits: BoardFit | None = None

    @property
    def macs_by_op(self) -> dict[str, int]:
        """MACs summed per op type, largest first (ops with 0 MACs left out)."""
        totals: Counter[str] = Counter()
        for layer in self.layers:
            if layer.macs:
                totals[layer.op] += layer.macs
        return dict(totals.most_common())

    def to_json(self) -> dict[str, Any]:
        """JSON form printed by ``edgekit inspect --json``."""
        data: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "opset": self.opset,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "ops": dict(self.ops),
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "macs": self.macs,
            "macs_by_op": self.macs_by_op,
            "peak_activation_bytes": self.peak_activation_bytes,
            "peak_activation_node": self.peak_activation_node,
            "layers": [layer.to_json() for layer in self.layers],
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }
        if self.fits is not None:
            data["fits"] = self.fits.to_json()
        return data


def _shapes_with_inference(model: onnx.ModelProto, warnings: list[str]) -> ShapeTable:
    """Shapes of the model; runs shape inference again if a node output lacks one."""
    shapes = ShapeTable(model.graph)
    missing = [o for n in model.graph.node for o in n.output if o and not shapes.known(o)]
    if not missing:
        return shapes
    logger.debug("%d node outputs lack a static shape; running shape inference", len(missing))
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is best-effort here; unknown shapes become warnings
        warnings.append(f"shape inference failed ({type(exc).__name__}); some sizes are unknown")
        return shapes
    return ShapeTable(inferred.graph)


# --------------------------------------------------------------------------- #
# MAC handlers: one per op type, keyed like the ops histogram
# --------------------------------------------------------------------------- #

MacHandler = Callable[[onnx.NodeProto, ShapeTable], int]


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _conv_macs_at(weight_index: int) -> MacHandler:
    def handler(node: onnx.NodeProto, shapes: ShapeTable) -> int:
        # W is [Cout, Cin/groups, k...]; every output element needs Cin/groups*prod(k)
        # MACs. Strides and dilations are already in the output shape.
        out = shapes.get(node.output[0])
        w = shapes.get(node.input[weight_index])
        if len(w) < 2:
            raise ValueError(f"weight of rank {len(w)}")
        return math.prod(out) * math.prod(w[1:])

    return handler


def _conv_transpose_macs(node: onnx.NodeProto, shapes: ShapeTable) -> int:
    # W is [Cin, Cout/groups, k...]: every input element is scattered into
    # Cout/groups*prod(k) outputs, one MAC each.
    x = shapes.get(node.input[0])
    w = shapes.get(node.input[1])
    if len(w) < 2:
        raise ValueError(f"weight of rank {len(w)}")
    return math.prod(x) * math.prod(w[1:])


def _gemm_macs(node: onnx.NodeProto, shapes: ShapeTable) -> int:
    a = shapes.get(node.input[0])
    b = shapes.get(node.input[1])
    if len(a) != 2 or len(b) != 2:
        raise ValueError(f"Gemm operands of rank {len(a)} and {len(b)}")
    m, k = (a[1], a[0]) if _attr(node, "transA", 0) else a
    n = b[0] if _attr(node, "transB", 0) else b[1]
    return m * k * n


def _matmul_macs_at(a_index: int, b_index: int) -> MacHandler:
    def handler(node: onnx.NodeProto, shapes: ShapeTable) -> int:
        a = shapes.get(node.input[a_index])
        b = shapes.get(node.input[b_index])
        # numpy.matmul semantics: 1-D operands are promoted to matrices.
        if len(a) == 1:
            a = (1, a[0])
        if len(b) == 1:
            b = (b[0], 1)
        batch = np.broadcast_shapes(a[:-2], b[:-2])
        return math.prod(batch) * a[-2] * a[-1] * b[-1]

    return handler


def _einsum_macs(node: onnx.NodeProto, shapes: ShapeTable) -> int:
    """MACs of evaluating the einsum left to right, two operands at a time.

    Each pairwise step costs the product of the sizes of every index either
    operand carries (the loop nest of a naive contraction). A single operand
    (transpose, trace, reduction) costs 0.
    """
    equation = _attr(node, "equation", "")
    if isinstance(equation, bytes):
        equation = equation.decode()
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    operand_shapes = [shapes.get(name) for name in node.input]
    if len(terms) != len(operand_shapes):
        raise ValueError(f"equation '{equation}' has {len(terms)} operands, node has {len(operand_shapes)}")
    ellipsis_rank = max(
        (len(s) - len(t.replace("...", "")) for t, s in zip(terms, operand_shapes) if "..." in t), default=0
    )
    sizes: dict[str, int] = {}
    operand_letters: list[list[str]] = []
    for term, shape in zip(terms, operand_shapes):
        letters = _einsum_letters(term, len(shape), ellipsis_rank)
        for letter, dim in zip(letters, shape):
            # a broadcast dimension of size 1 takes the other operand's size
            sizes[letter] = max(sizes.get(letter, 1), dim)
        operand_letters.append(letters)
    if arrow:
        out_letters = set(_einsum_letters(rhs, len(rhs.replace("...", "")) + ellipsis_rank, ellipsis_rank))
    else:  # implicit output: the letters seen once, plus the ellipsis
        counts = Counter(ch for letters in operand_letters for ch in letters)
        out_letters = {ch for ch, c in counts.items() if c == 1 or ch.startswith(".")}
    macs = 0
    current = operand_letters[0]
    for i, nxt in enumerate(operand_letters[1:], start=1):
        union = list(dict.fromkeys(current + nxt))
        macs += math.prod(sizes[ch] for ch in union)
        later = {ch for letters in operand_letters[i + 1 :] for ch in letters} | out_letters
        current = [ch for ch in union if ch in later]
    return macs


def _einsum_letters(term: str, rank: int, ellipsis_rank: int) -> list[str]:
    """Index letters of one einsum term. Ellipsis dimensions become ``.0``,
    ``.1``... aligned from the right (numpy broadcasting), so an operand with
    fewer of them shares the trailing labels."""
    if "..." not in term:
        if len(term) != rank:
            raise ValueError(f"einsum term '{term}' does not match rank {rank}")
        return list(term)
    head, _, tail = term.partition("...")
    n_ell = rank - len(head) - len(tail)
    if n_ell < 0:
        raise ValueError(f"einsum term '{term}' has more letters than rank {rank}")
    return [*head, *(f".{i}" for i in range(ellipsis_rank - n_ell, ellipsis_rank)), *tail]


def _rnn_macs(node: onnx.NodeProto, shapes: ShapeTable) -> int:
    # W is [directions, gates*hidden, input], R is [directions, gates*hidden,
    # hidden]: each time step and batch row multiplies x by W and h by R.
    # Element-wise gate products and peepholes are not counted.
    x = shapes.get(node.input[0])
    w = shapes.get(node.input[1])
    r = shapes.get(node.input[2])
    seq, batch = (x[1], x[0]) if _attr(node, "layout", 0) else (x[0], x[1])
    return seq * batch * (math.prod(w) + math.prod(r))


#: Op type -> MAC counting function. Ops not listed (element-wise,
#: normalization, pooling, data movement) count 0 MACs.
MAC_HANDLERS: dict[str, MacHandler] = {
    "Conv": _conv_macs_at(1),
    "ConvInteger": _conv_macs_at(1),
    "QLinearConv": _conv_macs_at(3),
    "ConvTranspose": _conv_transpose_macs,
    "Gemm": _gemm_macs,
    "MatMul": _matmul_macs_at(0, 1),
    "MatMulInteger": _matmul_macs_at(0, 1),
    "QLinearMatMul": _matmul_macs_at(0, 3),
    "Einsum": _einsum_macs,
    "LSTM": _rnn_macs,
    "GRU": _rnn_macs,
    "RNN": _rnn_macs,
    "com.microsoft::FusedConv": _conv_macs_at(1),
    "com.microsoft::QLinearConv": _conv_macs_at(3),
}

# Ops whose bodies are subgraphs; MACs inside them are not counted.
_CONTROL_FLOW = {"If", "Loop", "Scan"}


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"


def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"<{node.op_type} #{index}>"


def _count_macs(node: onnx.NodeProto, shapes: ShapeTable, warnings: list[str], name: str = "") -> int:
    """MACs of one node; 0 with a warning when they cannot be determined."""
    key = _op_key(node)
    handler = MAC_HANDLERS.get(key)
    label = name or node.name or key
    if handler is None:
        if node.domain not in _DEFAULT_DOMAINS:
            warnings.append(f"{label}: MACs of custom op {key} not counted")
        elif node.op_type in _CONTROL_FLOW:
            warnings.append(f"{label}: MACs inside the {node.op_type} body not counted")
        return 0
    try:
        return int(handler(node, shapes))
    except ShapeUnknown as exc:
        warnings.append(f"{label} ({key}): shape of '{exc.args[0]}' unknown, MACs counted as 0")
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        # inconsistent shapes or attributes in a model onnx accepted: report, do not fail
        warnings.append(f"{label} ({key}): {exc}; MACs counted as 0")
    return 0


# --------------------------------------------------------------------------- #
# Weights and activations
# --------------------------------------------------------------------------- #


def _weight_names(model: onnx.ModelProto) -> set[str]:
    """Initializers that are weights: used by some node, and not integer
    constants fed only into shape/axes/index inputs (``Reshape``'s shape...)."""
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, list[bool]] = {}  # name -> for each use, "is an index input"
    for node in walk_nodes(model.graph):
        index_positions = _INDEX_INPUTS.get(node.op_type, ()) if node.domain in _DEFAULT_DOMAINS else ()
        for pos, name in enumerate(node.input):
            if name in inits:
                uses.setdefault(name, []).append(pos in index_positions)
    weights = set()
    for name, flags in uses.items():
        dtype = inits[name].data_type
        if dtype == onnx.TensorProto.INT64 or (dtype == onnx.TensorProto.INT32 and all(flags)):
            continue
        weights.add(name)
    return weights


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope names a node's subgraphs read (they keep those tensors alive)."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for inner in walk_nodes(g):
                names.update(i for i in inner.input if i)
    return names


def _peak_activations(
    model: onnx.ModelProto, shapes: ShapeTable, names: list[str], warnings: list[str]
) -> tuple[int, str]:
    """Walks the nodes in order: a tensor is allocated when produced (graph
    inputs from the start) and freed after its last consumer (graph outputs
    never). Initializers are not activations. Returns the peak and the node
    during which it occurs. An upper bound for a runtime that reuses buffers
    in place or treats reshapes as views."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    node_inputs = [{i for i in n.input if i} | _subgraph_inputs(n) for n in graph.node]
    last_use: dict[str, int] = {}
    for idx, used in enumerate(node_inputs):
        for name in used:
            last_use[name] = idx
    unknown: list[str] = []

    def size(name: str) -> int:
        n = shapes.nbytes(name)
        if n is None:
            unknown.append(name)
            return 0
        return n

    live = {i.name: size(i.name) for i in graph.input if i.name not in inits}
    current = sum(live.values())
    peak, peak_node = current, "(graph inputs)"
    for idx, node in enumerate(graph.node):
        for out in node.output:
            if out and out not in live:
                live[out] = size(out)
                current += live[out]
        if current > peak:
            peak, peak_node = current, names[idx]
        for name in [*node_inputs[idx], *node.output]:
            if name in live and name not in outputs and last_use.get(name, -1) <= idx:
                current -= live.pop(name)
    if unknown:
        shown = ", ".join(f"'{n}'" for n in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        warnings.append(f"size of {len(unknown)} activation(s) unknown ({shown}); peak activation counts them as 0")
    return peak, peak_node


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #


def analyze(prepared: PreparedModel, board: Board | None = None) -> ModelReport:
    """Counts MACs, parameters, weight bytes and peak activation memory.

    Args:
        prepared: A model from :func:`edgekit.frontend.loader.load_model`.
        board: If given, the report says whether the model fits its RAM
            (peak activations) and flash (weights).

    Returns:
        The :class:`ModelReport`. Anything that could not be counted is listed
        in its ``warnings``; analysis itself never fails on a valid model.
    """
    model = prepared.model
    warnings: list[str] = []
    shapes = _shapes_with_inference(model, warnings)

    inits = {i.name: i for i in model.graph.initializer}
    weights = _weight_names(model)
    params = sum(math.prod(inits[n].dims) for n in weights)
    weight_bytes = sum(shapes.nbytes(n) or 0 for n in weights)

    names = [_node_name(n, i) for i, n in enumerate(model.graph.node)]
    layers = []
    for node, name in zip(model.graph.node, names):
        out = node.output[0] if node.output else ""
        layers.append(
            LayerInfo(
                name=name,
                op=_op_key(node),
                output_shape=shapes.shape.get(out),
                macs=_count_macs(node, shapes, warnings, name),
                params=sum(math.prod(inits[i].dims) for i in dict.fromkeys(node.input) if i in weights),
            )
        )
    peak, peak_node = _peak_activations(model, shapes, names, warnings)
    ops = Counter(_op_key(n) for n in walk_nodes(model.graph))

    fits = None
    if board is not None:
        fits = BoardFit(
            board=board.name,
            ram_bytes=board.memory.ram_bytes,
            flash_bytes=board.memory.flash_bytes,
            needed_ram=peak,
            needed_flash=weight_bytes,
        )
    for w in warnings:
        logger.debug("analysis: %s", w)
    return ModelReport(
        name=prepared.name,
        source=prepared.source,
        opset=prepared.opset,
        inputs=list(prepared.inputs),
        outputs=list(prepared.outputs),
        ops=dict(ops.most_common()),
        params=params,
        weight_bytes=weight_bytes,
        macs=sum(layer.macs for layer in layers),
        layers=layers,
        peak_activation_bytes=peak,
        peak_activation_node=peak_node,
        notes=list(prepared.notes),
        warnings=warnings,
        fits=fits,
    )

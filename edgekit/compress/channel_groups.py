"""Which channels of an ONNX graph must be pruned together (channel groups).

The dependency analysis behind :mod:`edgekit.compress.structured`. Removing
output channels of a convolution means removing the matching input channels
of everything that reads them, and the coupling is the hard part: a residual
``Add`` forces all its branches to keep the same channels, a depthwise
convolution has as many outputs as inputs, a ``Concat`` stitches several
channel spaces into one, and a ``Gemm`` after ``Flatten`` reads each channel
as ``H*W`` consecutive features.

No ONNX library does this analysis (torch-pruning's DepGraph works on
PyTorch modules), so it is hand-written here. Every tensor that carries
channels gets, for each position of its channel axis, an *atom*
``(group, index)``. A channel producer (a ``Conv`` with ``group=1``,
``Gemm``, ``MatMul`` with a weight) starts a fresh group; pass-through ops
(activations, BN, pooling, depthwise convs) copy the atoms; ``Concat``
concatenates them; ``Flatten`` repeats each atom ``H*W`` times. Element-wise
ops with two activations of the same width merge their groups (union-find).
Anything the analysis does not understand (an unknown op, a graph output, a
grouped conv, an atom mismatch) marks the groups involved *fixed*.

While propagating, the handlers record every weight slice, depthwise
``group`` attribute and ``Reshape`` shape constant that a cut of the channels
would change (:class:`ChannelAnalysis`); the rewrite applies them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx

from edgekit.core.errors import ConfigError
from edgekit.compress.passes import initializer_arrays, tensor_shapes
from edgekit.frontend.rule_context import attr

__all__ = [
    "ChannelGroup",
    "ChannelAnalysis",
    "HANDLERS",
    "propagate_channels",
    "collect_groups",
    "analyze_channel_groups",
]


@dataclass
class ChannelGroup:
    """A set of coupled channels that must be pruned together.

    Attributes:
        id: Group number.
        size: Channels in the group.
        producers: Nodes whose output channels form the group.
        tensors: Tensors that carry the group's channels.
        prunable: Whether the group may shrink.
        reason: Why not, when not prunable.
        kept: Kept channel indices (sorted), after pruning.
    """

    id: int
    size: int
    producers: list[str] = field(default_factory=list)
    tensors: list[str] = field(default_factory=list)
    prunable: bool = True
    reason: str = ""
    kept: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form for reports."""
        return {
            "id": self.id,
            "size": self.size,
            "kept": self.size if self.kept is None else int(len(self.kept)),
            "producers": self.producers,
            "prunable": self.prunable,
            "reason": self.reason,
        }


# --------------------------------------------------------------------------- #
# Channel atoms and groups
# --------------------------------------------------------------------------- #


@dataclass
class _Chan:
    """Channel atoms of one tensor: ``axis`` and, per position, (group, index)."""

    axis: int
    gid: np.ndarray
    idx: np.ndarray

    def __len__(self) -> int:
        return len(self.gid)


@dataclass
class _Slice:
    """Slice ``node.input[slot]`` (an initializer) along ``axis`` with the kept
    positions of ``tensor``'s channels."""

    node: int
    slot: int
    axis: int
    tensor: str


class ChannelAnalysis:
    """Propagation state: atoms per tensor, union-find over groups, actions."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.nodes = list(model.graph.node)
        self.inits = initializer_arrays(model)
        self.shapes = tensor_shapes(model)
        self.chan: dict[str, _Chan | None] = {}
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: dict[int, str] = {}
        self.producers: dict[int, list[tuple[int, int, int]]] = {}  # gid -> (node, slot, axis)
        self.bns: dict[int, list[tuple[int, str]]] = {}  # gid -> (node, output tensor)
        self.slices: list[_Slice] = []
        self.group_attrs: list[tuple[int, str]] = []  # depthwise conv node, output tensor
        self.reshapes: list[tuple[int, int, str]] = []  # node, position, output tensor

    # ---- union-find ------------------------------------------------------ #

    def new_group(self, size: int, reason: str = "") -> int:
        gid = len(self.parent)
        self.parent.append(gid)
        self.size.append(size)
        if reason:
            self.fixed[gid] = reason
        return gid

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def fix_group(self, g: int, reason: str) -> None:
        root = self.find(g)
        self.fixed.setdefault(root, reason)

    def union(self, a: int, b: int, reason: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            self.fix_group(ra, reason)
            self.fix_group(rb, reason)
            return
        self.parent[rb] = ra
        why = self.fixed.pop(rb, "") or self.fixed.get(ra, "")
        if why:
            self.fixed[ra] = why
        self.producers.setdefault(ra, []).extend(self.producers.pop(rb, []))
        self.bns.setdefault(ra, []).extend(self.bns.pop(rb, []))

    # ---- atoms ------------------------------------------------------------ #

    def fresh(self, axis: int, size: int, reason: str = "") -> _Chan:
        gid = self.new_group(size, reason)
        return _Chan(axis, np.full(size, gid, dtype=np.int64), np.arange(size, dtype=np.int64))

    def fix(self, chan: _Chan | None, reason: str) -> None:
        if chan is None:
            return
        for g in np.unique(chan.gid):
            self.fix_group(int(g), reason)

    def unify(self, a: _Chan, b: _Chan, reason: str) -> None:
        if len(a) != len(b):
            self.fix(a, reason)
            self.fix(b, reason)
            return
        pairs = np.unique(np.stack([a.gid, b.gid, (a.idx == b.idx).astype(np.int64)], axis=1), axis=0)
        for ga, gb, same in pairs:
            if same:
                self.union(int(ga), int(gb), reason)
            else:
                self.fix_group(int(ga), reason)
                self.fix_group(int(gb), reason)

    def shape(self, name: str) -> tuple[int, ...] | None:
        s = self.shapes.get(name)
        # A symbolic batch axis is fine: channels never live on axis 0.
        return None if s is None or any(d < 0 for d in s[1:]) else s

    def is_init(self, name: str) -> bool:
        return name in self.inits


# --------------------------------------------------------------------------- #
# Op handlers: propagate atoms from inputs to outputs and record the slices
# --------------------------------------------------------------------------- #

_Handler = Callable[[ChannelAnalysis, int, onnx.NodeProto], None]


def _default(an: ChannelAnalysis, i: int, node: onnx.NodeProto) -> None:
    """Unknown op: its inputs keep every channel, its outputs are untracked."""
    for name in node.input:
        an.fix(an.chan.get(name), f"read by {node.op_type} '{node.name}', which channel pruning does not handle")
    for name in node.output:
        an.chan[name] = None


def _conv(an: ChannelAnalysis, i: int, node: onnx.NodeProto) -> None:
    x, w = node.input[0], node.input[1]
    y = node.output[0]
    xs, ws = an.shape(x), an.shape(w)
    cx = an.chan.get(x)
    if not an.is_init(w) or xs is None or ws is None or (cx is not None and cx.axis != 1):
        _default(an, i, node)
        return
    group = int(attr(node, "group", 1))
    cin, cout = xs[1], ws[0]
    has_bias = len(node.input) > 2 and node.input[2] != ""
    if group == 1:
        if cx is not None:
            an.slices.append(_Slice(i, 1, 1, x))
        cy = an.fresh(1, cout)
        an.producers.setdefault(int(cy.gid[0]), []).append((i, 1, 0))
    elif group == cin == cout and ws[1] == 1:
        # Depthwise: output channel c is input channel c.
        if cx is None:
            an.chan[y] = None
            return
        cy = cx
        an.group_attrs.append((i, y))
    else:
        _default(an, i, node)
        return
    an.slices.append(_Slice(i, 1, 0, y))
    if has_bias:
        if not an.is_init(node.input[2]):
            an.fix(cy, f"bias of '{node.name}' is not a constant")
        else:
            an.slices.append(_Slice(i, 2, 0, y))
    an.chan[y] = cy


def _gemm(an: ChannelAnalysis, i: int, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    y = node.output[0]
    ca = an.chan.get(a)
    bs = an.shape(b)
    if attr(node, "transA", 0) or not an.is_init(b) or bs is None or (ca is not None and ca.axis != 1):
        _default(an, i, node)
        return
    trans_b = int(attr(node, "transB", 0))
    in_axis, out_axis = (1, 0) if trans_b else (0, 1)
    if ca is not None:
        an.slices.append(_Slice(i, 1, in_axis, a))
    n = bs[out_axis]
    cy = an.fresh(1, n)
    an.producers.setdefault(int(cy.gid[0]), []).append((i, 1, out_axis))
    an.slices.append(_Slice(i, 1, out_axis, y))
    if len(node.input) > 2 and node.input[2]:
        c = node.input[2]
        cs = an.shape(c)
        if not an.is_init(c) or cs is None:
            an.fix(cy, f"bias of '{node.name}' is not a constant")
        elif cs and cs[-1] == n:
            an.slices.append(_Slice(i, 2, len(cs) - 1, y))
    an.chan[y] = cy


def _matmul(an: ChannelAnalysis, i: int, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    y = node.output[0]
    ca = an.chan.get(a)
    bs, as_, ys = an.shape(b), an.shape(a), an.shape(y)
    if not an.is_init(b) or bs is None or len(bs) != 2 or as_ is None or ys is None:
        _default(an, i, node)
        return
    if ca is not None:
        if ca.axis != len(as_) - 1:
            an.fix(ca, f"'{node.name}' contracts an axis other than the channel axis")
        else:
            an.slices.append(_Slice(i, 1, 0, a))
    cy = an.fresh(len(ys) - 1, bs[1])
    an.producers.setdefault(int(cy.gid[0]), []).append((i, 1, 1))
    an.slices.append(_Slice(i, 1, 1, y))
    an.chan[y] = cy


def _batchnorm(an: ChannelAnalysis, i: int, node: onnx.NodeProto) -> None:
    x, y = node.input[0], node.output[0]
    cx = an.chan.get(x)
    if cx is None or cx.axis != 1 or not all(an.is_init(n) for n in node.input[1:5]):
        _default(an, i, node)
        return
    for slot in range(1, 5):
        an.slices.append(_Slice(i, slot, 0, y))
    an.bns.setdefault(an.find(int(cx.gid[0])), []).append((i, y))
    an.chan[y] = cx


def _passthrough(an: ChannelAnalysis, i: int, node: onnx.NodeProto) -> None:
    """Ops that act on each channel on its own (activations, pooling...)."""
    x, y = node.input[0], node.output[0]
    cx = an.chan.get(x)
    xs, ys = an.shape(x), an.shape(y)
    if cx is None:
        _default(an, i, node)
        return
    if xs is None or ys is None or len(xs) != len(ys) or xs[cx.axis] != ys[cx.axis]:
        _default(an, i, node)
        return
    if node.op_type in ("Softmax", "LogSoftmax", "Hardmax", "LpNormalization"):
        axis = int(attr(node, "axis", -1 if node.op_type != "LpNormalization" else -1))
        if axis % len(xs) == cx.axis:
            _default(an, i, node)
            return
    if node.op_type == "InstanceNormalization":
        if not all(an.is_init(n) for n in node.input[1:3]) or cx.axis != 1:
            _default(an, i, node)
            return
        an.slices.extend(_Slice(i, slot, 0, y) for slot in (1, 2))
    for name in node.input[1:]:
        # Scalars only (Clip bounds, Resize scales are index inputs): a
        # per-channel second input would need slicing this handler does not do.
        if name and an.chan.get(name) is not None:
            an.fix(an.chan[name], f"second input of {node.op_type} '{node.name}'")
    an.chan[y] = cx
    for extra in node.output[1:]:
        an.chan[extra] = None


def _reduce(an: ChannelAnalysis, i: int, node: onnx.NodeProto) -> None:
    x, y = node.input[0], node.output[0]
    cx = an.chan.get(x)
    xs, ys = an.shape(x), an.shape(y)
    if cx is None or xs is None or ys is None or len(xs) != len(ys) or xs[cx.axis] != ys[cx.axis]:
        _default(an, i, node)
        return
    an.chan[y] = cx  # keepdims and the channel axis not reduced


def _elementwise(an: ChannelAnalysis, i: int, node: onnx.NodeProto) -> None:
    y = node.output[0]
    ys = an.shape(y)
    infos = [(slot, name, an.chan.get(name)) for slot, name in enumerate(node.input) if name]
    tracked = [(slot, name, c) for slot, name, c in infos if c is not None]
    if ys is None or not tracked:
        _default(an, i, node)
        return
    rank = len(ys)
    axes = {c.axis + rank - len(an.shape(name) or ()) for _, name, c in tracked}
    if len(axes) != 1:
        _default(an, i, node)
        return
    ax = axes.pop()
    width = ys[ax]
    full: list[_Chan] = []
    blocked = False
    for slot, name, c in infos:
        s = an.shape(name)
        if s is None:
            blocked = True
            continue
        a = ax - (rank - len(s))
        dim = s[a] if a >= 0 else 1
        if dim == 1 and width != 1:
            continue
        if c is not None:
            full.append(c)
        elif an.is_init(name):
            an.slices.append(_Slice(i, slot, a, y))
        else:
            blocked = True
    if not full or blocked:
        for _, _, c in tracked:
            an.fix(c, f"{node.op_type} '{node.name}' mixes them with a tensor whose channels cannot shrink")
        an.chan[y] = None
        return
    for other in full[1:]:
        an.unify(full[0], other, f"{node.op_type} '{node.name}' adds channels that do not line up")
    an.chan[y] = full[0]


def _concat(an: ChannelAnalysis, i: int, node: onnx.NodeProto) -> None:
    y = node.output[0]
    ys = an.shape(y)
    if ys is None:
        _default(an, i, node)
        return
    axis = int(attr(node, "axis", 0)) % len(ys)
    parts = [(name, an.chan.get(name)) for name in node.input]
    tracked = [c for _, c in parts if c is not None]
    if not tracked:
        an.chan[y] = None
        return
    if all(c.axis == axis for c in tracked):
        gids, idxs = [], []
        for name, c in parts:
            if c is None:
                s = an.shape(name)
                if s is None:
                    _default(an, i, node)
                    return
                c = an.fresh(axis, s[axis], f"concatenated with '{name}', whose channels cannot shrink")
            gids.append(c.gid)
            idxs.append(c.idx)
        an.chan[y] = _Chan(axis, np.concatenate(gids), np.concatenate(idxs))
        if any(an.is_init(name) for name, _ in parts):
            an.fix(an.chan[y], f"Concat '{node.name}' joins a constant")
        return
    # Concatenation along another axis: every input keeps the same channels.
    for c in tracked[1:]:
        an.unify(tracked[0], c, f"Concat '{node.name}' joins tensors whose channels do not line up")
    if len(tracked) != len(parts):
        for c in tracked:
            an.fix(c, f"Concat '{node.name}' joins a tensor whose channels cannot shrink")
    an.chan[y] = tracked[0]


def _reshape_like(an: ChannelAnalysis, i: int, node: onnx.NodeProto) -> None:
    """Flatten, Reshape, Squeeze, Unsqueeze: follow the channel axis when the
    reshape keeps it whole or flattens it with everything after it."""
    x, y = node.input[0], node.output[0]
    cx = an.chan.get(x)
    xs, ys = an.shape(x), an.shape(y)
    if cx is None or xs is None or ys is None:
        _default(an, i, node)
        return
    a = cx.axis
    shape_const = node.op_type == "Reshape"
    if shape_const and not an.is_init(node.input[1]):
        _default(an, i, node)
        return
    if len(ys) > a and tuple(ys[: a + 1]) == tuple(xs[: a + 1]):
        an.chan[y] = cx
        if shape_const:
            an.reshapes.append((i, a, y))
        return
    # Flatten-like: [d0..d(k-1), C, rest...] -> [prod(d0..d(k-1)), C*prod(rest)...]
    if len(ys) == 2 and a >= 1:
        for k in range(1, a + 1):
            if math.prod(xs[:k]) == ys[0] and math.prod(xs[k:]) == ys[1]:
                inner = math.prod(xs[a + 1 :])
                outer = math.prod(xs[k:a])
                gid = np.tile(np.repeat(cx.gid, inner), outer)
                idx = np.tile(np.repeat(cx.idx, inner), outer)
                an.chan[y] = _Chan(1, gid, idx)
                if shape_const:
                    an.reshapes.append((i, 1, y))
                return
    _default(an, i, node)


_PASSTHROUGH = (
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round",
    "Erf", "Gelu", "Mish", "Identity", "Dropout", "Cast", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "LpPool", "Resize", "Upsample", "Pad", "InstanceNormalization", "Softmax",
    "LogSoftmax", "Hardmax", "LpNormalization", "ThresholdedRelu", "Shrink", "Sign",
)  # fmt: skip

#: Op type -> channel propagation handler. Ops not listed keep their inputs'
#: channels whole (see ``_default``).
HANDLERS: dict[str, _Handler] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batchnorm,
    "Concat": _concat,
    "Flatten": _reshape_like,
    "Reshape": _reshape_like,
    "Squeeze": _reshape_like,
    "Unsqueeze": _reshape_like,
    **{op: _elementwise for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Pow")},
    **{op: _reduce for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceL1")},
    **{op: _passthrough for op in _PASSTHROUGH},
}


def propagate_channels(model: onnx.ModelProto, exclude: tuple[str, ...]) -> ChannelAnalysis:
    """Runs the op handlers over ``model`` in graph order.

    Graph inputs and outputs and everything the nodes named in ``exclude``
    read or write keep all their channels.

    Raises:
        ConfigError: ``exclude`` names no node of the model.
    """
    an = ChannelAnalysis(model)
    for inp in model.graph.input:
        an.chan[inp.name] = None  # graph inputs never shrink
    for i, node in enumerate(an.nodes):
        handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        (handler or _default)(an, i, node)
        for a in node.attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                _fix_subgraph_reads(an, a, node)
    for out in model.graph.output:
        an.fix(an.chan.get(out.name), f"reaches the graph output '{out.name}'")
    excluded = set(exclude)
    unknown = excluded - {n.name for n in an.nodes}
    if unknown:
        raise ConfigError(
            f"structured pruning: exclude names no node: {', '.join(sorted(unknown))}",
            hint="Use node names as shown by `edgekit inspect MODEL --json` (layers[].name).",
        )
    for s in an.slices:
        if an.nodes[s.node].name in excluded:
            an.fix(an.chan.get(s.tensor), f"'{an.nodes[s.node].name}' is excluded")
    return an


def _fix_subgraph_reads(an: ChannelAnalysis, body: onnx.AttributeProto, node: onnx.NodeProto) -> None:
    graphs = [body.g] if body.type == onnx.AttributeProto.GRAPH else list(body.graphs)
    for g in graphs:
        for inner in g.node:
            for name in inner.input:
                an.fix(an.chan.get(name), f"read inside the body of {node.op_type} '{node.name}'")


def collect_groups(an: ChannelAnalysis) -> dict[int, ChannelGroup]:
    """One :class:`ChannelGroup` per union-find root of ``an``, by root."""
    groups: dict[int, ChannelGroup] = {}
    for g in range(len(an.parent)):
        root = an.find(g)
        if root not in groups:
            groups[root] = ChannelGroup(id=root, size=an.size[root])
    for root, prods in an.producers.items():
        groups[an.find(root)].producers.extend(sorted({an.nodes[n].name for n, _, _ in prods}))
    for name, c in an.chan.items():
        if c is not None:
            for g in np.unique(c.gid):
                groups[an.find(int(g))].tensors.append(name)
    for root, group in groups.items():
        if root in an.fixed:
            group.prunable, group.reason = False, an.fixed[root]
        elif not an.producers.get(root):
            group.prunable, group.reason = False, "no weight produces these channels"
    return groups


def analyze_channel_groups(model: onnx.ModelProto) -> list[ChannelGroup]:
    """The channel groups of ``model`` and whether each could be pruned.

    Useful to see why a layer keeps all its channels (``reason``).
    """
    an = propagate_channels(model, ())
    return sorted(collect_groups(an).values(), key=lambda g: g.id)


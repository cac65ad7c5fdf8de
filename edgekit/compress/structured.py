"""Structured channel (filter) pruning that really removes channels.

Zeroing weights leaves a dense kernel exactly as slow; removing whole output
channels of a convolution — and the matching input channels of everything
that reads them — makes every kernel on the way smaller. The hard part is the
coupling: a residual ``Add`` forces all its branches to keep the same
channels, a depthwise convolution has as many outputs as inputs, a ``Concat``
stitches several channel spaces into one, and a ``Gemm`` after ``Flatten``
reads each channel as ``H*W`` consecutive features.

No ONNX library does this dependency analysis (torch-pruning's DepGraph works
on PyTorch modules), so it is hand-written here:

1. **Propagate channel atoms.** Every tensor that carries channels gets, for
   each position of its channel axis, an *atom* ``(group, index)``. A channel
   producer (a ``Conv`` with ``group=1``, ``Gemm``, ``MatMul`` with a weight)
   starts a fresh group; pass-through ops (activations, BN, pooling,
   depthwise convs) copy the atoms; ``Concat`` concatenates them; ``Flatten``
   repeats each atom ``H*W`` times. Element-wise ops with two activations of
   the same width merge their groups (union-find). Anything the analysis
   does not understand — an unknown op, a graph output, a grouped conv, an
   atom mismatch — marks the groups involved *fixed*.
2. **Choose channels.** Each prunable group ranks its channels by the L1/L2
   norm of its producers' filters (or BatchNorm scale) and keeps the best
   ``1 - ratio``.
3. **Rewrite.** Every weight slice recorded during propagation is applied
   with the kept positions of the tensor it is tied to; depthwise ``group``
   attributes and ``Reshape`` shape constants are updated.

The result is a smaller, valid ONNX model (checked with ``full_check`` and
strict shape inference) with fewer MACs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.core.errors import ConfigError
from edgekit.compress.passes import (
    CompressionPass,
    PassContext,
    PassResult,
    finalize_model,
    initializer_arrays,
    tensor_shapes,
)

__all__ = [
    "StructuredConfig",
    "ChannelGroup",
    "StructuredResult",
    "prune_channels",
    "analyze_channel_groups",
    "StructuredPrunePass",
    "CRITERIA",
]

logger = logging.getLogger(__name__)

#: Channel importance criteria.
CRITERIA = ("l1", "l2", "bn")


@dataclass(frozen=True)
class StructuredConfig:
    """How many channels to remove and how to choose them.

    Attributes:
        ratio: Fraction of the channels of every prunable group to remove,
            in ``[0, 1)``.
        criterion: ``l1`` or ``l2`` norm of the producers' filters, or
            ``bn``: BatchNorm ``|gamma| / sqrt(var + eps)`` (falls back to L1
            for groups without a BatchNorm — loaded models usually have BN
            folded into the convolutions).
        exclude: Node names whose weights must not change (their input and
            output channels are kept).
        round_to: Keep a multiple of this many channels (SIMD widths like 4
            or 8 often matter more than the last few channels).
        min_channels: Never keep fewer channels than this in a group.
    """

    ratio: float = 0.3
    criterion: str = "l1"
    exclude: tuple[str, ...] = ()
    round_to: int = 1
    min_channels: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0.0 <= self.ratio < 1.0:
            raise ConfigError(
                f"structured pruning ratio must be in [0, 1), got {self.ratio!r}",
                hint="Pass the fraction of channels to remove, e.g. 0.3.",
            )
        if self.criterion not in CRITERIA:
            raise ConfigError(
                f"unknown channel importance criterion {self.criterion!r}",
                hint=f"Choose one of: {', '.join(CRITERIA)}.",
            )
        for name in ("round_to", "min_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"StructuredConfig.{name} must be a positive integer, got {value!r}", hint="E.g. 1.")
        if isinstance(self.exclude, str):
            raise ConfigError("StructuredConfig.exclude must be a list of node names", hint='E.g. exclude=("conv1",).')
        object.__setattr__(self, "exclude", tuple(self.exclude))


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


@dataclass
class StructuredResult:
    """What :func:`prune_channels` returns.

    Attributes:
        model: The pruned model.
        modified: Whether any channel was removed.
        groups: Every channel group found, prunable or not.
        channel_maps: Tensor name -> (channel axis, kept positions) for each
            tensor that lost channels.
        notes: Remarks for the report.
    """

    model: onnx.ModelProto
    modified: bool
    groups: list[ChannelGroup]
    channel_maps: dict[str, tuple[int, np.ndarray]]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON form (groups summarised)."""
        pruned = [g for g in self.groups if g.kept is not None and len(g.kept) < g.size]
        return {
            "groups": len(self.groups),
            "prunable_groups": sum(g.prunable for g in self.groups),
            "pruned_groups": len(pruned),
            "channels_before": sum(g.size for g in pruned),
            "channels_after": sum(len(g.kept) for g in pruned),
            "fixed": [g.to_json() for g in self.groups if not g.prunable],
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


class _Analysis:
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

_Handler = Callable[[_Analysis, int, onnx.NodeProto], None]


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _default(an: _Analysis, i: int, node: onnx.NodeProto) -> None:
    """Unknown op: its inputs keep every channel, its outputs are untracked."""
    for name in node.input:
        an.fix(an.chan.get(name), f"read by {node.op_type} '{node.name}', which channel pruning does not handle")
    for name in node.output:
        an.chan[name] = None


def _conv(an: _Analysis, i: int, node: onnx.NodeProto) -> None:
    x, w = node.input[0], node.input[1]
    y = node.output[0]
    xs, ws = an.shape(x), an.shape(w)
    cx = an.chan.get(x)
    if not an.is_init(w) or xs is None or ws is None or (cx is not None and cx.axis != 1):
        _default(an, i, node)
        return
    group = int(_attr(node, "group", 1))
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


def _gemm(an: _Analysis, i: int, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    y = node.output[0]
    ca = an.chan.get(a)
    bs = an.shape(b)
    if _attr(node, "transA", 0) or not an.is_init(b) or bs is None or (ca is not None and ca.axis != 1):
        _default(an, i, node)
        return
    trans_b = int(_attr(node, "transB", 0))
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


def _matmul(an: _Analysis, i: int, node: onnx.NodeProto) -> None:
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


def _batchnorm(an: _Analysis, i: int, node: onnx.NodeProto) -> None:
    x, y = node.input[0], node.output[0]
    cx = an.chan.get(x)
    if cx is None or cx.axis != 1 or not all(an.is_init(n) for n in node.input[1:5]):
        _default(an, i, node)
        return
    for slot in range(1, 5):
        an.slices.append(_Slice(i, slot, 0, y))
    an.bns.setdefault(an.find(int(cx.gid[0])), []).append((i, y))
    an.chan[y] = cx


def _passthrough(an: _Analysis, i: int, node: onnx.NodeProto) -> None:
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
        axis = int(_attr(node, "axis", -1 if node.op_type != "LpNormalization" else -1))
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


def _reduce(an: _Analysis, i: int, node: onnx.NodeProto) -> None:
    x, y = node.input[0], node.output[0]
    cx = an.chan.get(x)
    xs, ys = an.shape(x), an.shape(y)
    if cx is None or xs is None or ys is None or len(xs) != len(ys) or xs[cx.axis] != ys[cx.axis]:
        _default(an, i, node)
        return
    an.chan[y] = cx  # keepdims and the channel axis not reduced


def _elementwise(an: _Analysis, i: int, node: onnx.NodeProto) -> None:
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


def _concat(an: _Analysis, i: int, node: onnx.NodeProto) -> None:
    y = node.output[0]
    ys = an.shape(y)
    if ys is None:
        _default(an, i, node)
        return
    axis = int(_attr(node, "axis", 0)) % len(ys)
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


def _reshape_like(an: _Analysis, i: int, node: onnx.NodeProto) -> None:
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


def _propagate(model: onnx.ModelProto, exclude: tuple[str, ...]) -> _Analysis:
    an = _Analysis(model)
    for inp in model.graph.input:
        an.chan[inp.name] = None  # graph inputs never shrink
    for i, node in enumerate(an.nodes):
        handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        (handler or _default)(an, i, node)
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                _fix_subgraph_reads(an, attr, node)
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


def _fix_subgraph_reads(an: _Analysis, attr: onnx.AttributeProto, node: onnx.NodeProto) -> None:
    graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
    for g in graphs:
        for inner in g.node:
            for name in inner.input:
                an.fix(an.chan.get(name), f"read inside the body of {node.op_type} '{node.name}'")


# --------------------------------------------------------------------------- #
# Importance and selection
# --------------------------------------------------------------------------- #


def _importance(an: _Analysis, root: int, criterion: str, notes: list[str]) -> np.ndarray:
    size = an.size[root]
    score = np.zeros(size, dtype=np.float64)
    if criterion == "bn" and an.bns.get(root):
        for node_i, _ in an.bns[root]:
            node = an.nodes[node_i]
            gamma = an.inits[node.input[1]].astype(np.float64)
            var = an.inits[node.input[4]].astype(np.float64)
            s = np.abs(gamma) / np.sqrt(var + float(_attr(node, "epsilon", 1e-5)))
            score += s / (s.mean() or 1.0)
        return score
    if criterion == "bn":
        notes.append(f"group {root}: no BatchNormalization (folded?); ranked by L1 norm instead")
    order = 2 if criterion == "l2" else 1
    for node_i, slot, axis in an.producers.get(root, []):
        w = np.moveaxis(an.inits[an.nodes[node_i].input[slot]].astype(np.float64), axis, 0)
        w = w.reshape(w.shape[0], -1)
        norms = np.linalg.norm(w, ord=order, axis=1) if order == 2 else np.abs(w).sum(axis=1)
        # Producers of one group (residual branches) can differ in scale;
        # normalising lets each vote equally.
        score += norms / (norms.mean() or 1.0)
    return score


def _keep_count(size: int, cfg: StructuredConfig) -> int:
    keep = size - math.floor(cfg.ratio * size + 1e-9)
    keep = max(keep, cfg.min_channels)
    keep = math.ceil(keep / cfg.round_to) * cfg.round_to
    return min(keep, size)


def _groups(an: _Analysis) -> dict[int, ChannelGroup]:
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
    an = _propagate(model, ())
    return sorted(_groups(an).values(), key=lambda g: g.id)


# --------------------------------------------------------------------------- #
# Rewrite
# --------------------------------------------------------------------------- #


def _positions(an: _Analysis, tensor: str, keep: dict[int, np.ndarray]) -> np.ndarray:
    c = an.chan[tensor]
    assert c is not None
    mask = np.ones(len(c), dtype=bool)
    roots = np.array([an.find(int(g)) for g in c.gid])
    for root in np.unique(roots):
        if int(root) in keep:
            sel = roots == root
            mask[sel] = keep[int(root)][c.idx[sel]]
    return mask


def _rewrite(an: _Analysis, keep: dict[int, np.ndarray]) -> tuple[onnx.ModelProto, dict[str, tuple[int, np.ndarray]]]:
    model = onnx.ModelProto()
    model.CopyFrom(an.model)
    nodes = model.graph.node
    masks: dict[str, np.ndarray] = {}

    def mask_of(tensor: str) -> np.ndarray:
        if tensor not in masks:
            masks[tensor] = _positions(an, tensor, keep)
        return masks[tensor]

    # Weights are edited per (node, input slot): an initializer shared by two
    # nodes may be cut differently for each.
    edited: dict[tuple[int, int], np.ndarray] = {}
    for s in an.slices:
        m = mask_of(s.tensor)
        if m.all():
            continue
        key = (s.node, s.slot)
        arr = edited.get(key, an.inits[an.nodes[s.node].input[s.slot]])
        if arr.shape[s.axis] == len(m):
            edited[key] = np.compress(m, arr, axis=s.axis)
        elif arr.shape[s.axis] != 1:
            raise AssertionError(f"slice of {an.nodes[s.node].input[s.slot]} axis {s.axis} does not fit {s.tensor}")
    for node_i, tensor in an.group_attrs:
        kept = int(mask_of(tensor).sum())
        for a in nodes[node_i].attribute:
            if a.name == "group":
                a.i = kept
    for node_i, pos, tensor in an.reshapes:
        m = mask_of(tensor)
        if m.all():
            continue
        key = (node_i, 1)
        shape = edited.get(key, an.inits[an.nodes[node_i].input[1]]).copy()
        if shape[pos] > 0:
            shape[pos] = int(m.sum())
        edited[key] = shape

    # One new initializer per distinct edited array; the original stays for
    # users that were not cut (finalize_model drops it when none is left).
    variants: dict[str, list[tuple[np.ndarray, str]]] = {}
    for (node_i, slot), arr in sorted(edited.items()):
        orig = an.nodes[node_i].input[slot]
        named = variants.setdefault(orig, [])
        for existing, new_name in named:
            if existing.shape == arr.shape and np.array_equal(existing, arr):
                break
        else:
            new_name = f"{orig}__pruned" if not named else f"{orig}__pruned{len(named)}"
            named.append((arr, new_name))
            model.graph.initializer.append(numpy_helper.from_array(arr.astype(an.inits[orig].dtype), new_name))
        nodes[node_i].input[slot] = new_name
    # Where every user got the same cut, keep the weight's original name.
    still_used = {name for node in nodes for name in node.input}
    by_name = {init.name: init for init in model.graph.initializer}
    for orig, named in variants.items():
        if len(named) == 1 and orig not in still_used:
            arr, new_name = named[0]
            by_name[orig].CopyFrom(numpy_helper.from_array(arr.astype(an.inits[orig].dtype), orig))
            model.graph.initializer.remove(by_name[new_name])
            for node in nodes:
                for s, name in enumerate(node.input):
                    if name == new_name:
                        node.input[s] = orig
    maps = {
        t: (an.chan[t].axis, np.flatnonzero(m))  # type: ignore[union-attr]
        for t in an.chan
        if an.chan[t] is not None and not (m := mask_of(t)).all()
    }
    return model, maps


def prune_channels(model: onnx.ModelProto, config: StructuredConfig | None = None) -> StructuredResult:
    """Removes the least important channels of every prunable channel group.

    Args:
        model: A model with static shapes and weights as initializers (e.g.
            :attr:`PreparedModel.model <edgekit.frontend.loader.PreparedModel>`).
        config: Ratio, criterion and exclusions.

    Returns:
        The :class:`StructuredResult`; ``modified`` is False when no group
        could shrink (the notes say why).

    Raises:
        ConfigError: an excluded name is not a node of the model.
        ModelError: the rewritten model is invalid (an edgekit bug).
    """
    cfg = config or StructuredConfig()
    an = _propagate(model, cfg.exclude)
    groups = _groups(an)
    notes: list[str] = []
    keep: dict[int, np.ndarray] = {}
    for root, group in groups.items():
        if not group.prunable:
            continue
        n_keep = _keep_count(group.size, cfg)
        if n_keep >= group.size:
            group.kept = np.arange(group.size)
            continue
        score = _importance(an, root, cfg.criterion, notes)
        kept = np.sort(np.argsort(-score, kind="stable")[:n_keep])
        group.kept = kept
        mask = np.zeros(group.size, dtype=bool)
        mask[kept] = True
        keep[root] = mask
    if not keep:
        reasons = sorted({g.reason for g in groups.values() if not g.prunable})
        notes.append("no channel group could shrink" + (f": {'; '.join(reasons[:3])}" if reasons else ""))
        return StructuredResult(model, False, list(groups.values()), {}, notes)
    pruned, maps = _rewrite(an, keep)
    pruned = finalize_model(pruned, what="structured pruning")
    removed = sum(g.size - len(g.kept) for g in groups.values() if g.kept is not None)
    logger.info("structured pruning removed %d channels in %d groups", removed, len(keep))
    return StructuredResult(pruned, True, sorted(groups.values(), key=lambda g: g.id), maps, notes)


class StructuredPrunePass(CompressionPass):
    """Recipe step ``prune-structured``: :func:`prune_channels` as a pass.

    The kept channels are recorded in ``ctx.channel_maps`` for recovery.
    """

    name = "prune-structured"

    def __init__(self, config: StructuredConfig) -> None:
        self.config = config

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"ratio": c.ratio, "criterion": c.criterion, "exclude": list(c.exclude), "round_to": c.round_to}

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        result = prune_channels(model, self.config)
        for tensor, (axis, kept) in result.channel_maps.items():
            if tensor in ctx.channel_maps:  # pruned twice: compose with the earlier cut
                _, earlier = ctx.channel_maps[tensor]
                kept = earlier[kept]
            ctx.channel_maps[tensor] = (axis, kept)
        return PassResult(result.model, result.modified, result.to_json(), result.notes)

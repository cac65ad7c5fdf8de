"""Unstructured magnitude pruning and N:M pruning of weights.

Both set weights to zero and keep every tensor dense, so **a dense kernel runs
exactly as fast as before**: the gain is only in storage, and only when the
weights are stored sparse (see :func:`sparse_storage_bytes`), or on hardware
with N:M sparse kernels. The step report says so; latency is measured by the
caller.

* :func:`prune_unstructured`: zero the smallest-magnitude weights, to a
  target sparsity over all targeted layers at once (``scope="global"``) or in
  each layer (``scope="layer"``, with per-layer overrides). The first and last
  weighted layers are excluded by default (they are small and sensitive).
* :func:`prune_nm`: in every group of ``M`` consecutive weights along the
  reduction axis keep the ``N`` largest (2:4 is what sparse tensor cores run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.core.errors import ConfigError
from edgekit.core.sparse import bitmask_bytes
from edgekit.compress.passes import CompressionPass, PassContext, PassResult

__all__ = [
    "PruneConfig",
    "NMConfig",
    "LayerSparsity",
    "PruneResult",
    "prune_unstructured",
    "prune_nm",
    "prunable_layers",
    "sparse_storage_bytes",
    "weight_sparsity",
    "UnstructuredPrunePass",
    "NMPrunePass",
]

logger = logging.getLogger(__name__)

#: Op types whose weight (input 1) is pruned.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _check_names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a list of node names or op types, got {value!r}", hint='E.g. ("fc2",).')
    return tuple(value)


def _check_fraction(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{what} must be a fraction in [0, 1), got {value!r}", hint="E.g. 0.5 for 50% zeros.")
    return float(value)


@dataclass(frozen=True)
class PruneConfig:
    """Unstructured magnitude pruning.

    Attributes:
        sparsity: Target fraction of zeros in the targeted weights, [0, 1).
        scope: ``global`` — one magnitude threshold over all targeted layers
            (layers with many redundant weights give more); ``layer`` — the
            same sparsity in every layer.
        per_layer: Node name -> sparsity for layers that get their own target
            (pruned on their own in either scope).
        exclude: Node names or op types left dense.
        include_first_last: Also prune the first and last weighted layers.
    """

    sparsity: float = 0.5
    scope: str = "global"
    per_layer: Mapping[str, float] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    include_first_last: bool = False

    def __post_init__(self) -> None:
        _check_fraction(self.sparsity, "sparsity")
        if self.scope not in ("global", "layer"):
            raise ConfigError(f"unknown pruning scope {self.scope!r}", hint="Choose 'global' or 'layer'.")
        for name, value in dict(self.per_layer).items():
            _check_fraction(value, f"per_layer[{name!r}]")
        object.__setattr__(self, "per_layer", dict(self.per_layer))
        object.__setattr__(self, "exclude", _check_names(self.exclude, "exclude"))


@dataclass(frozen=True)
class NMConfig:
    """N:M pruning: keep ``n`` of every ``m`` consecutive weights along the
    reduction axis (input channels of a Conv, K of a Gemm/MatMul).

    Attributes:
        n: Weights kept per block.
        m: Block length.
        exclude: Node names or op types left dense.
        include_first_last: Also prune the first and last weighted layers.
    """

    n: int = 2
    m: int = 4
    exclude: tuple[str, ...] = ()
    include_first_last: bool = False

    def __post_init__(self) -> None:
        for k in ("n", "m"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"N:M pruning needs positive integers, got {k}={v!r}", hint="E.g. 2:4.")
        if self.n >= self.m:
            raise ConfigError(f"N:M pruning needs N < M, got {self.n}:{self.m}", hint="E.g. 2:4 keeps 2 of 4.")
        object.__setattr__(self, "exclude", _check_names(self.exclude, "exclude"))

    @classmethod
    def parse(cls, text: str, **kwargs: Any) -> "NMConfig":
        """Reads ``"2:4"``.

        Raises:
            ConfigError: the text is not ``N:M`` with integers.
        """
        n, sep, m = str(text).partition(":")
        if not sep or not n.strip().isdigit() or not m.strip().isdigit():
            raise ConfigError(f"cannot read N:M pattern {text!r}", hint="Write it as N:M, e.g. --prune-nm 2:4.")
        return cls(n=int(n), m=int(m), **kwargs)


@dataclass(frozen=True)
class LayerSparsity:
    """Zeros in one layer's weight after pruning.

    Attributes:
        node: Node name.
        op: Op type.
        weight: Initializer name.
        params: Weight elements.
        zeros: Zero elements after pruning.
        skipped: Why the layer was left alone ("" when pruned).
    """

    node: str
    op: str
    weight: str
    params: int
    zeros: int
    skipped: str = ""

    @property
    def sparsity(self) -> float:
        """Fraction of zeros."""
        return self.zeros / self.params if self.params else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"node": self.node, "op": self.op, "weight": self.weight, "params": self.params,
                "zeros": self.zeros, "sparsity": round(self.sparsity, 6), "skipped": self.skipped}  # fmt: skip


@dataclass
class PruneResult:
    """What the pruning functions return.

    Attributes:
        model: The pruned model (dense tensors with zeros).
        modified: Whether any weight changed.
        layers: One entry per weighted layer considered.
        dense_bytes: Bytes of the targeted weights stored dense.
        sparse_bytes: Bytes of the targeted weights stored as bitmask + values.
    """

    model: onnx.ModelProto
    modified: bool
    layers: list[LayerSparsity]
    dense_bytes: int = 0
    sparse_bytes: int = 0

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over every pruned weight."""
        pruned = [lay for lay in self.layers if not lay.skipped]
        total = sum(lay.params for lay in pruned)
        return sum(lay.zeros for lay in pruned) / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "sparsity": round(self.sparsity, 6),
            "dense_bytes": self.dense_bytes,
            "sparse_bytes": self.sparse_bytes,
            "sparse_storage_pays": self.sparse_bytes < self.dense_bytes,
            "layers": [lay.to_json() for lay in self.layers],
            "latency_note": "zeros in dense tensors do not make dense kernels faster",
        }


def prunable_layers(model: onnx.ModelProto) -> list[tuple[int, onnx.NodeProto, str]]:
    """Weighted layers in graph order: ``(node index, node, weight name)`` for
    each Conv/ConvTranspose/Gemm/MatMul whose input 1 is a float initializer
    of rank >= 2."""
    inits = {i.name: i for i in model.graph.initializer}
    found = []
    for idx, node in enumerate(model.graph.node):
        if node.op_type not in WEIGHTED_OPS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        w = inits.get(node.input[1])
        if w is not None and len(w.dims) >= 2 and w.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            found.append((idx, node, w.name))
    return found


def _selected(
    model: onnx.ModelProto, exclude: tuple[str, ...], include_first_last: bool
) -> tuple[list[tuple[onnx.NodeProto, str]], list[tuple[onnx.NodeProto, str, str]]]:
    layers = prunable_layers(model)
    names = {n.name for n in model.graph.node} | {n.op_type for n in model.graph.node}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise ConfigError(
            f"pruning: exclude names no node or op type: {', '.join(unknown)}",
            hint="Use node names as shown by `edgekit inspect MODEL --json` (layers[].name), or op types.",
        )
    chosen, skipped = [], []
    seen: set[str] = set()
    for pos, (_, node, w) in enumerate(layers):
        label = node.name or f"<{node.op_type}>"
        if node.name in exclude or node.op_type in exclude:
            skipped.append((node, w, "excluded"))
        elif not include_first_last and pos in (0, len(layers) - 1):
            skipped.append((node, w, "first/last layer (include_first_last=False)"))
        elif w in seen:
            skipped.append((node, w, "weight shared with an earlier layer"))
        else:
            chosen.append((node, w))
            seen.add(w)
        logger.debug("pruning candidate %s (%s)", label, w)
    return chosen, skipped


def _smallest_mask(values: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` smallest entries of ``values`` (exactly ``k``,
    ties broken by position — a threshold would overshoot on ties)."""
    mask = np.zeros(values.size, dtype=bool)
    if k > 0:
        mask[np.argpartition(values.ravel(), k - 1)[:k]] = True
    return mask.reshape(values.shape)


def sparse_storage_bytes(weight: np.ndarray) -> int:
    """Bytes of ``weight`` stored as a bitmask (one bit per element) plus its
    non-zero values — the format ``aot-c`` packages store pruned weights in
    (``--weight-storage``); the same rule, :func:`edgekit.core.sparse.bitmask_bytes`."""
    return bitmask_bytes(weight)


def weight_sparsity(model: onnx.ModelProto, weights: list[str] | None = None) -> float:
    """Fraction of zeros in the named initializers (default: every weight of
    :func:`prunable_layers`)."""
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    names = weights if weights is not None else sorted({w for _, _, w in prunable_layers(model)})
    total = sum(arrays[n].size for n in names)
    return sum(int(np.sum(arrays[n] == 0)) for n in names) / total if total else 0.0


def _write(model: onnx.ModelProto, new: dict[str, np.ndarray]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in new:
            dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
            init.CopyFrom(numpy_helper.from_array(new[init.name].astype(dtype), init.name))
    return out


def _result(
    model: onnx.ModelProto,
    arrays: dict[str, np.ndarray],
    chosen: list[tuple[onnx.NodeProto, str]],
    skipped: list[tuple[onnx.NodeProto, str, str]],
    before_zeros: dict[str, int],
) -> PruneResult:
    layers = [
        LayerSparsity(n.name, n.op_type, w, arrays[w].size, int(np.sum(arrays[w] == 0))) for n, w in chosen
    ] + [LayerSparsity(n.name, n.op_type, w, arrays[w].size, int(np.sum(arrays[w] == 0)), why) for n, w, why in skipped]
    modified = any(int(np.sum(arrays[w] == 0)) != before_zeros[w] for _, w in chosen)
    pruned = _write(model, {w: arrays[w] for _, w in chosen}) if modified else model
    dense = sum(arrays[w].nbytes for _, w in chosen)
    sparse = sum(sparse_storage_bytes(arrays[w]) for _, w in chosen)
    return PruneResult(pruned, modified, layers, dense, sparse)


def prune_unstructured(model: onnx.ModelProto, config: PruneConfig | None = None) -> PruneResult:
    """Zeroes the smallest-magnitude weights.

    Args:
        model: The model (weights as initializers).
        config: Target sparsity, scope and exclusions.

    Returns:
        The :class:`PruneResult`. The targeted weights hold exactly
        ``round(sparsity * size)`` zeros (per layer, or over all of them in
        global scope) unless they already had more.

    Raises:
        ConfigError: an exclusion or per-layer name matches nothing.
    """
    cfg = config or PruneConfig()
    chosen, skipped = _selected(model, cfg.exclude, cfg.include_first_last)
    node_names = {n.name for n, _ in chosen} | {n.name for n, _, _ in skipped}
    unknown = sorted(set(cfg.per_layer) - node_names)
    if unknown:
        raise ConfigError(
            f"pruning: per_layer names no weighted layer: {', '.join(unknown)}",
            hint="Name Conv/Gemm/MatMul nodes as shown by `edgekit inspect MODEL --json`.",
        )
    arrays = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    before = {w: int(np.sum(arrays[w] == 0)) for _, w in chosen}
    own = [(n, w) for n, w in chosen if n.name in cfg.per_layer or cfg.scope == "layer"]
    pooled = [(n, w) for n, w in chosen if (n, w) not in own]
    for node, w in own:
        target = cfg.per_layer.get(node.name, cfg.sparsity)
        arr = arrays[w]
        arr[_smallest_mask(np.abs(arr), round(target * arr.size))] = 0
    if pooled:
        flat = np.concatenate([np.abs(arrays[w]).ravel() for _, w in pooled])
        mask = _smallest_mask(flat, round(cfg.sparsity * flat.size))
        offset = 0
        for _, w in pooled:
            arr = arrays[w]
            arr[mask[offset : offset + arr.size].reshape(arr.shape)] = 0
            offset += arr.size
    result = _result(model, arrays, chosen, skipped, before)
    logger.info("unstructured pruning: %.1f%% zeros in %d layers", 100 * result.sparsity, len(chosen))
    return result


def _reduction_axis(node: onnx.NodeProto, rank: int) -> int:
    if node.op_type == "Conv":
        return 1  # [O, I/group, kh, kw]: input channels
    if node.op_type == "ConvTranspose":
        return 0  # [I, O/group, kh, kw]
    if node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return 1 if trans_b else 0
    return rank - 2  # MatMul: [..., K, N]


def prune_nm(model: onnx.ModelProto, config: NMConfig | None = None) -> PruneResult:
    """Keeps the ``N`` largest of every ``M`` consecutive weights along each
    layer's reduction axis.

    A layer whose reduction axis is not a multiple of ``M`` (e.g. a depthwise
    conv, with one input channel per group) is skipped, and the result says so.

    Args:
        model: The model.
        config: ``N``, ``M`` and exclusions.

    Returns:
        The :class:`PruneResult`.
    """
    cfg = config or NMConfig()
    chosen, skipped = _selected(model, cfg.exclude, cfg.include_first_last)
    arrays = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    before = {w: int(np.sum(arrays[w] == 0)) for _, w in chosen}
    done = []
    for node, w in chosen:
        arr = arrays[w]
        axis = _reduction_axis(node, arr.ndim)
        length = arr.shape[axis]
        if length % cfg.m:
            skipped.append((node, w, f"reduction axis of {length} is not a multiple of {cfg.m}"))
            continue
        moved = np.moveaxis(arr, axis, -1)
        blocks = moved.reshape(*moved.shape[:-1], length // cfg.m, cfg.m)
        order = np.argsort(np.abs(blocks), axis=-1, kind="stable")
        drop = np.zeros(blocks.shape, dtype=bool)
        np.put_along_axis(drop, order[..., : cfg.m - cfg.n], True, axis=-1)
        blocks = np.where(drop, 0, blocks)
        arrays[w] = np.moveaxis(blocks.reshape(moved.shape), -1, axis)
        done.append((node, w))
    result = _result(model, arrays, done, skipped, before)
    logger.info("%d:%d pruning: %d layers, %.1f%% zeros", cfg.n, cfg.m, len(done), 100 * result.sparsity)
    return result


class UnstructuredPrunePass(CompressionPass):
    """Recipe step ``prune``: :func:`prune_unstructured` as a pass."""

    name = "prune"

    def __init__(self, config: PruneConfig) -> None:
        self.config = config

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"sparsity": c.sparsity, "scope": c.scope, "per_layer": dict(c.per_layer),
                "exclude": list(c.exclude), "include_first_last": c.include_first_last}  # fmt: skip

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        r = prune_unstructured(model, self.config)
        notes = [f"{lay.node}: {lay.skipped}" for lay in r.layers if lay.skipped]
        return PassResult(r.model, r.modified, r.to_json(), notes)


class NMPrunePass(CompressionPass):
    """Recipe step ``prune-nm``: :func:`prune_nm` as a pass."""

    name = "prune-nm"

    def __init__(self, config: NMConfig) -> None:
        self.config = config

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"n": c.n, "m": c.m, "exclude": list(c.exclude), "include_first_last": c.include_first_last}

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        r = prune_nm(model, self.config)
        notes = [f"{lay.node}: {lay.skipped}" for lay in r.layers if lay.skipped]
        return PassResult(r.model, r.modified, r.to_json(), notes)

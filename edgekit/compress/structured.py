"""Structured channel (filter) pruning that really removes channels.

Zeroing weights leaves a dense kernel exactly as slow; removing whole output
channels of a convolution, and the matching input channels of everything
that reads them, makes every kernel on the way smaller. Three steps:

1. **Find the channel groups** (:mod:`edgekit.compress.channel_groups`):
   channels coupled by residual adds, depthwise convolutions, concatenations
   and flattens must go together; what the analysis does not understand
   keeps all its channels.
2. **Choose channels.** Each prunable group ranks its channels by the L1/L2
   norm of its producers' filters (or BatchNorm scale) and keeps the best
   ``1 - ratio``.
3. **Rewrite.** Every weight slice recorded during the analysis is applied
   with the kept positions of the tensor it is tied to; depthwise ``group``
   attributes and ``Reshape`` shape constants are updated.

The result is a smaller, valid ONNX model (checked with ``full_check`` and
strict shape inference) with fewer MACs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.core.errors import ConfigError
from edgekit.compress.channel_groups import ChannelAnalysis, ChannelGroup, collect_groups, propagate_channels
from edgekit.compress.passes import CompressionPass, PassContext, PassResult, finalize_model
from edgekit.frontend.rule_context import attr

__all__ = [
    "StructuredConfig",
    "StructuredResult",
    "prune_channels",
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
            or 8 often matter more than the last few channels). ``None``:
            the board's choice when a pipeline knows the board
            (:attr:`~edgekit.compress.passes.PassContext.channel_multiple`,
            e.g. 4 for the int8 dot products of x86 CPUs), else 1.
        min_channels: Never keep fewer channels than this in a group.
    """

    ratio: float = 0.3
    criterion: str = "l1"
    exclude: tuple[str, ...] = ()
    round_to: int | None = None
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
            if name == "round_to" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"StructuredConfig.{name} must be a positive integer, got {value!r}", hint="E.g. 1.")
        if isinstance(self.exclude, str):
            raise ConfigError("StructuredConfig.exclude must be a list of node names", hint='E.g. exclude=("conv1",).')
        object.__setattr__(self, "exclude", tuple(self.exclude))


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
# Importance and selection
# --------------------------------------------------------------------------- #


def _importance(an: ChannelAnalysis, root: int, criterion: str, notes: list[str]) -> np.ndarray:
    size = an.size[root]
    score = np.zeros(size, dtype=np.float64)
    if criterion == "bn" and an.bns.get(root):
        for node_i, _ in an.bns[root]:
            node = an.nodes[node_i]
            gamma = an.inits[node.input[1]].astype(np.float64)
            var = an.inits[node.input[4]].astype(np.float64)
            s = np.abs(gamma) / np.sqrt(var + float(attr(node, "epsilon", 1e-5)))
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
    round_to = cfg.round_to or 1
    keep = math.ceil(keep / round_to) * round_to
    return min(keep, size)


# --------------------------------------------------------------------------- #
# Rewrite
# --------------------------------------------------------------------------- #


def _positions(an: ChannelAnalysis, tensor: str, keep: dict[int, np.ndarray]) -> np.ndarray:
    c = an.chan[tensor]
    assert c is not None
    mask = np.ones(len(c), dtype=bool)
    roots = np.array([an.find(int(g)) for g in c.gid])
    for root in np.unique(roots):
        if int(root) in keep:
            sel = roots == root
            mask[sel] = keep[int(root)][c.idx[sel]]
    return mask


def _rewrite(
    an: ChannelAnalysis, keep: dict[int, np.ndarray]
) -> tuple[onnx.ModelProto, dict[str, tuple[int, np.ndarray]]]:
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
    an = propagate_channels(model, cfg.exclude)
    groups = collect_groups(an)
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
        self.round_to = config.round_to  # the board's choice once run, where not given

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"ratio": c.ratio, "criterion": c.criterion, "exclude": list(c.exclude),
                "round_to": self.round_to if self.round_to is not None else "board"}  # fmt: skip

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        config = self.config
        if config.round_to is None:
            config = replace(config, round_to=ctx.channel_multiple)
        self.round_to = config.round_to
        result = prune_channels(model, config)
        for tensor, (axis, kept) in result.channel_maps.items():
            if tensor in ctx.channel_maps:  # pruned twice: compose with the earlier cut
                _, earlier = ctx.channel_maps[tensor]
                kept = earlier[kept]
            ctx.channel_maps[tensor] = (axis, kept)
        return PassResult(result.model, result.modified, result.to_json(), result.notes)

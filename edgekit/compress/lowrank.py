"""Low-rank factorization of Gemm/MatMul (SVD) and Conv (Tucker-2) weights.

* **SVD** (``Gemm``, ``MatMul`` with a 2-D weight, and 1x1 ``Conv``): the
  weight ``W [K, N]`` becomes ``P [K, r] @ Q [r, N]`` — two matrix products
  (or two 1x1 convolutions) with ``r (K + N)`` instead of ``K N`` MACs per row.
* **Tucker-2** (k x k ``Conv`` with ``group=1``): ``W [O, I, kh, kw]`` becomes
  a 1x1 conv ``I -> r_in``, a k x k core conv ``r_in -> r_out`` with the
  original strides/pads, and a 1x1 conv ``r_out -> O`` carrying the bias. The
  factors come from a truncated HOSVD refined by a few HOOI sweeps.

Ranks are chosen per layer from an energy budget (``rank_energy``: keep this
fraction of the squared singular values of each unfolding) or an error budget
(``max_error``: relative Frobenius error of the weight). A layer whose
factorized form would need **at least as many MACs** as the original is left
alone: three small kernels are not faster than one that does the same work.

The tensor decompositions are a few lines of numpy; ``tensorly`` would add a
dependency for two functions.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

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
    "LowRankConfig",
    "LayerFactorization",
    "LowRankResult",
    "factorize",
    "svd_rank",
    "tucker2",
    "LowRankPass",
    "METHODS",
]

logger = logging.getLogger(__name__)

#: ``svd``: Gemm/MatMul/1x1 Conv; ``tucker``: k x k Conv; ``auto``: both.
METHODS = ("svd", "tucker", "auto")


@dataclass(frozen=True)
class LowRankConfig:
    """Which layers to factorize and how far.

    Attributes:
        method: ``svd``, ``tucker`` or ``auto`` (both, each where it applies).
        rank_energy: Fraction of squared singular values kept per unfolding,
            in (0, 1]. Ignored when ``max_error`` is set.
        max_error: Relative Frobenius error allowed per weight, in (0, 1).
        min_mac_saving: Factorize only when the MACs fall by at least this
            fraction (0: any saving).
        exclude: Node names left alone.
        hooi_iterations: HOOI refinement sweeps for Tucker-2.
    """

    method: str = "auto"
    rank_energy: float = 0.9
    max_error: float | None = None
    min_mac_saving: float = 0.0
    exclude: tuple[str, ...] = ()
    hooi_iterations: int = 2

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown low-rank method {self.method!r}", hint=f"Choose one of: {', '.join(METHODS)}.")
        energy = self.rank_energy
        if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0.0 < energy <= 1.0:
            raise ConfigError(f"rank_energy must be in (0, 1], got {energy!r}", hint="E.g. --rank-energy 0.9.")
        if self.max_error is not None and not (isinstance(self.max_error, (int, float)) and 0.0 < self.max_error < 1.0):
            raise ConfigError(f"max_error must be in (0, 1), got {self.max_error!r}", hint="E.g. 0.1 for 10%.")
        if not isinstance(self.min_mac_saving, (int, float)) or not 0.0 <= self.min_mac_saving < 1.0:
            raise ConfigError(f"min_mac_saving must be in [0, 1), got {self.min_mac_saving!r}", hint="E.g. 0.1.")
        if isinstance(self.exclude, str):
            raise ConfigError("LowRankConfig.exclude must be a list of node names", hint='E.g. ("fc1",).')
        if not isinstance(self.hooi_iterations, int) or self.hooi_iterations < 0:
            raise ConfigError(f"hooi_iterations must be >= 0, got {self.hooi_iterations!r}", hint="E.g. 2.")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @property
    def energy(self) -> float:
        """Energy kept per unfolding implied by the configuration."""
        if self.max_error is not None:
            return 1.0 - self.max_error**2
        return float(self.rank_energy)


@dataclass(frozen=True)
class LayerFactorization:
    """What happened to one candidate layer.

    Attributes:
        node: Node name.
        op: Op type.
        method: ``svd`` or ``tucker``.
        shape: Weight shape.
        ranks: Chosen rank(s).
        macs_before: MACs of the layer.
        macs_after: MACs of its factorized form.
        params_before: Weight elements before.
        params_after: Weight elements of the factors.
        rel_error: Relative Frobenius error of the factorized weight.
        applied: Whether the layer was replaced.
        reason: Why not, when not.
    """

    node: str
    op: str
    method: str
    shape: tuple[int, ...]
    ranks: tuple[int, ...]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    rel_error: float
    applied: bool
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "node": self.node, "op": self.op, "method": self.method, "shape": list(self.shape),
            "ranks": list(self.ranks), "macs_before": self.macs_before, "macs_after": self.macs_after,
            "params_before": self.params_before, "params_after": self.params_after,
            "rel_error": round(self.rel_error, 6), "applied": self.applied, "reason": self.reason,
        }  # fmt: skip


@dataclass
class LowRankResult:
    """What :func:`factorize` returns."""

    model: onnx.ModelProto
    modified: bool
    layers: list[LayerFactorization] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"applied": sum(lay.applied for lay in self.layers), "layers": [lay.to_json() for lay in self.layers]}


# --------------------------------------------------------------------------- #
# Decompositions
# --------------------------------------------------------------------------- #


def svd_rank(singular_values: np.ndarray, energy: float) -> int:
    """Smallest rank whose squared singular values reach ``energy`` of the total."""
    sq = np.asarray(singular_values, dtype=np.float64) ** 2
    total = sq.sum()
    if total == 0:
        return 1
    cum = np.cumsum(sq) / total
    return int(min(len(sq), np.searchsorted(cum, energy - 1e-12) + 1))


def _svd_factors(w: np.ndarray, energy: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``w [K, N] ~ p [K, r] @ q [r, N]``; returns (p, q, relative error)."""
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    r = svd_rank(s, energy)
    root = np.sqrt(s[:r])
    p, q = u[:, :r] * root, root[:, None] * vt[:r]
    norm = float(np.sqrt((s**2).sum()))
    err = float(np.sqrt((s[r:] ** 2).sum()) / norm) if norm else 0.0
    return p, q, err


def _mode_basis(unfolded: np.ndarray, energy: float) -> np.ndarray:
    u, s, _ = np.linalg.svd(unfolded, full_matrices=False)
    return u[:, : svd_rank(s, energy)]


def tucker2(w: np.ndarray, energy: float, iterations: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Tucker-2 decomposition of a conv weight over its two channel modes.

    Args:
        w: ``[O, I, kh, kw]``.
        energy: Energy kept in each channel-mode unfolding (HOSVD ranks).
        iterations: HOOI sweeps refining the factors at those ranks.

    Returns:
        ``(u_out [O, r_out], core [r_out, r_in, kh, kw], u_in [I, r_in],
        relative error)`` with ``w ~ core x0 u_out x1 u_in``.
    """
    w64 = w.astype(np.float64)
    o, i = w64.shape[:2]
    u_out = _mode_basis(w64.reshape(o, -1), energy)
    u_in = _mode_basis(np.moveaxis(w64, 1, 0).reshape(i, -1), energy)
    r_out, r_in = u_out.shape[1], u_in.shape[1]
    for _ in range(iterations):
        # HOOI: each factor is the leading subspace of w projected on the other.
        proj_in = np.einsum("oihw,ir->orhw", w64, u_in).reshape(o, -1)
        u_out = np.linalg.svd(proj_in, full_matrices=False)[0][:, :r_out]
        proj_out = np.einsum("oihw,or->irhw", w64, u_out).reshape(i, -1)
        u_in = np.linalg.svd(proj_out, full_matrices=False)[0][:, :r_in]
    core = np.einsum("oihw,or,is->rshw", w64, u_out, u_in)
    approx = np.einsum("rshw,or,is->oihw", core, u_out, u_in)
    norm = float(np.linalg.norm(w64))
    err = float(np.linalg.norm(w64 - approx) / norm) if norm else 0.0
    return u_out, core, u_in, err


# --------------------------------------------------------------------------- #
# Graph rewrite
# --------------------------------------------------------------------------- #


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Rewriter:
    def __init__(self, model: onnx.ModelProto, config: LowRankConfig) -> None:
        self.model = model
        self.cfg = config
        self.inits = initializer_arrays(model)
        self.shapes = tensor_shapes(model)
        self.used = {i.name for i in model.graph.initializer} | {
            n for node in model.graph.node for n in [*node.input, *node.output, node.name]
        }
        self.new_inits: list[onnx.TensorProto] = []

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def init(self, base: str, arr: np.ndarray) -> str:
        name = self.unique(base)
        self.new_inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def _rows(self, tensor: str) -> int:
        # A symbolic batch counts as 1: the MAC comparison is per sample.
        s = self.shapes.get(tensor) or (1, 1)
        return math.prod(max(d, 1) for d in s[:-1])

    def matrix(self, node: onnx.NodeProto) -> tuple[list[onnx.NodeProto] | None, LayerFactorization]:
        """Gemm / MatMul with a 2-D constant weight."""
        b = node.input[1]
        w = self.inits[b].astype(np.float64)
        alpha = 1.0
        if node.op_type == "Gemm":
            alpha = float(_attr(node, "alpha", 1.0))
            if _attr(node, "transB", 0):
                w = w.T
        k, n = w.shape
        rows = self._rows(node.input[0])
        p, q, err = _svd_factors(w * alpha, self.cfg.energy)
        r = p.shape[1]
        info = dict(node=node.name, op=node.op_type, method="svd", shape=tuple(self.inits[b].shape), ranks=(r,),
                    macs_before=rows * k * n, macs_after=rows * r * (k + n), params_before=k * n,
                    params_after=r * (k + n), rel_error=err)  # fmt: skip
        why = self._worse(info["macs_before"], info["macs_after"])
        if why:
            return None, LayerFactorization(**info, applied=False, reason=why)
        mid = self.unique(f"{node.output[0]}_lowrank")
        p_name, q_name = self.init(f"{b}_svd_p", p), self.init(f"{b}_svd_q", q)
        first = helper.make_node("MatMul", [node.input[0], p_name], [mid], self.unique(f"{node.name}_svd_p"))
        if node.op_type == "Gemm":
            inputs = [mid, q_name] + list(node.input[2:3])
            beta = float(_attr(node, "beta", 1.0))
            second = helper.make_node("Gemm", inputs, list(node.output), self.unique(f"{node.name}_svd_q"), beta=beta)
        else:
            second = helper.make_node("MatMul", [mid, q_name], list(node.output), self.unique(f"{node.name}_svd_q"))
        return [first, second], LayerFactorization(**info, applied=True)

    def _worse(self, before: int, after: int) -> str:
        if after >= before:
            return f"factorized form needs more MACs ({after} >= {before})"
        if after > (1.0 - self.cfg.min_mac_saving) * before:
            return f"saves only {1 - after / before:.1%} of the MACs (min_mac_saving={self.cfg.min_mac_saving})"
        return ""

    def conv(self, node: onnx.NodeProto) -> tuple[list[onnx.NodeProto] | None, LayerFactorization]:
        wname = node.input[1]
        w = self.inits[wname]
        o, i, kh, kw = w.shape
        xs, ys = self.shapes.get(node.input[0]), self.shapes.get(node.output[0])
        batch = ys[0] if ys and ys[0] > 0 else 1
        in_px = math.prod(xs[2:]) if xs and all(d > 0 for d in xs[2:]) else 0
        out_px = math.prod(ys[2:]) if ys and all(d > 0 for d in ys[2:]) else 0
        bias = list(node.input[2:3])
        keep_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "group"}
        if kh == kw == 1 and self.cfg.method in ("svd", "auto"):
            # A 1x1 conv is a matrix product per pixel: split it like a Gemm.
            p, q, err = _svd_factors(w.reshape(o, i).T, self.cfg.energy)
            r = p.shape[1]
            info = dict(node=node.name, op="Conv", method="svd", shape=tuple(w.shape), ranks=(r,),
                        macs_before=batch * out_px * o * i, macs_after=batch * out_px * r * (o + i),
                        params_before=o * i, params_after=r * (o + i), rel_error=err)  # fmt: skip
            if not out_px:
                return None, LayerFactorization(**info, applied=False, reason="output shape unknown")
            why = self._worse(info["macs_before"], info["macs_after"])
            if why:
                return None, LayerFactorization(**info, applied=False, reason=why)
            mid = self.unique(f"{node.output[0]}_lowrank")
            first = helper.make_node("Conv", [node.input[0], self.init(f"{wname}_svd_p", p.T.reshape(r, i, 1, 1))],
                                     [mid], self.unique(f"{node.name}_svd_p"), **keep_attrs)  # fmt: skip
            q_name = self.init(f"{wname}_svd_q", q.T.reshape(o, r, 1, 1))
            second = helper.make_node("Conv", [mid, q_name, *bias], list(node.output),
                                      self.unique(f"{node.name}_svd_q"), kernel_shape=[1, 1])  # fmt: skip
            return [first, second], LayerFactorization(**info, applied=True)
        if self.cfg.method not in ("tucker", "auto") or (kh == kw == 1):
            why = f"method {self.cfg.method!r} does not apply to this conv"
            return None, LayerFactorization(
                node.name, "Conv", "tucker", tuple(w.shape), (), 0, 0, w.size, w.size, 0.0, False, why
            )
        u_out, core, u_in, err = tucker2(w, self.cfg.energy, self.cfg.hooi_iterations)
        r_out, r_in = u_out.shape[1], u_in.shape[1]
        info = dict(node=node.name, op="Conv", method="tucker", shape=tuple(w.shape), ranks=(r_out, r_in),
                    macs_before=batch * out_px * o * i * kh * kw,
                    macs_after=batch * (in_px * i * r_in + out_px * (r_out * r_in * kh * kw + r_out * o)),
                    params_before=w.size, params_after=i * r_in + core.size + r_out * o, rel_error=err)  # fmt: skip
        if not out_px or not in_px:
            return None, LayerFactorization(**info, applied=False, reason="activation shapes unknown")
        why = self._worse(info["macs_before"], info["macs_after"])
        if why:
            return None, LayerFactorization(**info, applied=False, reason=why)
        t1 = self.unique(f"{node.output[0]}_tucker_in")
        t2 = self.unique(f"{node.output[0]}_tucker_core")
        # No bias before the core: the zero padding of the core conv must see
        # zeros, which U_in^T x is where x is padded.
        n1 = helper.make_node("Conv", [node.input[0], self.init(f"{wname}_tucker_in", u_in.T.reshape(r_in, i, 1, 1))],
                              [t1], self.unique(f"{node.name}_tucker_in"), kernel_shape=[1, 1])  # fmt: skip
        n2 = helper.make_node("Conv", [t1, self.init(f"{wname}_tucker_core", core)], [t2],
                              self.unique(f"{node.name}_tucker_core"), **keep_attrs)  # fmt: skip
        out_name = self.init(f"{wname}_tucker_out", u_out.reshape(o, r_out, 1, 1))
        n3 = helper.make_node("Conv", [t2, out_name, *bias], list(node.output),
                              self.unique(f"{node.name}_tucker_out"), kernel_shape=[1, 1])  # fmt: skip
        return [n1, n2, n3], LayerFactorization(**info, applied=True)


def _candidate(node: onnx.NodeProto, rw: _Rewriter) -> str:
    """Which decomposition applies to ``node`` ("" for none)."""
    if node.domain not in ("", "ai.onnx") or len(node.input) < 2 or node.input[1] not in rw.inits:
        return ""
    w = rw.inits[node.input[1]]
    if w.dtype != np.float32:
        return ""
    if node.op_type == "Gemm" and not _attr(node, "transA", 0) and w.ndim == 2:
        return "matrix" if rw.cfg.method in ("svd", "auto") else ""
    if node.op_type == "MatMul" and w.ndim == 2:
        return "matrix" if rw.cfg.method in ("svd", "auto") else ""
    if node.op_type == "Conv" and w.ndim == 4 and int(_attr(node, "group", 1)) == 1:
        return "conv"
    return ""


def factorize(model: onnx.ModelProto, config: LowRankConfig | None = None) -> LowRankResult:
    """Replaces weights by low-rank factors where that saves MACs.

    Args:
        model: A model with static shapes (MACs need activation sizes).
        config: Method, rank budget and exclusions.

    Returns:
        The :class:`LowRankResult`; every candidate layer is listed, with the
        reason when it was left alone.

    Raises:
        ConfigError: an excluded name is not a node of the model.
        ModelError: the rewritten model is invalid (an edgekit bug).
    """
    cfg = config or LowRankConfig()
    unknown = set(cfg.exclude) - {n.name for n in model.graph.node}
    if unknown:
        raise ConfigError(
            f"low-rank: exclude names no node: {', '.join(sorted(unknown))}",
            hint="Use node names as shown by `edgekit inspect MODEL --json` (layers[].name).",
        )
    rw = _Rewriter(model, cfg)
    layers: list[LayerFactorization] = []
    new_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        kind = _candidate(node, rw)
        if not kind or node.name in cfg.exclude:
            new_nodes.append(node)
            continue
        replacement, info = rw.matrix(node) if kind == "matrix" else rw.conv(node)
        layers.append(info)
        new_nodes.extend(replacement if replacement else [node])
    if not any(lay.applied for lay in layers):
        return LowRankResult(model, False, layers)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    out.graph.initializer.extend(rw.new_inits)
    out = finalize_model(out, what="low-rank factorization")
    logger.info("low-rank: factorized %d of %d candidate layers", sum(lay.applied for lay in layers), len(layers))
    return LowRankResult(out, True, layers)


class LowRankPass(CompressionPass):
    """Recipe step ``low-rank``: :func:`factorize` as a pass."""

    name = "low-rank"

    def __init__(self, config: LowRankConfig) -> None:
        self.config = config

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"method": c.method, "rank_energy": c.rank_energy, "max_error": c.max_error,
                "min_mac_saving": c.min_mac_saving, "exclude": list(c.exclude)}  # fmt: skip

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        r = factorize(model, self.config)
        notes = [f"{lay.node}: {lay.reason}" for lay in r.layers if not lay.applied]
        return PassResult(r.model, r.modified, r.to_json(), notes)

"""SmoothQuant-style scale migration for MatMul/Gemm layers whose input
activations have outlier channels.

A transformer block's projections read a normalized activation in which a few
channels are far larger than the rest; one int8 scale for the whole tensor
then spends its 256 levels on those channels and rounds the others coarsely.
SmoothQuant (Xiao et al., 2023) divides input channel ``k`` by
``s_k = max|x_k|^α / max|W_k|^(1-α)`` and multiplies row ``k`` of the weight
by the same ``s_k``: the product is unchanged, the activation's channels come
closer together and the weight (quantized per output channel) absorbs the
difference.

The division must cost nothing at run time, so it is folded into the
per-channel affine op that produces the activation — here the ``Mul(γ)`` →
``Add(β)`` at the end of a (decomposed) LayerNorm, optionally followed by a
``Reshape`` that keeps the channel axis last, or a ``LayerNormalization``
node's scale and bias. Layers whose activation comes from anything else are
left alone (onnxruntime's own SmoothQuant, through Intel Neural Compressor,
inserts a ``Mul`` instead, which an integer-only target must then run).

Written here because onnxruntime's version needs ``neural-compressor`` and
NNCF's runs only inside ``nncf.quantize``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.compress.calibration import Feeds
from edgekit.compress.quality import exposing_session

__all__ = ["SmoothedLayer", "smooth_quant", "OUTLIER_RATIO"]

logger = logging.getLogger(__name__)

#: An activation has outlier channels when its largest per-channel maximum
#: is at least this many times the median one.
OUTLIER_RATIO = 4.0


@dataclass
class SmoothedLayer:
    """One layer whose input channels were rescaled.

    Attributes:
        node: The MatMul/Gemm.
        folded_into: The node(s) that absorbed the division.
        outlier_ratio: Largest / median per-channel max |x| before.
        outlier_ratio_after: The same after smoothing.
    """

    node: str
    folded_into: list[str]
    outlier_ratio: float
    outlier_ratio_after: float


@dataclass
class _Site:
    node: onnx.NodeProto
    weight: str
    weight_axis: int  # the input-channel axis of the weight
    activation: str
    scale_inits: list[str]  # per-channel initializers to divide by s (gamma, beta)
    folded_into: list[str]


def _sites(model: onnx.ModelProto) -> list[_Site]:
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    used = defaultdict(int)
    for n in g.node:
        for i in n.input:
            used[i] += 1

    def per_channel_const(name: str, k: int) -> bool:
        return name in inits and used[name] == 1 and tuple(inits[name].dims) in ((k,), (1, k), (1, 1, k))

    sites = []
    for node in g.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        if len(w.dims) != 2 or used[node.input[1]] != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and attrs.get("transA", 0):
            continue
        axis = 1 if node.op_type == "Gemm" and attrs.get("transB", 0) else 0
        k = int(w.dims[axis])
        tensor = node.input[0]
        # Up through a Reshape that keeps the channel axis last.
        p = producers.get(tensor)
        if p is not None and p.op_type == "Reshape" and len(consumers[tensor]) == 1:
            tensor = p.input[0]
            p = producers.get(tensor)
        if p is None or len(consumers[tensor]) != 1:
            continue
        if p.op_type == "LayerNormalization" and len(p.input) >= 3 and all(per_channel_const(i, k) for i in p.input[1:3]):
            sites.append(_Site(node, node.input[1], axis, node.input[0], list(p.input[1:3]), [p.name]))
            continue
        if p.op_type != "Add":
            continue
        beta = next((i for i in p.input if per_channel_const(i, k)), None)
        other = next((i for i in p.input if i != beta), None)
        mul = producers.get(other) if other else None
        if beta is None or mul is None or mul.op_type != "Mul" or len(consumers[other]) != 1:
            continue
        gamma = next((i for i in mul.input if per_channel_const(i, k)), None)
        if gamma is None:
            continue
        sites.append(_Site(node, node.input[1], axis, node.input[0], [gamma, beta], [mul.name, p.name]))
    return sites


def _ratio(amax: np.ndarray) -> float:
    med = float(np.median(amax))
    return float(amax.max()) / med if med > 0 else float("inf")


def smooth_quant(
    model: onnx.ModelProto,
    feeds: Sequence[Feeds],
    *,
    alpha: float = 0.5,
    outlier_ratio: float = OUTLIER_RATIO,
) -> tuple[onnx.ModelProto, list[SmoothedLayer]]:
    """Migrates activation outliers into the weights of foldable MatMul/Gemm layers.

    Args:
        model: The fp32 model (not modified).
        feeds: Calibration runs (per-channel maxima are taken over all of them).
        alpha: Migration strength: 0 leaves the activation alone, 1 moves all
            of its range into the weight.
        outlier_ratio: Smooth only activations whose largest per-channel
            maximum is at least this many times the median one.

    Returns:
        The smoothed copy (same function, up to float rounding) and the
        layers changed.
    """
    sites = _sites(model)
    if not sites or not feeds:
        return model, []
    names = sorted({s.activation for s in sites})
    sess = exposing_session(model, names)
    amax: dict[str, np.ndarray] = {}
    for f in feeds:
        for name, value in zip(names, sess.run(names, f)):
            m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            amax[name] = m if name not in amax else np.maximum(amax[name], m)

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    smoothed = []
    for site in sites:
        a = amax[site.activation].astype(np.float64)
        before = _ratio(a)
        if before < outlier_ratio:
            continue
        w = numpy_helper.to_array(inits[site.weight]).astype(np.float64)
        wmax = np.abs(w).max(axis=1 - site.weight_axis)
        s = np.power(np.maximum(a, 1e-8), alpha) / np.power(np.maximum(wmax, 1e-8), 1.0 - alpha)
        s = np.clip(s, 1e-4, 1e4)
        shape = (-1, 1) if site.weight_axis == 0 else (1, -1)
        new_w = (w * s.reshape(shape)).astype(np.float32)
        inits[site.weight].CopyFrom(numpy_helper.from_array(new_w, site.weight))
        for name in site.scale_inits:
            arr = numpy_helper.to_array(inits[name]).astype(np.float64)
            inits[name].CopyFrom(numpy_helper.from_array((arr / s.reshape(arr.shape)).astype(np.float32), name))
        smoothed.append(SmoothedLayer(site.node.name, site.folded_into, before, _ratio(a / s)))
    logger.info("SmoothQuant (alpha %.2f): %d of %d foldable MatMul/Gemm layers had outlier channels and were smoothed",
                alpha, len(smoothed), len(sites))
    return out, smoothed

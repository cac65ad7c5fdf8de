"""Bias correction of a QDQ model: remove the mean shift int8 adds to each
weighted layer's output.

Rounding the weights to int8 and clipping or rounding a layer's input moves
the *mean* of its output channels, and that systematic error adds up through
the network where zero-mean noise partly cancels (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", 2019). The
correction here is the empirical one: on the calibration data, the shadow
model of :func:`edgekit.compress.fallback.rank_layers` runs every Conv/Gemm
with its int8 weights and its input through the same Q/DQ as in the QDQ
model, *fed with the fp32 model's own tensors*, beside the fp32 layer; the
mean difference per output channel is the shift the layer's quantization adds
on its own, and it is subtracted from the layer's int32 bias (in units of the
bias scale). Feeding fp32 tensors keeps each correction to the layer's own
error: correcting every layer by the shift measured in the quantized model
would correct an upstream layer's shift twice.

Layers without a bias (MatMul, Conv without one) are left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.compress.calibration import Feeds
from edgekit.compress.fallback import SHADOW_SUFFIX, shadow_model
from edgekit.compress.quality import exposing_session

__all__ = ["BiasCorrection", "correct_biases"]

logger = logging.getLogger(__name__)

_INT32 = np.iinfo(np.int32)


@dataclass
class BiasCorrection:
    """What :func:`correct_biases` changed.

    Attributes:
        layers: Node name -> largest correction, in units of the layer's
            bias scale (int32 steps).
        mean_shift: Node name -> mean |shift| per channel before the
            correction, relative to the output's standard deviation.
    """

    layers: dict[str, int]
    mean_shift: dict[str, float]


def _biased_layers(qmodel: onnx.ModelProto) -> dict[str, tuple[onnx.NodeProto, onnx.NodeProto]]:
    """Conv/Gemm nodes whose bias is an int32 initializer behind a DequantizeLinear:
    node name -> (node, that DequantizeLinear)."""
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    inits = {t.name for t in qmodel.graph.initializer}
    out = {}
    for node in qmodel.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or not node.input[2]:
            continue
        dq = producers.get(node.input[2])
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            out[node.name] = (node, dq)
    return out


def correct_biases(
    qmodel: onnx.ModelProto, fp32: onnx.ModelProto, feeds: Sequence[Feeds]
) -> tuple[onnx.ModelProto, BiasCorrection]:
    """Subtracts each Conv/Gemm's own mean output shift from its int32 bias.

    Args:
        qmodel: The QDQ model (not modified).
        fp32: The fp32 model it was quantized from.
        feeds: Calibration runs to measure the shift on.

    Returns:
        The corrected copy and what was corrected.
    """
    layers = _biased_layers(qmodel)
    result = BiasCorrection({}, {})
    if not layers or not feeds:
        return qmodel, result
    shadow, _ = shadow_model(qmodel, fp32, list(layers))
    fnodes = {n.name: n for n in fp32.graph.node}
    pairs = [(name, fnodes[name].output[0], layers[name][0].output[0] + SHADOW_SUFFIX) for name in layers
             if name in fnodes]  # fmt: skip
    shadow_outputs = {o for n in shadow.graph.node for o in n.output}
    pairs = [p for p in pairs if p[2] in shadow_outputs]
    tensors = sorted({t for _, ref, test in pairs for t in (ref, test)})
    sess = exposing_session(shadow, tensors)
    sums: dict[str, np.ndarray] = {}
    spread: dict[str, float] = {}
    count: dict[str, int] = {}
    for f in feeds:
        values = dict(zip(tensors, sess.run(tensors, f)))
        for name, ref, test in pairs:
            node = layers[name][0]
            axis = 1 if node.op_type == "Conv" else -1
            diff = np.moveaxis(values[test].astype(np.float64) - values[ref].astype(np.float64), axis, -1)
            channels = diff.shape[-1]
            sums[name] = sums.get(name, 0.0) + diff.reshape(-1, channels).sum(axis=0)
            count[name] = count.get(name, 0) + diff.size // channels
            spread[name] = max(spread.get(name, 0.0), float(np.std(values[ref])))

    out = onnx.ModelProto()
    out.CopyFrom(qmodel)
    inits = {t.name: t for t in out.graph.initializer}
    for name, _, _ in pairs:
        _, dq = layers[name]
        shift = sums[name] / max(count[name], 1)
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
        bias = inits[dq.input[0]]
        q = numpy_helper.to_array(bias).astype(np.int64)
        if q.shape != shift.shape:  # a broadcast bias; leave it
            continue
        steps = np.round(shift / np.broadcast_to(scale, q.shape)).astype(np.int64)
        if not steps.any():
            continue
        corrected = np.clip(q - steps, _INT32.min, _INT32.max).astype(np.int32)
        bias.CopyFrom(numpy_helper.from_array(corrected, bias.name))
        result.layers[name] = int(np.abs(steps).max())
        result.mean_shift[name] = float(np.mean(np.abs(shift))) / spread[name] if spread[name] > 0 else 0.0
    logger.info("bias correction: %d of %d Conv/Gemm layers corrected", len(result.layers), len(layers))
    return out, result

"""The integer reference: numpy execution of :mod:`edgekit.npu.layers`.

It defines what the accelerator must produce, bit for bit: int32
accumulation (exact, computed in float64 which is exact for these sums) and
the fixed-point requantization of :mod:`edgekit.core.fixedpoint`.
"""

from __future__ import annotations

import logging

import numpy as np

from edgekit.npu.layers import AddLayer, ConvLayer, NpuLayer, apply_requant, resadd

__all__ = ["run_layer", "conv_accumulators"]

logger = logging.getLogger(__name__)


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32)


def conv_accumulators(layer: ConvLayer, x: np.ndarray) -> np.ndarray:
    """int32 accumulators ``[OC, OH, OW]`` for one ``(C, H, W)`` int8 input."""
    c, h, w = layer.in_shape
    oc, oh, ow = layer.out_shape
    kh, kw = layer.weight.shape[2:]
    sh, sw = layer.strides
    dh, dw = layer.dilations
    pt, pl, pb, pr = layer.pads
    xp = np.full((c, h + pt + pb, w + pl + pr), layer.zx, dtype=np.float64)
    xp[:, pt : pt + h, pl : pl + w] = x
    acc = np.zeros((oc, oh, ow), dtype=np.float64)
    cpg = layer.weight.shape[1]
    wf = layer.weight.astype(np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw]
            if layer.group == 1:
                acc += np.tensordot(wf[:, :, i, j], patch, axes=([1], [0]))
            else:  # depthwise: channel multiplier 1
                acc += wf[:, 0, i, j][:, None, None] * patch[: oc * cpg]
    acc += layer.bias.astype(np.float64)[:, None, None]
    return _wrap_int32(acc)


def run_layer(layer: NpuLayer, inputs: list[np.ndarray]) -> np.ndarray:
    """Runs one layer on int8 inputs in the layer's ``(C, H, W)`` view.

    Returns:
        int8 output ``(OC, OH, OW)``.
    """
    if isinstance(layer, ConvLayer):
        y = conv_accumulators(layer, inputs[0])
    elif isinstance(layer, AddLayer):
        y = resadd(inputs[0], inputs[1], layer)
    else:  # pragma: no cover - the union is closed
        raise TypeError(type(layer).__name__)
    for stage in layer.stages:
        y = apply_requant(y, stage, channel_axis=0)
    return y.astype(np.int8)

"""Integer layers the accelerator runs, in a form independent of ONNX.

:mod:`edgekit.compiler.backends.npu.partition` builds these from a QDQ model;
:mod:`edgekit.npu.reference` executes them with numpy (the integer
reference) and :mod:`edgekit.compiler.backends.npu.codegen` lowers them to instructions.

Conventions: activations are int8 with a zero point, weights symmetric int8,
accumulators int32. A conv/gemm layer computes::

    acc[oc]  = sum_{ic,kh,kw} x[ic, .] * w[oc, ic, kh, kw] + bias[oc]
    y        = stage_1(acc), then stage_2(y) when present

where ``x`` is padded with its zero point and ``bias`` already holds the
zero-point correction ``-z_x * sum(w[oc])``; each stage is a
:class:`Requant` (the fixed-point math of
:mod:`edgekit.core.fixedpoint`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from edgekit.core.fixedpoint import FixedPoint, requantize, round_shift

__all__ = ["Requant", "ConvLayer", "AddLayer", "NpuLayer", "apply_requant", "resadd"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requant:
    """One requantization stage: ``clamp(((max?(x - zin, 0)) * m >> n) + zout, lo, hi)``.

    Attributes:
        fp: Multipliers and shifts, one per output channel (length OC).
        zin: Zero point subtracted first (0 for an accumulator).
        relu: Clamp ``x - zin`` at 0 before scaling (a ReLU on the real value).
        zout: Output zero point.
        lo: Lower clamp (folds Relu/Clip that follow in float).
        hi: Upper clamp.
    """

    fp: FixedPoint
    zin: int = 0
    relu: bool = False
    zout: int = 0
    lo: int = -128
    hi: int = 127


def apply_requant(x: np.ndarray, stage: Requant, channel_axis: int = -1) -> np.ndarray:
    """Applies ``stage`` to integer ``x`` whose ``channel_axis`` runs over output channels.

    Returns:
        int32 array of int8-range values (kept wide: a second stage may follow).
    """
    v = np.asarray(x).astype(np.int64) - np.int64(stage.zin)
    if stage.relu:
        v = np.maximum(v, 0)
    shape = [1] * v.ndim
    shape[channel_axis] = -1
    fp = FixedPoint(stage.fp.multiplier.reshape(shape), stage.fp.shift.reshape(shape))
    return requantize(v, fp, stage.zout, stage.lo, stage.hi).astype(np.int32)


def resadd(a: np.ndarray, b: np.ndarray, layer: "AddLayer") -> np.ndarray:
    """The residual add's first stage on int8 operands (int32 result)."""
    x = (a.astype(np.int64) - layer.za) * layer.ma + (b.astype(np.int64) - layer.zb) * layer.mb
    y = round_shift(x, layer.shift) + layer.zout
    return np.clip(y, layer.lo, layer.hi).astype(np.int32)


@dataclass
class ConvLayer:
    """A convolution (or Gemm/MatMul seen as a 1x1 convolution over rows).

    Attributes:
        name: Name of the ONNX compute node.
        nodes: Every ONNX node fused into this layer.
        input: Name of the int8 input tensor.
        output: Name of the int8 output tensor.
        in_shape: ``(C, H, W)`` of the input (batch 1); a ``[N, K]`` matrix is
            ``(K, 1, N)``.
        out_shape: ``(OC, OH, OW)``.
        weight: int8 ``[OC, C // group, KH, KW]``.
        bias: int32 ``[OC]`` in accumulator units, zero-point correction included.
        zx: Input zero point (the padding value).
        strides, pads, dilations: ``pads`` is (top, left, bottom, right).
        group: 1 (dense) or C (depthwise).
        stages: One or two :class:`Requant` stages.
        layout: ``"nchw"`` or ``"rows"`` (a 2-D ``[N, K]`` tensor).
        op: The ONNX op type (``Conv``, ``Gemm``, ``MatMul``).
    """

    name: str
    nodes: tuple[str, ...]
    input: str
    output: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    weight: np.ndarray
    bias: np.ndarray
    zx: int
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    stages: tuple[Requant, ...] = ()
    layout: str = "nchw"
    op: str = "Conv"
    kind: str = field(default="conv", init=False)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.input,)

    @property
    def macs(self) -> int:
        oc, oh, ow = self.out_shape
        return int(oc * oh * ow * self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3])


@dataclass
class AddLayer:
    """An element-wise add of two int8 tensors of one shape, one rounding.

    ``y = clamp(round_shift((a - za)*ma + (b - zb)*mb, shift) + zout, lo, hi)``
    (:func:`edgekit.core.fixedpoint.round_shift`: ties to even),
    then ``stages`` (a following quantized ReLU, if fused).
    """

    name: str
    nodes: tuple[str, ...]
    a: str
    b: str
    output: str
    shape: tuple[int, int, int]
    za: int
    zb: int
    ma: int
    mb: int
    shift: int
    zout: int
    lo: int = -128
    hi: int = 127
    stages: tuple[Requant, ...] = ()
    layout: str = "nchw"
    op: str = "Add"
    kind: str = field(default="add", init=False)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.a, self.b)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.shape

    @property
    def macs(self) -> int:
        return 0


NpuLayer = ConvLayer | AddLayer

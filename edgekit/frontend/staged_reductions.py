"""Long float sums in stages, so they are as accurate as onnxruntime's.

TVM lowers ``ReduceMean``/``ReduceSum`` over several axes to one sequential
float32 loop per output element; its rounding error grows with the number of
terms. PP-OCRv6's text detector takes the mean of 80x80 feature maps in its
squeeze-and-excitation blocks: that one op moved the detector's output
7e-5 (relative max error) away from a float64 reference, ten times further
than onnxruntime, whose reductions sum in blocks
(``benchmarks/real_models_accuracy.py``, docs/conformance.md).

Reducing one axis first and then the others makes each sum as long as one
axis instead of their product: a mean of 80x80 values becomes 80 means of 80,
then their mean (exact arithmetic gives the same value; equal counts make a
mean of means the mean). The rule stages float reductions over more than
:data:`MIN_ELEMENTS` elements spread over two or more axes. A reduction of
dequantized int8 values is left whole: the integer lowering sums it exactly
in int32 and needs it as one op.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.frontend.rule_context import FLOATS, Context, Rewrite, Rule, attr, elem

__all__ = ["ACCURACY_RULES", "MIN_ELEMENTS"]

logger = logging.getLogger(__name__)

#: Reductions over at most this many elements stay one loop.
MIN_ELEMENTS = 256
#: Opset from which each op takes ``axes`` as an input instead of an attribute.
_AXES_INPUT_FROM = {"ReduceSum": 13, "ReduceMean": 18}


def _axes(node: onnx.NodeProto, ctx: Context, rank: int) -> list[int] | None:
    if ctx.opset >= _AXES_INPUT_FROM[node.op_type]:
        if len(node.input) < 2 or not node.input[1]:
            axes = []
        else:
            value = ctx.const(node, 1)
            if value is None:
                return None  # computed at run time
            axes = [int(a) for a in value.reshape(-1)]
    else:
        axes = list(attr(node, "axes", []))
    if not axes:
        return None if int(attr(node, "noop_with_empty_axes", 0)) else list(range(rank))
    return sorted({a % rank for a in axes})


def _reduce(node: onnx.NodeProto, ctx: Context, x: str, y: str, axes: list[int], keepdims: int,
            inits: list[onnx.TensorProto]) -> onnx.NodeProto:
    if ctx.opset >= _AXES_INPUT_FROM[node.op_type]:
        name = f"{y}__axes"
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), name))
        return helper.make_node(node.op_type, [x, name], [y], keepdims=keepdims)
    return helper.make_node(node.op_type, [x], [y], axes=axes, keepdims=keepdims)


def staged_reduction(node: onnx.NodeProto, ctx: Context) -> Rewrite | None:
    """A float ``ReduceSum``/``ReduceMean`` over more than :data:`MIN_ELEMENTS`
    elements on two or more axes, as one over its last reduced axis followed by
    one over the rest (applied again to the rest while it still qualifies)."""
    x = node.input[0]
    shape = ctx.shape(x)
    if shape is None or elem(ctx, x) not in FLOATS or ctx.producers.get(x) == "DequantizeLinear":
        return None
    axes = _axes(node, ctx, len(shape))
    if axes is None:
        return None
    long_axes = [a for a in axes if shape[a] > 1]
    if len(long_axes) < 2 or int(np.prod([shape[a] for a in long_axes])) <= MIN_ELEMENTS:
        return None
    first = long_axes[-1]
    partial = f"{node.output[0]}__staged{first}"
    inits: list[onnx.TensorProto] = []
    nodes = [
        _reduce(node, ctx, x, partial, [first], 1, inits),
        # The first axis is of size 1 now: reducing it again costs nothing and
        # drops it where keepdims=0.
        _reduce(node, ctx, partial, node.output[0], axes, int(attr(node, "keepdims", 1)), inits),
    ]
    return Rewrite(nodes, inits)


ACCURACY_RULES: dict[str, Rule] = {"ReduceMean": staged_reduction, "ReduceSum": staged_reduction}

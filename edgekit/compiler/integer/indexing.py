"""A piece of a Split on the int8 tensor.

TVM imports ONNX ``Split`` as ``relax.split`` (a tuple) read by
``TupleGetItem``; the quantizer puts one ``QuantizeLinear`` on each piece.
Each output element of a piece is one input element, so the piece commutes
with the elementwise ``quantize(dequantize(.))`` map between the input's and
the output's quantization: each piece becomes its own ``strided_slice`` of
the int8 tensor (one ``split`` per piece would compute every piece each
time), requantized by a table only when the scales differ. YOLOv8's C2f
blocks split every stage's feature map in two this way; kept in float,
each piece was a dequantize -> float copy -> quantize round trip.

The other element-picking ops -- nearest ``Resize``, ``Slice`` -- commute
the same way and are lowered with the elementwise chain before them
(:func:`edgekit.compiler.integer.lut.lut_of_chain`).
"""

from __future__ import annotations

import logging

from tvm import relax
from tvm.relax import op as R
from tvm.relax.dpl import DFPattern, is_op, is_tuple_get_item, wildcard

from edgekit.compiler.integer.context import LoweringContext, Skip
from edgekit.compiler.integer.lut import identity_or_lut
from edgekit.compiler.integer.patterns import dequantize
from edgekit.compiler.integer.pool import int8_output

__all__ = ["SPLIT", "lower_split", "split_bounds"]

logger = logging.getLogger(__name__)


class _SplitPattern:
    """``quantize(split(dequantize(x))[i])``."""

    def __init__(self) -> None:
        self.x = dequantize()
        self.split = is_op("relax.split")(self.x)
        self.item = is_tuple_get_item(self.split)
        self.root = is_op("relax.quantize")(self.item, wildcard(), wildcard())


SPLIT = _SplitPattern()


def split_bounds(size: int, indices_or_sections: object) -> list[tuple[int, int]]:
    """``(begin, end)`` of each piece of ``split`` along an axis of ``size`` elements.

    ``indices_or_sections``: the number of equal pieces (an int) or the split
    points (a list), as ``relax.split``'s attribute holds them.
    """
    if hasattr(indices_or_sections, "__len__"):  # a list, tuple or TVM Array of split points
        points = [int(i) for i in indices_or_sections]  # type: ignore[union-attr]
    else:
        n = int(indices_or_sections)  # type: ignore[call-overload]
        step = -(-size // n)  # topi's split: ceil(size / n) per piece
        points = [step * i for i in range(1, n)]
    edges = [0, *points, size]
    return [(min(a, size), min(b, size)) for a, b in zip(edges, edges[1:])]


def lower_split(ctx: LoweringContext, q_call: relax.Call, m: dict[DFPattern, relax.Expr]) -> tuple[str, str, relax.Expr]:
    """One piece of a split as a strided_slice of the int8 tensor (module docstring)."""
    out_dtype = int8_output(q_call)
    out = ctx.output_qparams(q_call)
    x_dq = m[SPLIT.x]
    x_qp = ctx.input_qparams(x_dq)
    split, index = m[SPLIT.split], int(m[SPLIT.item].index)
    shape = ctx.shape(x_dq)
    axis = int(split.attrs.axis) % len(shape)
    pieces = split_bounds(shape[axis], split.attrs.indices_or_sections)
    if not 0 <= index < len(pieces):
        raise Skip(f"split piece {index} of {len(pieces)}")
    begin, end = pieces[index]
    piece = R.strided_slice(x_dq.args[0], axes=[axis], begin=[begin], end=[end])
    detail = f"piece {index} of {len(pieces)}" + ("" if x_qp.same_as(out) else ", requantized")
    return "split", detail, identity_or_lut(piece, x_qp, out, out_dtype)

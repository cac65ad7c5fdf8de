"""Integer-only lowering of QDQ models (issue 3, item 5).

:func:`lower_to_integer` rewrites the ``dequantize -> float op -> quantize``
chains that TVM's ONNX importer produces into int8 x int8 -> int32 compute
with fixed-point requantization (:mod:`.requant`), so quantized layers run
without float arithmetic. See ``docs/integer-lowering.md``.
"""

from edgekit.compiler.integer.lower import RULES, float_ops, lower_to_integer, lower_to_integer_with_report
from edgekit.compiler.integer.report import Chain, LoweringReport
from edgekit.core.fixedpoint import FixedPoint, quantize_multiplier, requantize

__all__ = [
    "lower_to_integer",
    "lower_to_integer_with_report",
    "float_ops",
    "RULES",
    "LoweringReport",
    "Chain",
    "FixedPoint",
    "quantize_multiplier",
    "requantize",
]

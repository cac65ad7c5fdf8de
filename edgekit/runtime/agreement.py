"""How close a compiled model's outputs must be to onnxruntime's to agree.

Two correct float32 implementations differ by rounding: each sums its dot
products in its own order (blocked, vectorized, split reductions). The
first-order bound on the error of a float32 sum of ``n`` products is
``n * u`` relative to the sum of magnitudes (Higham, *Accuracy and Stability
of Numerical Algorithms*, eq. 3.5), with ``u = 2**-24``; through a network the
errors of successive layers add. A fixed tolerance therefore flags large
correct models (a 2.3 GMAC model differed by 1.9e-4) while being right for
small ones, so the tolerance is the larger of a fixed floor and ``n * u``, with
``n`` the reduction lengths of the model's layers added up.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekit.package import Package

__all__ = ["AGREE_TOLERANCE", "UNIT_ROUNDOFF", "accumulation_length", "agree_tolerance"]

logger = logging.getLogger(__name__)

#: Smallest max relative error (see :func:`edgekit.runtime.stats.max_relative_error`)
#: that counts as a disagreement, whatever the model.
AGREE_TOLERANCE = 1e-4

#: float32 unit roundoff.
UNIT_ROUNDOFF = 2.0**-24


def accumulation_length(package: "Package") -> int:
    """Products summed along the model's layers: for each layer with MACs,
    its MACs per output element (the reduction length), added up.

    Returns 0 when the package holds no ``model.onnx`` or its shapes cannot be
    counted; then only the floor applies.
    """
    if "model.onnx" not in package:
        return 0
    import onnx

    from edgekit.frontend.analysis import analyze
    from edgekit.frontend.loader import load_model

    try:
        prepared = load_model(onnx.load_from_string(package.read("model.onnx")), simplify=False, check=False)
        layers = analyze(prepared).layers
    except Exception as exc:  # the floor still applies; never fail a bench over this
        logger.debug("cannot count the reduction lengths of %s: %s", package.path, exc)
        return 0
    return int(sum(layer.macs / math.prod(layer.output_shape)
                   for layer in layers if layer.macs and layer.output_shape and math.prod(layer.output_shape)))


def agree_tolerance(length: int) -> float:
    """The max relative error under which outputs agree, for a model whose
    layers sum ``length`` products in all (see the module docstring)."""
    return max(AGREE_TOLERANCE, length * UNIT_ROUNDOFF)

"""Model compression: int8 quantization (QDQ), with quality reports and
accuracy control, and normalization of pre-quantized (QOperator) models.

The public API::

    from edgekit.compress import QuantConfig, quantize
    result = quantize("model.onnx", QuantConfig(max_drop=1.0), calibration="cal.npz")
    result.save("model.int8.onnx")
    result.report.to_json()
"""

from __future__ import annotations

from edgekit.compress.config import CALIBRATION_METHODS, QuantConfig
from edgekit.compress.qoperator import NormalizeResult, is_qoperator_model, normalize_qoperator
from edgekit.compress.quality import Fallback, LayerQuality, OutputQuality, QualityReport, weight_bytes
from edgekit.compress.quantize import QuantResult, quantize, write_model

__all__ = [
    "CALIBRATION_METHODS",
    "QuantConfig",
    "QuantResult",
    "QualityReport",
    "OutputQuality",
    "LayerQuality",
    "Fallback",
    "NormalizeResult",
    "quantize",
    "normalize_qoperator",
    "is_qoperator_model",
    "weight_bytes",
    "write_model",
]

"""Model compression: int8 quantization (QDQ) with quality reports and
accuracy control, normalization of pre-quantized (QOperator) models, pruning
(unstructured, N:M, structured channels), low-rank factorization, accuracy
recovery, and recipes chaining them.

The public API::

    from edgekit.compress import QuantConfig, quantize
    result = quantize("model.onnx", QuantConfig(max_drop=1.0), calibration="cal.npz")
    result.save("model.int8.onnx")
    result.report.to_json()
"""

from __future__ import annotations

from edgekit.compress.config import CALIBRATION_METHODS, QuantConfig
from edgekit.compress.lowrank import LowRankConfig, factorize
from edgekit.compress.passes import CompressionStep, PassContext, run_pipeline
from edgekit.compress.payoff import PayoffReport, run_staged
from edgekit.compress.prune import NMConfig, PruneConfig, prune_nm, prune_unstructured
from edgekit.frontend.qoperator import NormalizeResult, is_qoperator_model, normalize_qoperator
from edgekit.compress.quality import Fallback, LayerQuality, OutputQuality, QualityReport, weight_bytes
from edgekit.compress.quantize import QuantResult, quantize, write_model
from edgekit.compress.recipe import load_recipe, run_recipe
from edgekit.compress.distillation import DistillConfig, distill
from edgekit.compress.layer_recovery import RecoveryConfig, bias_correction, least_squares_refit
from edgekit.compress.structured import StructuredConfig, prune_channels

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
    "PruneConfig",
    "NMConfig",
    "prune_unstructured",
    "prune_nm",
    "StructuredConfig",
    "prune_channels",
    "LowRankConfig",
    "factorize",
    "RecoveryConfig",
    "DistillConfig",
    "least_squares_refit",
    "bias_correction",
    "distill",
    "PassContext",
    "CompressionStep",
    "run_pipeline",
    "load_recipe",
    "run_recipe",
    "run_staged",
    "PayoffReport",
]

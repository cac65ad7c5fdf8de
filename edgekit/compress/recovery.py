"""Accuracy recovery after pruning or factorization: the ``recover`` step.

Three methods, each in its own module:

* ``refit`` and ``bias`` (:mod:`edgekit.compress.layer_recovery`, numpy and
  onnxruntime only): each layer's weights (or bias) fitted so that, fed the
  student's own inputs, it reproduces the fp32 teacher's output of that
  layer.
* ``distill`` (:mod:`edgekit.compress.distillation`, PyTorch): the whole
  student fine-tuned against the teacher's softened outputs.
"""

from __future__ import annotations

from typing import Any

import onnx

from edgekit.core.errors import ConfigError
from edgekit.compress.distillation import distill
from edgekit.compress.layer_recovery import bias_correction, least_squares_refit
from edgekit.compress.passes import CompressionPass, PassContext, PassResult

__all__ = ["RecoveryPass", "RECOVERY_METHODS"]

#: Recovery methods of :class:`RecoveryPass` (``distill`` needs PyTorch).
RECOVERY_METHODS = ("refit", "bias", "distill")


class RecoveryPass(CompressionPass):
    """Recipe step ``recover``: refit, bias correction or distillation against
    the pipeline's teacher, on ``ctx.calibration``.

    Args:
        method: ``refit``, ``bias`` or ``distill``.
        config: For ``refit`` / ``bias``: a :class:`edgekit.compress.layer_recovery.RecoveryConfig`; for
            ``distill``: an :class:`edgekit.compress.distillation.DistillConfig`.
    """

    name = "recover"

    def __init__(self, method: str = "refit", config: Any = None) -> None:
        if method not in RECOVERY_METHODS:
            raise ConfigError(
                f"unknown recovery method {method!r}", hint=f"Choose one of: {', '.join(RECOVERY_METHODS)}."
            )
        self.method = method
        self.config = config

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {"method": self.method, **({k: v for k, v in vars(cfg).items()} if cfg is not None else {})}

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        if ctx.calibration is None or ctx.teacher is None:
            raise ConfigError(
                "the recover step needs calibration data and the fp32 model",
                hint="Pass --calibration CAL.npz (one array per model input, first axis = samples).",
            )
        if self.method == "distill":
            r = distill(model, ctx.teacher, ctx.calibration, ctx.labels, self.config)
            return PassResult(r.model, r.modified, r.to_json())
        fn = least_squares_refit if self.method == "refit" else bias_correction
        r = fn(model, ctx.teacher, ctx.calibration, ctx.channel_maps, self.config)
        notes = [f"{lay.node}: {lay.reason}" for lay in r.layers if not lay.applied and lay.reason]
        return PassResult(r.model, r.modified, r.to_json(), notes)

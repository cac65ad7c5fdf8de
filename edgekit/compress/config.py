"""Typed, validated configuration of int8 post-training quantization.

:class:`QuantConfig` is the only way options reach onnxruntime's quantizer:
its string-keyed ``extra_options`` dict stays inside :meth:`QuantConfig.ort_kwargs`
so a typo is a :class:`~edgekit.core.errors.ConfigError` at construction time,
not a silently ignored key.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edgekit.core.errors import ConfigError
from edgekit.core.profiles import Board, Target

__all__ = ["QuantConfig", "CALIBRATION_METHODS", "DEFAULT_PERCENTILE", "WEIGHT_BITS"]

logger = logging.getLogger(__name__)

#: Calibration methods, as named on the command line. ``auto`` chooses among
#: the other three per tensor (:mod:`edgekit.compress.ranges`).
CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "auto")
#: Percentile onnxruntime's percentile calibrator uses when none is given.
DEFAULT_PERCENTILE = 99.999
#: Values of :attr:`QuantConfig.weight_bits`.
WEIGHT_BITS = ("auto", 8, 7)


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize a model to int8 (QDQ form) and how much loss is allowed.

    Weights and activations are always int8; the fields choose how their
    scales and zero points are found.

    Attributes:
        per_channel: One weight scale per output channel (``True``) or one per
            tensor.
        weight_symmetric: Weight zero points fixed at 0.
        activation_symmetric: Activation zero points fixed at 0.
        calibration_method: How activation ranges are found from the
            calibration data: ``minmax``, ``entropy``, ``percentile``, or
            ``auto``: per tensor, whichever of the three gives the smallest
            expected int8 error (graph outputs keep MinMax).
        percentile: Percentile kept by the ``percentile`` method, and by the
            percentile candidate of ``auto`` (``None``: 99.999). Only valid
            with those methods.
        calibration_samples: Use at most this many calibration samples
            (``None``: all of them).
        exclude: Node names or op types (e.g. ``"Softmax"``) left in float.
        max_drop: Accuracy budget in percentage points: the largest allowed
            fall of top-1 agreement with the fp32 model (or of a user metric).
            ``None`` turns accuracy control off unless ``min_sqnr_db`` is set.
        min_sqnr_db: Budget for outputs that are not class scores: every such
            output must keep at least this SQNR against fp32.
        eval_fraction: Share of the calibration data held out for evaluation
            when no evaluation data is given.
        seed: Seed of the calibration/evaluation split.
        float_head: Leave what produces the model's outputs in float: the
            outputs are not requantized to int8 and a weightless last op
            (Softmax, Sigmoid) computes in float; the last Conv/Gemm/MatMul
            keeps int8 weights and inputs (see
            :func:`edgekit.compress.fallback.float_head`).
        bias_correction: Subtract from each Conv/Gemm's int32 bias the mean
            shift its quantization adds to its output channels, measured on the
            calibration data (:mod:`edgekit.compress.bias_correction`).
        smooth_quant: Before quantizing, move outlier channels of MatMul/Gemm
            input activations into their weights where the division folds into
            a LayerNorm's scale and bias (:mod:`edgekit.compress.smoothquant`).
        smooth_quant_alpha: SmoothQuant's migration strength in [0, 1].
        chain_ends_only: Quantize an elementwise chain that is a function of
            one tensor (hard-swish as ``Add -> Clip -> Mul -> Div``, GELU,
            SiLU, ...) only at its input and output, with no int8 rounding
            inside (:mod:`edgekit.compress.chains`); the integer lowering
            runs each such chain as one lookup table. ``False``: onnxruntime's
            quantizer rounds after every op it knows.
        weight_bits: Width of the int8 weights' values: ``8`` (``[-127, 127]``),
            ``7`` (``[-64, 64]``, onnxruntime's ``reduce_range``), or ``auto``:
            7 where the target board's CPU is x86 with AVX2 and no VNNI
            (its ``vpmaddubsw`` then cannot saturate), 8 everywhere else
            (:mod:`edgekit.compress.weight_bits`). Without a board ``auto``
            is 8.
        max_time_s: Time budget of accuracy control in seconds, counted from
            the start of quantization: no new candidate is evaluated after it,
            and the best model found so far is returned (``None``: no limit).
    """

    per_channel: bool = True
    weight_symmetric: bool = True
    activation_symmetric: bool = False
    # Defaults chosen by measurement (benchmarks/calibration.py, docs/quantization.md):
    # per-tensor ranges gave the PP-OCR recognizer +1.8 dB output SQNR over MinMax
    # and the classifier and digits CNN the same as MinMax; bias correction cost
    # the classifier 3.3 dB, so it is opt-in.
    calibration_method: str = "auto"
    percentile: float | None = None
    calibration_samples: int | None = None
    exclude: tuple[str, ...] = field(default_factory=tuple)
    max_drop: float | None = None
    min_sqnr_db: float | None = None
    eval_fraction: float = 0.2
    seed: int = 0
    max_time_s: float | None = None
    float_head: bool = False
    bias_correction: bool = False
    smooth_quant: bool = False
    smooth_quant_alpha: float = 0.5
    chain_ends_only: bool = True
    weight_bits: int | str = "auto"

    def __post_init__(self) -> None:
        for name in ("per_channel", "weight_symmetric", "activation_symmetric", "float_head", "bias_correction",
                     "smooth_quant", "chain_ends_only"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"QuantConfig.{name} must be True or False, got {getattr(self, name)!r}",
                    hint="Pass a bool.",
                    key=name,
                )
        _check_weight_bits(self.weight_bits)
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ConfigError(
                f"unknown calibration method {self.calibration_method!r}",
                hint=f"Use one of: {', '.join(CALIBRATION_METHODS)}.",
                key="calibration_method",
            )
        if self.percentile is not None:
            if self.calibration_method not in ("percentile", "auto"):
                raise ConfigError(
                    f"a percentile ({self.percentile}) only applies to the percentile and auto calibration "
                    f"methods, not {self.calibration_method!r}",
                    hint="Add --calibration-method percentile, or drop --percentile.",
                    key="percentile",
                )
            if not _is_number(self.percentile) or not 50.0 < float(self.percentile) <= 100.0:
                raise ConfigError(
                    f"percentile must be in (50, 100], got {self.percentile!r}",
                    hint="Use e.g. 99.99 (the share of |x| values kept inside the range, in percent).",
                    key="percentile",
                )
        if self.calibration_samples is not None and (
            isinstance(self.calibration_samples, bool)
            or not isinstance(self.calibration_samples, int)
            or self.calibration_samples < 1
        ):
            raise ConfigError(
                f"calibration_samples must be a positive integer, got {self.calibration_samples!r}",
                hint="Use e.g. 100, or leave it unset to use every sample.",
                key="calibration_samples",
            )
        if isinstance(self.exclude, str) or not all(isinstance(e, str) and e for e in self.exclude):
            raise ConfigError(
                f"exclude must be a list of node names or op types, got {self.exclude!r}",
                hint='Pass e.g. exclude=("Softmax", "conv1").',
                key="exclude",
            )
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if self.max_drop is not None and (not _is_number(self.max_drop) or not 0.0 <= self.max_drop <= 100.0):
            raise ConfigError(
                f"max_drop must be between 0 and 100 percentage points, got {self.max_drop!r}",
                hint="Use e.g. 1.0 for at most one point of top-1 agreement lost.",
                key="max_drop",
            )
        if self.min_sqnr_db is not None and (not _is_number(self.min_sqnr_db) or not 0.0 < self.min_sqnr_db < 200.0):
            raise ConfigError(
                f"min_sqnr_db must be a positive number of dB below 200, got {self.min_sqnr_db!r}",
                hint="Use e.g. 30 (int8 usually reaches 30 to 45 dB).",
                key="min_sqnr_db",
            )
        if not _is_number(self.eval_fraction) or not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(
                f"eval_fraction must be between 0 and 1 (exclusive), got {self.eval_fraction!r}",
                hint="Use e.g. 0.2, or pass evaluation data of its own.",
                key="eval_fraction",
            )
        if not _is_number(self.smooth_quant_alpha) or not 0.0 <= self.smooth_quant_alpha <= 1.0:
            raise ConfigError(
                f"smooth_quant_alpha must be between 0 and 1, got {self.smooth_quant_alpha!r}",
                hint="Use e.g. 0.5 (SmoothQuant's default); larger values move more of the activation range "
                "into the weights.",
                key="smooth_quant_alpha",
            )
        if self.max_time_s is not None and (not _is_number(self.max_time_s) or self.max_time_s <= 0):
            raise ConfigError(
                f"max_time_s must be a positive number of seconds, got {self.max_time_s!r}",
                hint="Use e.g. 300 for five minutes, or leave it unset for no limit.",
                key="max_time_s",
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}", hint="Pass e.g. 0.", key="seed")

    @property
    def accuracy_controlled(self) -> bool:
        """True when a budget is set and layers may fall back to float."""
        return self.max_drop is not None or self.min_sqnr_db is not None

    @classmethod
    def for_board(cls, board: Board | None, target: Target | None, **overrides: Any) -> "QuantConfig":
        """The target's ``[quantization]`` defaults, then ``overrides``.

        The defaults are data in the target profile (``targets/*.toml``, read
        into :class:`~edgekit.core.profiles.QuantDefaults`): the shipped MCU
        targets (``aot-c``) declare symmetric per-channel weights and
        asymmetric activations, the accelerator targets (``npu``) symmetric
        activations too. A target without the table keeps the class defaults.

        Args:
            board: The board (only used in log messages), or ``None``.
            target: The board's target, or ``None`` for the class defaults.
            **overrides: Fields to set explicitly; they win over the defaults.

        Raises:
            ConfigError: an override is not a field or has a bad value.
        """
        defaults: dict[str, Any] = target.quantization.declared() if target is not None else {}
        if target is not None and defaults:
            logger.debug("quantization defaults for %s (%s): %s", board.name if board else "?", target.source, defaults)
        unknown = sorted(set(overrides) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ConfigError(
                f"unknown QuantConfig field(s): {', '.join(unknown)}",
                hint=f"Use: {', '.join(cls.__dataclass_fields__)}.",
            )
        defaults.update(overrides)
        return cls(**defaults)

    def replace(self, **changes: Any) -> "QuantConfig":
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """JSON form recorded in quality reports."""
        data = asdict(self)
        data["exclude"] = list(self.exclude)
        if self.calibration_method in ("percentile", "auto") and self.percentile is None:
            data["percentile"] = DEFAULT_PERCENTILE
        return data

    def ort_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``onnxruntime.quantization.quantize_static``
        (everything but the model, the output path, the data reader and the
        node exclusions, which depend on the model)."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

        method = {
            # auto: edgekit computes the ranges and hands them to quantize_static
            # as a MinMax calibration cache (edgekit.compress.ranges).
            "auto": CalibrationMethod.MinMax,
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[self.calibration_method]
        extra: dict[str, Any] = {
            "WeightSymmetric": self.weight_symmetric,
            "ActivationSymmetric": self.activation_symmetric,
        }
        if self.calibration_method == "percentile":
            extra["CalibPercentile"] = float(self.percentile or DEFAULT_PERCENTILE)
        return {
            "quant_format": QuantFormat.QDQ,
            "per_channel": self.per_channel,
            # 7-bit weights ([-64, 64]); activations keep 8 bits either way.
            "reduce_range": self.weight_bits == 7,
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "calibrate_method": method,
            "extra_options": extra,
        }


def _check_weight_bits(value: Any) -> None:
    if isinstance(value, bool) or value not in WEIGHT_BITS:
        raise ConfigError(
            f"weight_bits must be one of auto, 8, 7, got {value!r}",
            hint="Use auto (7-bit weights only where the board's CPU needs them), 8 or 7.",
            key="weight_bits",
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

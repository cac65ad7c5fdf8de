"""Activation ranges chosen per tensor (``calibration_method="auto"``).

onnxruntime's calibrators pick one method for the whole model: MinMax keeps
every outlier (a coarse step for the bulk of the values), Percentile and
Entropy clip (fine steps, but clipped tails). Which is better differs from
tensor to tensor. :func:`auto_ranges` collects one histogram per tensor with
onnxruntime's own collector (one pass over the calibration data), lets
onnxruntime's Percentile and Entropy code compute their ranges from it, adds
the MinMax range, and keeps for each tensor the candidate with the smallest
expected int8 quantization error (mean squared error over the histogram:
rounding noise inside the range plus the clipped tails) — a clipped range
only when it beats MinMax by :data:`MIN_MSE_GAIN`.

Only that last comparison is edgekit's code; it is the "MSE" criterion of
calibration tools such as NNCF and TensorRT, written out here because
onnxruntime offers no per-tensor choice. Graph outputs always keep their
MinMax range: clipping the largest logits changes what the argmax picks.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit.compress.calibration import Feeds, FeedsReader

__all__ = ["RangeChoice", "auto_ranges", "quantization_mse", "HISTOGRAM_BINS", "ENTROPY_BINS"]

logger = logging.getLogger(__name__)

#: Bins of the collected histograms (onnxruntime's Percentile default).
HISTOGRAM_BINS = 2048
#: Bins the histogram is merged into before onnxruntime's entropy search,
#: whose cost grows with the square of the bins (2048 bins took minutes on a
#: 10 MB recognizer; 256 keep it to seconds and leave 64 thresholds to try).
ENTROPY_BINS = 256
#: int8 levels.
LEVELS = 255
#: A clipped range replaces MinMax only when it cuts the expected squared
#: error by at least this factor. Measured (docs/quantization.md): with 1.0
#: (any gain) the PP-OCR classifier's output SQNR fell 1.2 dB below MinMax's;
#: with 1.3 it equals MinMax's and the recognizer keeps +1.8 of its +2.4 dB.
MIN_MSE_GAIN = 1.3


@dataclass
class RangeChoice:
    """What :func:`auto_ranges` chose.

    Attributes:
        ranges: Tensor name -> (lowest, highest) to quantize it with.
        method: Tensor name -> ``minmax``, ``percentile`` or ``entropy``.
        mse_gain: Tensor name -> MSE of the MinMax range divided by the MSE of
            the chosen one (1.0 when MinMax was kept).
    """

    ranges: dict[str, tuple[float, float]]
    method: dict[str, str]
    mse_gain: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many tensors each method won."""
        return dict(Counter(self.method.values()))


def quantization_mse(hist: np.ndarray, edges: np.ndarray, lo: float, hi: float, *, symmetric: bool) -> float:
    """Expected squared int8 error per value of a tensor with this histogram,
    quantized to [lo, hi] (widened to hold 0, as onnxruntime does; with
    ``symmetric``, to ±max(|lo|, |hi|)): uniform rounding noise
    ``step² / 12`` for values inside, the squared distance to the range for
    values clipped off."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        hi = max(abs(lo), hi)
        lo = -hi
    total = float(hist.sum())
    if total == 0 or hi <= lo:
        return 0.0
    step = (hi - lo) / LEVELS
    centers = (edges[:-1] + edges[1:]) * 0.5
    clipped = np.where(centers > hi, centers - hi, np.where(centers < lo, lo - centers, 0.0))
    inside = float(hist[clipped == 0].sum())
    return (inside * step * step / 12.0 + float((hist * clipped * clipped).sum())) / total


def _merge_bins(hist: np.ndarray, edges: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The histogram with every ``len(hist) // bins`` neighbouring bins added
    up (the centre stays a bin edge, which onnxruntime's entropy search expects)."""
    factor = max(1, len(hist) // bins)
    keep = len(hist) // factor * factor
    if keep != len(hist):  # an odd count after onnxruntime widened the histogram: trim both ends alike
        cut = (len(hist) - keep) // 2
        hist, edges = hist[cut : cut + keep], edges[cut : cut + keep + 1]
    return hist.reshape(-1, factor).sum(axis=1), edges[::factor]


def auto_ranges(
    model_path: str | Path,
    feeds: Sequence[Feeds],
    *,
    op_types: Sequence[str],
    percentile: float,
    symmetric: bool,
    keep_minmax: Sequence[str] = (),
) -> RangeChoice:
    """Chooses each activation's range among MinMax, Percentile and Entropy.

    Args:
        model_path: The fp32 model file (onnxruntime's calibrator reads a file).
        feeds: Calibration runs.
        op_types: Op types whose tensors are calibrated (as ``quantize_static``
            passes them).
        percentile: Percentile of the Percentile candidate.
        symmetric: Activations are quantized symmetrically (the MSE is then
            measured for ±max).
        keep_minmax: Tensors that keep MinMax (the graph outputs).

    Returns:
        The :class:`RangeChoice`.
    """
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory(prefix="edgekit-ranges-") as tmp:
        calibrator = create_calibrator(
            Path(model_path), list(op_types), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"num_bins": HISTOGRAM_BINS, "percentile": percentile, "symmetric": False},
        )  # fmt: skip
        # onnxruntime's collector print()s its progress; keep it off stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            calibrator.collect_data(FeedsReader(list(feeds)))
            collector = calibrator.collector
            percentile_ranges = collector.compute_percentile()
    kept = set(keep_minmax)
    choice = RangeChoice({}, {})
    for name, histogram in collector.histogram_dict.items():
        hist, edges, lowest, highest = histogram[0], histogram[1], float(histogram[2]), float(histogram[3])
        candidates = {"minmax": (lowest, highest)}
        if name not in kept and hist.sum() > 0:
            p_lo, p_hi = percentile_ranges[name][:2]
            candidates["percentile"] = (float(p_lo), float(p_hi))
            merged, merged_edges = _merge_bins(hist, edges, ENTROPY_BINS)
            e_lo, e_hi = collector.get_entropy_threshold((merged, merged_edges, histogram[2], histogram[3]),
                                                         min(128, len(merged) // 2))  # fmt: skip
            candidates["entropy"] = (float(e_lo), float(e_hi))
        errors = {m: quantization_mse(hist, edges, lo, hi, symmetric=symmetric) for m, (lo, hi) in candidates.items()}
        best = min(errors, key=lambda m: (errors[m], m != "minmax"))  # ties keep MinMax
        if errors[best] > 0 and errors["minmax"] < MIN_MSE_GAIN * errors[best]:
            best = "minmax"
        choice.ranges[name] = candidates[best]
        choice.method[name] = best
        choice.mse_gain[name] = errors["minmax"] / errors[best] if errors[best] > 0 else 1.0
    logger.info("per-tensor ranges: %s", ", ".join(f"{m} {c}" for m, c in sorted(choice.counts().items())))
    return choice

"""Summary statistics of benchmark samples (latencies, cycle counts)."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

__all__ = ["STAT_KEYS", "summarize", "throughput_per_s", "max_relative_error"]

logger = logging.getLogger(__name__)

#: Keys of :func:`summarize`, in display order.
STAT_KEYS = ("min", "p50", "p90", "p99", "mean", "std")

# Denominator floor for relative errors, so all-zero references do not divide by zero.
_TINY = 1e-30


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Minimum, percentiles, mean and standard deviation of ``samples``.

    Percentiles use numpy's linear interpolation between the two nearest
    ranks; ``std`` is the sample standard deviation (``ddof=1``), 0 for a
    single sample.

    Raises:
        ValueError: if ``samples`` is empty or holds a non-finite value.
    """
    arr = np.asarray(list(samples), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("cannot summarize an empty list of samples")
    if not np.all(np.isfinite(arr)):
        raise ValueError("samples must be finite numbers")
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "min": float(arr.min()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
    }


def throughput_per_s(latency_ms: Sequence[float], batch: int = 1) -> float:
    """Inferences per second implied by the mean latency of back-to-back runs.

    Args:
        latency_ms: Per-run latencies in milliseconds.
        batch: Samples processed per run (the model's batch size).
    """
    mean = summarize(latency_ms)["mean"]
    return float(batch * 1000.0 / mean) if mean > 0 else float("inf")


def max_relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """``max|a - b| / max(max|b|, tiny)``: the largest deviation relative to the
    reference's largest magnitude.

    Normalising by the largest magnitude (not element-wise) keeps elements
    that are near zero in the reference from dominating, which is how
    accuracy of compiled models is usually judged against onnxruntime.

    Raises:
        ValueError: if the shapes differ.
    """
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    if np.array_equal(a, b, equal_nan=True):
        return 0.0
    scale = max(float(np.max(np.abs(b))), _TINY)
    return float(np.max(np.abs(a - b)) / scale)

"""Benchmark statistics."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.runtime.stats import STAT_KEYS, max_relative_error, summarize, throughput_per_s


def test_summarize_known_values() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert list(s) == list(STAT_KEYS)
    assert s["min"] == 1.0 and s["p50"] == 3.0 and s["mean"] == 3.0
    # linear interpolation: rank 0.9 * 4 = 3.6 -> 4 + 0.6 * (5 - 4)
    assert s["p90"] == pytest.approx(4.6)
    assert s["p99"] == pytest.approx(4.96)
    assert s["std"] == pytest.approx(np.sqrt(2.5))  # sample std, ddof=1


def test_summarize_single_and_invalid() -> None:
    assert summarize([7.5]) == {"min": 7.5, "p50": 7.5, "p90": 7.5, "p99": 7.5, "mean": 7.5, "std": 0.0}
    with pytest.raises(ValueError, match="empty"):
        summarize([])
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])


def test_throughput() -> None:
    assert throughput_per_s([10.0, 30.0]) == pytest.approx(50.0)
    assert throughput_per_s([10.0, 30.0], batch=4) == pytest.approx(200.0)


def test_max_relative_error() -> None:
    ref = np.array([0.0, -2.0, 1.0])
    assert max_relative_error(ref.copy(), ref) == 0.0
    assert max_relative_error(np.array([0.1, -2.0, 1.0]), ref) == pytest.approx(0.05)
    # all-zero reference: the floor keeps it finite and large
    assert max_relative_error(np.array([1e-3]), np.array([0.0])) > 1e20
    assert np.isnan(max_relative_error(np.array([np.nan]), np.array([1.0])))
    with pytest.raises(ValueError, match="shapes differ"):
        max_relative_error(np.zeros(2), np.zeros(3))

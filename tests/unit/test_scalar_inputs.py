"""Scalar (0-d) inputs and input-less models in data files (issue #20 item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core.errors import InputError
from edgekit.core.tensors import TensorSpec, check_inputs
from edgekit.runtime.data import split_samples

SPECS = [TensorSpec("x", (3, 4), "float32"), TensorSpec("max", (), "float32")]


def test_scalar_input_with_a_sample_axis_stays_a_scalar():
    samples = split_samples(SPECS, {"x": np.ones((2, 3, 4), np.float32), "max": np.array([0.5, 2.0], np.float32)})
    assert samples.mode == "stacked" and len(samples) == 2
    assert [s["max"].shape for s in samples] == [(), ()]
    assert [float(s["max"]) for s in samples] == [0.5, 2.0]


def test_scalar_input_without_a_sample_axis():
    (feeds,) = split_samples(SPECS, {"x": np.ones((3, 4), np.float32), "max": np.float32(3.0)})
    assert feeds["max"].shape == () and float(feeds["max"]) == 3.0


def test_check_inputs_keeps_rank_zero():
    out = check_inputs([SPECS[1]], {"max": np.float64(1.5)})
    assert out["max"].shape == () and out["max"].dtype == np.float32


def test_scalar_input_with_a_wrong_sample_count_is_refused():
    with pytest.raises(InputError, match="different numbers of samples"):
        split_samples(SPECS, {"x": np.ones((2, 3, 4), np.float32), "max": np.zeros((3,), np.float32)})


def test_model_without_inputs_runs_once():
    samples = split_samples([], {})
    assert list(samples) == [{}]
    with pytest.raises(InputError, match="unknown input"):
        split_samples([], {"x": np.zeros(3)})

"""Bundled example: a small CNN for 8x8 digits, trained with numpy.

``digits_cnn.onnx`` (with ``digits_input.npz`` for ``edgekit run --input`` and
``digits_sample.npz`` with labels) ships as package data so the quick start
works without downloading a model. :mod:`edgekit.examples.digits` retrains it
and is what the compression tests use to get a real trained network.
"""

from __future__ import annotations

import logging

from edgekit.examples.digits import (
    DigitsData,
    TrainedModel,
    example_inputs_path,
    example_model_path,
    example_sample_path,
    load_digits_data,
    train_digits_cnn,
)

__all__ = [
    "DigitsData",
    "TrainedModel",
    "example_inputs_path",
    "example_model_path",
    "example_sample_path",
    "load_digits_data",
    "train_digits_cnn",
]

logger = logging.getLogger(__name__)

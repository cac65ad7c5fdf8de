"""Shared helpers: the hand-written test model and devices speaking the protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.sim.agent_build import build_agent, firmware_stubs_dir

IN, OUT = 64, 16


def test_model_source() -> Path:
    return firmware_stubs_dir() / "test_model" / "model.c"


def weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray, bytes]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((OUT, IN)).astype(np.float32)
    b = rng.standard_normal(OUT).astype(np.float32)
    return w, b, w.tobytes() + b.tobytes()


def reference(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Same float32 accumulation order as test_model/model.c."""
    y = b.copy()
    for k in range(IN):
        y = (y + w[:, k] * x[k]).astype(np.float32)
    return np.maximum(y, np.float32(0))


def build(port: str) -> Path:
    return build_agent(port, [test_model_source()])

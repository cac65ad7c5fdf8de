"""The vector width a tiled reduction falls back to (backends.llvm.schedule.fallback_vector_width, #14)."""

from __future__ import annotations

import pytest

from edgekit.compiler.backends.llvm.schedule import choose_tile, fallback_vector_width


@pytest.mark.parametrize(("channels", "lanes", "width"), [
    (88, 16, 8), (40, 16, 8), (200, 16, 8), (104, 16, 8), (24, 16, 8), (136, 16, 8),  # whole 8-lane units: 8
    (48, 16, 16), (32, 16, 16), (8, 16, 8),  # whole vectors or one 8-lane unit: unchanged
    (12, 16, 12), (22, 16, 11), (6, 16, 6),  # not whole 8-lane units: the largest divisor, as before
    (88, 8, 8), (40, 8, 8), (12, 8, 6),  # AVX2's 8 lanes: unchanged
])  # fmt: skip
def test_fallback_width(channels, lanes, width):
    """AVX-512 (16 lanes) falls back to 8-lane vectors for whole 8-lane units, not to a
    non-power-of-two divisor (11 lanes for PP-OCR cls's 88 channels, 10 for 40 and 200,
    13 for 104: masked vectors, or a padded layout whose pad is a kernel of its own)."""
    assert fallback_vector_width(channels, lanes) == width


def test_avx512_depthwise_tile_of_88_channels_is_8_lanes():
    """choose_tile for an 88-channel depthwise row (96 wide) with AVX-512's 16 lanes and 32 registers."""
    vec, rows = choose_tile(88, 96, 16, 88, 32, lane_inputs=False)
    assert vec == 8 and 96 % rows == 0

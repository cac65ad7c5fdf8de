"""Tile selection: tiles fit the buffers, big layers are split, impossible ones refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgekit.compiler.backends.npu.tiling import plan_conv
from edgekit.core.errors import DoesNotFitError
from edgekit.core.fixedpoint import quantize_multiplier
from edgekit.core.profiles import NpuConfig
from edgekit.npu.layers import ConvLayer, Requant

PYNQ = NpuConfig(8, 8, 100_000_000, 32 * 1024, 32 * 1024, 32 * 1024, 8.0)


def conv_layer(cin, cout, size, k=3, stride=1, group=1, seed=0) -> ConvLayer:
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (cout, cin // group, k, k), dtype=np.int8)
    out = (size + 2 * (k // 2) - k) // stride + 1
    return ConvLayer(
        name="c", nodes=("c",), input="x", output="y", in_shape=(cin, size, size), out_shape=(cout, out, out),
        weight=w, bias=rng.integers(-1000, 1000, cout).astype(np.int32), zx=0, strides=(stride, stride),
        pads=(k // 2,) * 4, group=group, stages=(Requant(quantize_multiplier(np.full(cout, 1e-3))),),
    )  # fmt: skip


@pytest.mark.parametrize(
    "cin,cout,size,k,stride,group",
    [(3, 16, 32, 3, 1, 1), (64, 64, 28, 3, 1, 1), (256, 256, 14, 3, 1, 1), (32, 32, 56, 3, 2, 32), (512, 1000, 1, 1, 1, 1)],
)
def test_tiles_fit_the_buffers(cin, cout, size, k, stride, group):
    layer = conv_layer(cin, cout, size, k, stride, group)
    t = plan_conv(layer, PYNQ)
    R, C = PYNQ.rows, PYNQ.cols
    assert t.slots * t.inp_entries * R <= PYNQ.input_buffer_bytes
    assert t.slots * t.wgt_entries * R * C <= PYNQ.weight_buffer_bytes
    assert (t.acc_slots * t.acc_entries + t.param_entries) * 4 * C <= PYNQ.acc_buffer_bytes
    # Tiles cover the whole output and the whole reduction: nothing is dropped.
    oc, oh, ow = layer.out_shape
    assert -(-oh // t.th) * -(-ow // t.tw) == t.n_spatial
    assert t.n_oc * t.ocg >= -(-oc // C)
    if group == 1:
        assert t.n_ic * t.icg >= -(-cin // R)


def test_big_layer_is_split_and_double_buffered():
    t = plan_conv(conv_layer(256, 256, 14), PYNQ)
    assert t.splits > 1
    assert t.slots == 2


def test_small_buffers_force_more_splits():
    small = dataclasses.replace(PYNQ, input_buffer_bytes=2048, weight_buffer_bytes=2048, acc_buffer_bytes=4096)
    layer = conv_layer(64, 64, 28)
    assert plan_conv(layer, small).splits > plan_conv(layer, PYNQ).splits


def test_layer_that_cannot_fit_is_refused_not_truncated():
    tiny = dataclasses.replace(PYNQ, weight_buffer_bytes=8 * 64)  # 8 blocks < one 3x3 kernel's 9
    with pytest.raises(DoesNotFitError, match="does not fit the accelerator buffers") as err:
        plan_conv(conv_layer(8, 8, 8), tiny)
    assert "host" in err.value.hint

"""Squeeze sums of int8 NHWC tensors on whole vectors for any channel count
(edgekit.compiler.backends.llvm.channel_sum; issue #14 item 6, pruned shapes)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from edgekit.compiler.backends.llvm.channel_sum import channel_sum_pass  # noqa: E402


def _squeeze_sum_module(shape: tuple[int, int, int, int]):
    from tvm import relax
    from tvm.relax import op as R

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    with bb.function("main", [x], {"num_input": 1}):
        with bb.dataflow():
            s = bb.emit(R.sum(bb.emit(R.astype(x, "int32")), axis=[1, 2], keepdims=True))
            out = bb.emit_output(s)
        bb.emit_func_output(out)
    return channel_sum_pass()(bb.get())


@pytest.mark.parametrize("shape", [(1, 3, 96, 62), (1, 2, 96, 73), (2, 5, 7, 17), (1, 4, 4, 32), (1, 3, 5, 8)])
def test_squeeze_sums_are_exact_for_pruned_channel_counts(shape):
    """Ragged counts (62, 73, 17: structured-pruned layers), whole vectors (32) and fewer
    channels than a vector (8): the same int32 sums as numpy, extreme values included."""
    mod = _squeeze_sum_module(shape)
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    rng = np.random.default_rng(3)
    for a in (rng.integers(-128, 128, shape).astype(np.int8), np.full(shape, -128, np.int8), np.full(shape, 127, np.int8)):
        got = vm["main"](tvm.runtime.tensor(a)).numpy()
        np.testing.assert_array_equal(got, a.astype(np.int32).sum(axis=(1, 2), keepdims=True))


def test_a_ragged_channel_count_is_summed_on_16_channel_vectors():
    """73 channels (PP-OCR cls pruned 30 %): TVM's tiled reduction found no vector tile
    dividing 73 and summed one channel at a time; the kernel loads 16 int8 channels per step."""
    mod = _squeeze_sum_module((1, 2, 96, 73))
    kernels = [f for gv, f in mod.functions_items() if gv.name_hint.startswith("channel_sum")]
    assert len(kernels) == 1
    text = kernels[0].script()
    # Five steps, each widening 16-byte loads of the row; the last starts at
    # channel 57 and ends at 73, inside the row.
    assert 'T.Cast("int32x16", X[T.Ramp(' in text and "T.grid(1, 5)" in text and "T.min(k * 16, 57)" in text, text


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(("shape", "pool", "strides"), [((1, 8, 8, 23), 2, 2), ((2, 7, 9, 40), 3, 2), ((1, 6, 6, 16), 2, 2)])
def test_int8_max_pools_of_pruned_channel_counts_are_exact(layout, shape, pool, strides):
    """A max pool of 23 or 40 channels (digits CNN pruned 30 %: 23) runs on 16-channel vectors,
    the last step overlapping; NCHW after a transpose and NHWC alike, batch 2, odd sizes;
    the same int8 values as numpy."""
    from tvm import relax
    from tvm.relax import op as R

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    with bb.function("main", [x], {"num_input": 1}):
        with bb.dataflow():
            if layout == "NCHW":
                y = bb.emit(R.nn.max_pool2d(bb.emit(R.permute_dims(x, [0, 3, 1, 2])), [pool, pool], [strides, strides]))
                y = bb.emit(R.permute_dims(y, [0, 2, 3, 1]))
            else:
                y = bb.emit(R.nn.max_pool2d(x, [pool, pool], [strides, strides], layout="NHWC", out_layout="NHWC"))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = channel_sum_pass()(bb.get())
    ragged = shape[3] % 16 != 0
    assert any(gv.name_hint.startswith("max_pool2d") for gv, _ in mod.functions_items()) == ragged, mod
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    a = np.random.default_rng(4).integers(-128, 128, shape).astype(np.int8)
    n, h, w, c = shape
    oh, ow = (h - pool) // strides + 1, (w - pool) // strides + 1
    want = np.full((n, oh, ow, c), -128, np.int8)
    for ky in range(pool):
        for kx in range(pool):
            want = np.maximum(want, a[:, ky : ky + strides * oh : strides, kx : kx + strides * ow : strides][:, :oh, :ow])
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(a)).numpy(), want)

"""int8 NHWC pads as vector row copies (edgekit.compiler.backends.llvm.pad), against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

from edgekit.compiler.backends.llvm.pad import int8_pad_pass


def _compile_pad(shape, spatial, channels, border, fill, dtype="int8", num_input=1):
    """``pad(pad(x, spatial, border), channels, fill)`` as Relax, through the pass, built for this CPU."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x], {"num_input": num_input}):
        with bb.dataflow():
            top, bottom, left, right = spatial
            y = bb.emit(R.nn.pad(x, [0, 0, top, bottom, left, right, 0, 0], pad_value=float(border)))
            if channels:
                y = bb.emit(R.nn.pad(y, [0, 0, 0, 0, 0, 0, 0, channels], pad_value=float(fill)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm"})
    mod = int8_pad_pass(target)(bb.get())
    names = [gv.name_hint for gv in mod.get_global_vars()]
    exe = tvm.compile(mod, target)
    return relax.VirtualMachine(exe, tvm.cpu()), names


@pytest.mark.parametrize(
    ("shape", "spatial", "channels"),
    [
        ((1, 3, 5, 20), (1, 1, 1, 1), 4),  # a channel tail (20 = 16 + 4) and fill
        ((1, 2, 4, 32), (2, 2, 2, 2), 0),  # whole 16-byte steps, spatial only
        ((2, 3, 3, 200), (0, 1, 2, 0), 8),  # batch 2, asymmetric borders
    ],
)
def test_pad_kernel_matches_numpy(shape, spatial, channels):
    vm, names = _compile_pad(shape, spatial, channels, border=-117, fill=0)
    assert sum(n.startswith("pad_rows") for n in names) == 1, names  # both pads in one kernel
    x = np.random.default_rng(0).integers(-128, 128, shape).astype(np.int8)
    top, bottom, left, right = spatial
    want = np.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)], constant_values=-117)
    want = np.pad(want, [(0, 0), (0, 0), (0, 0), (0, channels)], constant_values=0)
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), want)


def test_narrow_and_weight_pads_stay_relax():
    # Fewer than 4 channels: no whole step to copy (4 to 15 take 4- or 8-byte steps, test_ragged_int8).
    _, names = _compile_pad((1, 3, 3, 3), (1, 1, 1, 1), 1, border=0, fill=0)
    assert not any(n.startswith("pad_rows") for n in names), names
    # A pad of a weight (not computed from a model input) is lifted to compile time as Relax.
    _, names = _compile_pad((3, 3, 1, 20), (0, 0, 0, 0), 4, border=0, fill=0, num_input=0)
    assert not any(n.startswith("pad_rows") for n in names), names


def test_two_pads_of_one_value_are_one_kernel():
    # A depthwise conv's extra right column and channel fill on the lowering's
    # zero-point pad (backends.llvm.int8.depthwise_pairs): the same value, widths summed.
    shape = (1, 4, 6, 24)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    with bb.function("main", [x], {"num_input": 1}):
        with bb.dataflow():
            y = bb.emit(R.nn.pad(x, [0, 0, 2, 2, 2, 2, 0, 0], pad_value=-5.0))
            y = bb.emit(R.nn.pad(y, [0, 0, 0, 0, 0, 1, 0, 8], pad_value=-5.0))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm"})
    mod = int8_pad_pass(target)(bb.get())
    assert sum(gv.name_hint.startswith("pad_rows") for gv in mod.get_global_vars()) == 1
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    a = np.random.default_rng(1).integers(-128, 128, shape).astype(np.int8)
    want = np.pad(a, [(0, 0), (2, 2), (2, 3), (0, 8)], constant_values=-5)
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(a)).numpy(), want)

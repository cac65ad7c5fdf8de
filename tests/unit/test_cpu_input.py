"""The first int8 layer's input kernel (edgekit.compiler.cpu_input), against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

from edgekit.compiler.cpu_input import input_u8_pass


def _chain(shape, pad, zero_point):
    """quantize -> [pad with the zero point] -> NHWC -> u8 (x + 128) -> pad to 4 channels, as Relax."""
    n, c, h, w = shape
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    scale = relax.Var("scale", relax.TensorType((), "float32"))
    zp = relax.Var("zp", relax.TensorType((), "int8"))
    with bb.function("main", [x, scale, zp], {"num_input": 1}):
        with bb.dataflow():
            q = bb.emit(R.quantize(x, scale, zp, axis=1, out_dtype="int8"))
            if pad:
                q = bb.emit(R.nn.pad(q, [0, 0, 0, 0, pad, pad, pad, pad], pad_value=float(zero_point)))
            t = bb.emit(R.permute_dims(q, [0, 2, 3, 1]))
            u = bb.emit(R.astype(R.add(R.astype(t, "int16"), relax.const(128, "int16")), "uint8"))
            out = bb.emit_output(bb.emit(R.nn.pad(u, [0, 0, 0, 0, 0, 0, 0, 4 - c], pad_value=128.0)))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize(("shape", "pad"), [((1, 3, 5, 37), 1), ((1, 1, 4, 16), 2), ((1, 3, 3, 20), 0)])
def test_input_kernel_matches_numpy(shape, pad):
    zero_point, s = -3, np.float32(0.0173)
    target = tvm.target.Target({"kind": "llvm"})
    mod = input_u8_pass(target)(_chain(shape, pad, zero_point))
    assert any(gv.name_hint.startswith("quantize_input") for gv in mod.get_global_vars())
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    x.flat[:4] = [0.5 * s, 1.5 * s, -2.5 * s, 300.0]  # half-way points (to even) and saturation
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(np.array(s)), tvm.runtime.tensor(np.array(zero_point, np.int8)))
    q = np.clip(np.rint(x / s) + zero_point, -128, 127).astype(np.int16)
    q = np.pad(q, [(0, 0), (0, 0), (pad, pad), (pad, pad)], constant_values=zero_point)
    want = np.pad(q.transpose(0, 2, 3, 1) + 128, [(0, 0), (0, 0), (0, 0), (0, 4 - shape[1])], constant_values=128)
    np.testing.assert_array_equal(got.numpy(), want.astype(np.uint8))

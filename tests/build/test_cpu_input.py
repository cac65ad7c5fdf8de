"""The first int8 layer's input kernel (edgekit.compiler.backends.llvm.int8_input), against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

from edgekit.compiler.backends.llvm.int8_input import input_pass


def _chain(shape, pad, zero_point, dtype):
    """quantize -> [pad with the zero point] -> NHWC -> u8 (x + 128) or int16 -> pad to 4 (even) channels, as Relax."""
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
            if dtype == "uint8":  # vpdpbusd's operand
                u = bb.emit(R.astype(R.add(R.astype(t, "int16"), relax.const(128, "int16")), "uint8"))
                out = bb.emit_output(bb.emit(R.nn.pad(u, [0, 0, 0, 0, 0, 0, 0, 4 - c], pad_value=128.0)))
            else:  # AVX2 vpmaddwd's
                u = bb.emit(R.astype(t, "int16"))
                out = bb.emit_output(bb.emit(R.nn.pad(u, [0, 0, 0, 0, 0, 0, 0, c % 2], pad_value=0.0)))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("dtype", ["uint8", "int16"])
@pytest.mark.parametrize(("shape", "pad"), [((1, 3, 5, 37), 1), ((1, 1, 4, 16), 2), ((1, 3, 3, 20), 0)])
def test_input_kernel_matches_numpy(shape, pad, dtype):
    zero_point, s = -3, np.float32(0.0173)
    target = tvm.target.Target({"kind": "llvm"})
    mod = input_pass(target)(_chain(shape, pad, zero_point, dtype))
    assert any(gv.name_hint.startswith("quantize_input") for gv in mod.get_global_vars())
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    x.flat[:4] = [0.5 * s, 1.5 * s, -2.5 * s, 300.0]  # half-way points (to even) and saturation
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(np.array(s)), tvm.runtime.tensor(np.array(zero_point, np.int8)))
    q = np.clip(np.rint(x / s) + zero_point, -128, 127).astype(np.int16)
    q = np.pad(q, [(0, 0), (0, 0), (pad, pad), (pad, pad)], constant_values=zero_point)
    offset, channels = (128, 4) if dtype == "uint8" else (0, shape[1] + shape[1] % 2)
    want = np.pad(q.transpose(0, 2, 3, 1) + offset, [(0, 0), (0, 0), (0, 0), (0, channels - shape[1])],
                  constant_values=offset)  # fmt: skip
    np.testing.assert_array_equal(got.numpy(), want.astype(dtype))

"""Channel concatenations of pruned (ragged) channel counts as vector row copies
(edgekit.compiler.backends.llvm.concat; issue #14 item 6)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from edgekit.compiler.backends.llvm.concat import concat_pass  # noqa: E402


def _concat_module(a, b, dtype, axis=3):
    from tvm import relax
    from tvm.relax import op as R

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(a, dtype))
    y = relax.Var("y", relax.TensorType(b, dtype))
    with bb.function("main", [x, y], {"num_input": 2}):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(R.concat([x, y], axis=axis)))
        bb.emit_func_output(out)
    return concat_pass()(bb.get())


@pytest.mark.parametrize(
    ("a", "b", "dtype", "rows"),
    [((1, 5, 7, 45), (1, 5, 7, 45), "float32", True),  # SqueezeNet fire module pruned 30 %
     ((2, 3, 4, 17), (2, 3, 4, 32), "int8", True),
     ((1, 3, 3, 16), (1, 3, 3, 23), "uint8", True),
     ((1, 4, 4, 32), (1, 4, 4, 64), "float32", False),  # whole vectors: TVM's concat
     ((1, 4, 4, 8), (1, 4, 4, 45), "float32", False)],  # an input narrower than a vector
)  # fmt: skip
def test_ragged_channel_concats_are_exact(a, b, dtype, rows):
    mod = _concat_module(a, b, dtype)
    assert any(gv.name_hint.startswith("concat_rows") for gv, _ in mod.functions_items()) == rows
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    rng = np.random.default_rng(5)
    if dtype == "float32":
        x, y = rng.standard_normal(a).astype(dtype), rng.standard_normal(b).astype(dtype)
    else:
        info = np.iinfo(dtype)
        x, y = (rng.integers(info.min, info.max + 1, s).astype(dtype) for s in (a, b))
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y)).numpy()
    np.testing.assert_array_equal(got, np.concatenate([x, y], axis=3))


def test_other_axes_keep_tvms_concat():
    mod = _concat_module((1, 5, 7, 45), (1, 3, 7, 45), "float32", axis=1)
    assert not any(gv.name_hint.startswith("concat_rows") for gv, _ in mod.functions_items())

"""BitShift by the type's width or more, on every x86 target (edgekit.frontend.importer_fixes; issue #14).

ONNX defines those shifts (0; the sign to the right for signed types), LLVM
leaves them undefined: AVX-512BW's vpsllvw/vpsravw happened to give ONNX's
answers, AVX2 code did not, so ONNX's own ``*_shift_ge_width`` conformance
cases failed on a Zen 2 and passed on a Zen 5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

tvm = pytest.importorskip("tvm")

from _host_cpu import host_target, runs_here  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import build_cpu  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402


def _onnx_shift(x: np.ndarray, y: np.ndarray, direction: str) -> np.ndarray:
    """ONNX's BitShift, written from the spec: counts of the width or more shift everything out."""
    width = 8 * x.dtype.itemsize
    big = y.astype(np.int64) >= width
    if direction == "LEFT":
        return np.where(big, 0, x << np.minimum(y, width - 1)).astype(x.dtype)
    if np.issubdtype(x.dtype, np.signedinteger):
        return x >> np.minimum(y, width - 1)
    return np.where(big, 0, x >> np.minimum(y, width - 1)).astype(x.dtype)


def _model(dtype: np.dtype, path: Path) -> str:
    t = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("BitShift", ["x", "y"], ["left"], direction="LEFT"),
             helper.make_node("BitShift", ["x", "y"], ["right"], direction="RIGHT")]  # fmt: skip
    graph = helper.make_graph(nodes, "shifts", [helper.make_tensor_value_info(n, t, [16]) for n in ("x", "y")],
                              [helper.make_tensor_value_info(n, t, [16]) for n in ("left", "right")])  # fmt: skip
    onnx.save(helper.make_model(graph), str(path))
    return str(path)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
@pytest.mark.parametrize("mcpu", ["haswell", "host"])
def test_shifts_by_the_width_or_more_follow_onnx(tmp_path, dtype, mcpu):
    target = host_target() if mcpu == "host" else tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    if not runs_here(target):
        pytest.skip(f"this CPU cannot run {mcpu} code")
    width = 8 * np.dtype(dtype).itemsize
    info = np.iinfo(dtype)
    x = np.array([-8, 4, -1, 1, 3, info.min, info.max, 0, -128, 127, 5, -5, 2, -2, 64, 100], np.int64)
    x = np.clip(x, info.min, info.max).astype(dtype)
    y = np.array([0, 1, width - 1, width, width + 1, 2 * width, min(info.max, 127), 3] * 2, dtype=dtype)
    mod, weights = import_onnx(load_model(_model(dtype, tmp_path / "shifts.onnx")))[:2]
    built = build_cpu(mod, target, weights)
    out = tvm.relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y),
                                                                         *built.params)  # fmt: skip
    np.testing.assert_array_equal(out[0].numpy(), _onnx_shift(x, y, "LEFT"))
    np.testing.assert_array_equal(out[1].numpy(), _onnx_shift(x, y, "RIGHT"))

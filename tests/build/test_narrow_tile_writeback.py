"""The write-back of a tile narrower than the target's vectors is vectorized (backends.llvm.schedule, #14).

AVX-512 targets tile 24-, 40-, 88-channel fp32 depthwise convs with 8-lane vectors
(schedule.fallback_vector_width); their write-back (bias, activation) was vectorized
only in whole 16-lane vectors, so it ran scalar in znver4 code: PP-OCR cls's 24- and
40-channel depthwise kernels took 12.1 and 14.9 us against 5.2 and 9.0 in haswell code.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")
ort = pytest.importorskip("onnxruntime")

from _host_cpu import skip_unless_runs_here  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import build_cpu, import_onnx, prepare_cpu_module, schedule_passes  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402

AVX512 = {"kind": "llvm", "mcpu": "znver4"}
AVX2 = {"kind": "llvm", "mcpu": "haswell"}


def _model(channels: int, tmp_path):
    rng = np.random.default_rng(channels)
    w = numpy_helper.from_array((rng.standard_normal((channels, 1, 3, 3)) * 0.3).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "B")
    conv = helper.make_node("Conv", ["x", "W", "B"], ["y"], group=channels, pads=[1, 1, 1, 1], strides=[2, 1])
    relu = helper.make_node("Relu", ["y"], ["out"])
    graph = helper.make_graph([conv, relu], "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 12, 96])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, channels, 6, 96])], [w, b])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "dw.onnx"
    onnx.save(model, str(path))
    return model, path


def _conv_script(path, target) -> str:
    mod, _ = import_onnx(load_model(str(path)))
    t = tvm.target.Target(target)
    prepared, _ = prepare_cpu_module(mod, t)
    with t:
        scheduled = tvm.ir.transform.Sequential(schedule_passes(t))(prepared)
    (script,) = [f.script() for gv, f in scheduled.functions_items()
                 if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint]  # fmt: skip
    return script


@pytest.mark.parametrize("channels", [24, 40, 88])
@pytest.mark.parametrize("target", [AVX512, AVX2], ids=["avx512", "avx2"])
def test_write_back_of_8_lane_tiles_is_vectorized(tmp_path, channels, target):
    """Init, update and write-back loops of the tile: all three vectorized over 8 lanes."""
    _, path = _model(channels, tmp_path)
    script = _conv_script(path, target)
    assert len(re.findall(r"T\.vectorized\(T\.int64\(8\)\)", script)) >= 3, script


@pytest.mark.parametrize("channels", [24, 40])
def test_depthwise_with_8_lane_tiles_matches_onnxruntime(tmp_path, channels):
    target = {"kind": "llvm", "mcpu": "znver4"}
    skip_unless_runs_here(target)
    model, path = _model(channels, tmp_path)
    mod, params = import_onnx(load_model(str(path)))
    built = build_cpu(mod, tvm.target.Target(target), params)
    x = np.random.default_rng(1).standard_normal((1, channels, 12, 96)).astype(np.float32)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x), *built.params)
    got = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))

"""Float depthwise convolutions on whole vectors of the target (backends.llvm.layout;
issue #14 item 6: the fp32 layers a structured-pruned model is measured against)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")
ort = pytest.importorskip("onnxruntime")

from _host_cpu import first_runnable, skip_unless_runs_here  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import build_cpu, import_onnx, prepare_cpu_module  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402

AVX512 = {"kind": "llvm", "mcpu": "znver4"}
AVX2 = {"kind": "llvm", "mcpu": "haswell"}


def _depthwise(channels: int, k: int = 5):
    rng = np.random.default_rng(channels)
    w = numpy_helper.from_array((rng.standard_normal((channels, 1, k, k)) * 0.3).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "B")
    node = helper.make_node("Conv", ["x", "W", "B"], ["out"], group=channels, pads=[k // 2] * 4)
    graph = helper.make_graph([node], "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 3, 96])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, channels, 3, 96])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _kernels(model, tmp_path, target) -> list[str]:
    path = tmp_path / "dw.onnx"
    onnx.save(model, str(path))
    mod, _ = import_onnx(load_model(str(path)))
    prepared, _ = prepare_cpu_module(mod, tvm.target.Target(target))
    return [gv.name_hint for gv, f in prepared.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


@pytest.mark.parametrize(("channels", "avx512", "avx2"), [(88, False, False), (40, False, False), (48, False, False),
                                                          (8, False, False), (22, True, True), (136, False, False)])  # fmt: skip
def test_depthwise_channels_are_padded_to_the_targets_vectors(tmp_path, channels, avx512, avx2):
    """Only counts that are not whole 8-lane units are padded (a pruned 22, on both
    targets). 88 and 40 channels (PP-OCR cls, unpruned) are whole 8-lane units but not
    whole 16-lane vectors: their AVX-512 tiles fall back to 8 lanes
    (schedule.fallback_vector_width), as 136 (ShuffleNet's groups) does; padding them
    made the pad a kernel of its own (PP-OCR cls fp32 0.495 ms in znver4 code against
    0.431 without; haswell code 0.420). 48 and 8 never."""
    model = _depthwise(channels)
    assert any("depthwise_conv2d_padded" in n for n in _kernels(model, tmp_path, AVX512)) == avx512
    assert any("depthwise_conv2d_padded" in n for n in _kernels(model, tmp_path, AVX2)) == avx2


@pytest.mark.parametrize("target", [{"kind": "llvm", "mcpu": first_runnable("znver4", "skylake-avx512")}, AVX2],
                         ids=["avx512", "avx2"])  # fmt: skip
def test_padded_depthwise_matches_onnxruntime(tmp_path, target):
    """The 88-channel 5x5 depthwise conv, built for each target where this CPU runs it (any AVX-512 CPU's)."""
    skip_unless_runs_here(target)
    model = _depthwise(88)
    path = tmp_path / "dw.onnx"
    onnx.save(model, str(path))
    prepared = load_model(str(path))
    mod, params = import_onnx(prepared)
    built = build_cpu(mod, tvm.target.Target(target), params)
    x = np.random.default_rng(1).standard_normal((1, 88, 3, 96)).astype(np.float32)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x), *built.params)
    got = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))

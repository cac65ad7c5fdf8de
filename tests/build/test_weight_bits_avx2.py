"""7-bit weights (``QuantConfig(weight_bits=7)``) put AVX2 int8 layers on ``vpmaddubsw``, within 1 LSB of onnxruntime.

The model is test_cpu_int8's (a padded strided 3x3 conv, depthwise 5x5 and
3x3 convs, a 1x1 conv, a Gemm), quantized by the real quantizer with 7-bit
weights, not with weights edited afterwards.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from _host_cpu import skip_unless_runs_here
from onnx import numpy_helper
from test_cpu_int8 import _fp32_model, _kernels_asm, _mnemonics, _run

from edgekit.compiler.backends.llvm.intrin import I16_256, U8S8_256
from edgekit.compress import QuantConfig, quantize

HASWELL = {"kind": "llvm", "mcpu": "haswell"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """The model quantized with 8-bit and with 7-bit weights, on the same data."""
    d = tmp_path_factory.mktemp("weight_bits")
    src = d / "fp32.onnx"
    onnx.save(_fp32_model(seed=3), str(src))
    cal = {"x": np.random.default_rng(1).standard_normal((16, 3, 10, 10)).astype(np.float32)}
    paths = {}
    for bits in (8, 7):
        paths[bits] = str(quantize(str(src), QuantConfig(weight_bits=bits), calibration=cal).save(d / f"w{bits}.onnx"))
    return paths


def test_7_bit_weights_lie_in_minus_64_to_64(models: dict[int, str]) -> None:
    weights = [numpy_helper.to_array(t) for t in onnx.load(models[7]).graph.initializer if len(t.dims) >= 2]
    assert weights and all(w.dtype == np.int8 and np.abs(w.astype(np.int32)).max() <= 64 for w in weights)


def test_haswell_code_of_7_bit_weights_uses_vpmaddubsw(models: dict[int, str]) -> None:
    target = tvm.target.Target(HASWELL)
    asm7 = _kernels_asm(models[7], target)
    dense7 = {n: a for n, a in asm7.items() if "depthwise" not in n}
    assert len(dense7) == 3 and all(U8S8_256.name in n for n in dense7), sorted(asm7)
    for name, text in dense7.items():
        assert {"vpmaddubsw", "vpmaddwd"} <= _mnemonics(text), name
    # With 8-bit weights the same layers saturate vpmaddubsw and multiply int16.
    dense8 = [n for n in _kernels_asm(models[8], target) if "depthwise" not in n]
    assert len(dense8) == 3 and all(I16_256.name in n for n in dense8), dense8


def test_7_bit_haswell_code_is_within_one_lsb_of_onnxruntime(models: dict[int, str]) -> None:
    skip_unless_runs_here("haswell")
    x = np.random.default_rng(7).standard_normal((8, 3, 10, 10)).astype(np.float32)
    got, built = _run(models[7], tvm.target.Target(HASWELL), x)
    assert sum(U8S8_256.name in gv.name_hint for gv in built.lowered.get_global_vars()) == 3
    steps = onnxruntime_steps(models[7], x, got)
    assert np.max(steps) <= 1.001, np.max(steps)


def onnxruntime_steps(model_path: str, x: np.ndarray, got: np.ndarray) -> np.ndarray:
    """``|got - onnxruntime|`` in output quantization steps: the QDQ graph as written, one sample of ``x`` at a time."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    want = np.concatenate([session.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])
    model = onnx.load(model_path)
    last = [n for n in model.graph.node if n.op_type == "DequantizeLinear"][-1]
    lsb = float(np.max(numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == last.input[1]))))
    return np.abs(got - want) / lsb


def test_vpmaddubsw_is_not_taken_where_it_alone_would_pad_input_channels() -> None:
    from edgekit.compiler.backends.llvm.int8 import _Rewriter

    rw = _Rewriter(I16_256, U8S8_256)
    seven_bit = lambda k: np.full((1, 1, k, 16), 64, dtype=np.int8)  # noqa: E731
    assert rw.pick(seven_bit(24), 16) is U8S8_256
    assert rw.pick(seven_bit(3), 16) is U8S8_256  # vpmaddwd pads 3 channels too
    assert rw.pick(seven_bit(22), 16) is I16_256  # 22 = 11 pairs, not whole groups of 4
    assert rw.pick(np.full((1, 1, 24, 16), 127, dtype=np.int8), 16) is I16_256  # 8-bit: would saturate

"""int8 end to end: QDQ and QOperator models compile to integer-only code on
the host and on simulated MCUs and agree with onnxruntime's QDQ execution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, quantize_static

from edgekit.cli.main import main
from edgekit.compress import QuantConfig, quantize
from edgekit.compress.calibration import FeedsReader
from edgekit.examples.digits import example_inputs_path, example_model_path, load_digits_data


def _ort_as_written(model_path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def _output_lsb(model: onnx.ModelProto) -> float:
    """Scale of the last DequantizeLinear (the quantized logits' step)."""
    last = [n for n in model.graph.node if n.op_type == "DequantizeLinear"][-1]
    inits = {t.name: t for t in model.graph.initializer}
    return float(np.max(numpy_helper.to_array(inits[last.input[1]])))


@pytest.fixture(scope="module")
def digits_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load_digits_data()
    out = tmp_path_factory.mktemp("int8") / "digits_int8.onnx"
    quantize(str(example_model_path()), QuantConfig(), calibration={"input": data.x_train[:256]}).save(out)
    return out


@pytest.mark.parametrize("board", ["host", "rv32-mcu-sim", "stm32h7"])
def test_int8_digits_matches_onnxruntime_qdq(digits_int8: Path, board: str, tmp_path: Path) -> None:
    pkg = tmp_path / f"d-{board}.ekpkg"
    # --int8-choice int8: the integer lowering is what is checked, not a timing-dependent choice.
    assert main(["compile", str(digits_int8), "--board", board, "-o", str(pkg), "--int8-choice", "int8"]) == 0
    out = tmp_path / "out.npz"
    assert main(["run", str(pkg), "--input", str(example_inputs_path()), "-o", str(out)]) == 0
    got = np.load(out)["logits"]
    x = np.load(example_inputs_path())["input"]
    want = _ort_as_written(digits_int8, x)
    lsb = _output_lsb(onnx.load(digits_int8))
    within = np.abs(got - want) <= lsb * 1.0001
    assert within.mean() >= 0.999, (np.abs(got - want).max() / lsb, within.mean())


def test_qoperator_model_compiles_and_matches(tmp_path: Path) -> None:
    data = load_digits_data()
    qop = tmp_path / "digits_qop.onnx"
    feeds = [{"input": data.x_train[i : i + 1]} for i in range(64)]
    quantize_static(str(example_model_path()), str(qop), FeedsReader(feeds), quant_format=QuantFormat.QOperator,
                    per_channel=True)
    assert any(n.op_type == "QLinearConv" for n in onnx.load(qop).graph.node)
    pkg = tmp_path / "qop.ekpkg"
    assert main(["compile", str(qop), "--board", "host", "-o", str(pkg), "--int8-choice", "int8"]) == 0
    out = tmp_path / "out.npz"
    assert main(["run", str(pkg), "--input", str(example_inputs_path()), "-o", str(out)]) == 0
    got = np.load(out)["logits"]
    x = np.load(example_inputs_path())["input"]
    want = _ort_as_written(qop, x)  # onnxruntime's own QOperator kernels
    lsb = float(numpy_helper.to_array(next(t for t in onnx.load(qop).graph.initializer
                                          if t.name.endswith("_scale") and "logits" in t.name)))
    assert np.abs(got - want).max() <= lsb * 1.0001, np.abs(got - want).max() / lsb

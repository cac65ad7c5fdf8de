"""int8 quantization of a CNN trained on scikit-learn's digits: accuracy,
size, accuracy control and the ``edgekit compress`` command."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from edgekit.cli.main import main
from edgekit.compress import QuantConfig, quantize
from edgekit.core.errors import InputError, QuantizationError
from edgekit.examples.digits import export_onnx, train_digits_cnn

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits():
    return train_digits_cnn(seed=0)


def _accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    opts = ort.SessionOptions()
    # Reference QDQ semantics (see edgekit.compress.quality.compare_outputs).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = [int(sess.run(None, {name: x[i : i + 1]})[0].argmax()) for i in range(len(x))]
    return float(np.mean(np.array(preds) == y))


def _with_dead_outlier_channels(params: dict[str, np.ndarray], *, conv1: bool, fc1: bool) -> onnx.ModelProto:
    """Adds an output channel with 1000x larger weights whose huge negative bias
    keeps it at 0 after ReLU, so the function is unchanged but per-tensor
    weight quantization of that layer crushes every other channel."""
    p = {k: v.copy() for k, v in params.items()}
    rng = np.random.default_rng(1)
    if conv1:
        p["conv1.weight"] = np.concatenate([p["conv1.weight"], 1e3 * np.abs(rng.standard_normal((1, 1, 3, 3)))])
        p["conv1.bias"] = np.append(p["conv1.bias"], -1e6)
        p["conv2.weight"] = np.concatenate([p["conv2.weight"], np.zeros((p["conv2.weight"].shape[0], 1, 3, 3))], 1)
    if fc1:
        p["fc1.weight"] = np.concatenate([p["fc1.weight"], 1e3 * np.abs(rng.standard_normal((1, p["fc1.weight"].shape[1])))])
        p["fc1.bias"] = np.append(p["fc1.bias"], -1e7)
        p["fc2.weight"] = np.concatenate([p["fc2.weight"], np.zeros((p["fc2.weight"].shape[0], 1))], 1)
    return export_onnx({k: v.astype(np.float32) for k, v in p.items()})


def test_digits_int8_keeps_accuracy_and_shrinks_weights(digits) -> None:
    data = digits.data
    result = quantize(digits.onnx, QuantConfig(), {"input": data.x_train[:300]}, eval_data={"input": data.x_test})
    fp32_acc = _accuracy(digits.onnx, data.x_test, data.y_test)
    int8_acc = _accuracy(result.model, data.x_test, data.y_test)
    assert fp32_acc == pytest.approx(digits.accuracy)
    assert abs(fp32_acc - int8_acc) <= 0.005, (fp32_acc, int8_acc)

    report = result.report
    assert report.compression_ratio >= 3.8, report.to_json()["weight_bytes"]
    # Every Conv/Gemm weight is an int8 initializer behind a DequantizeLinear.
    inits = {t.name: t for t in result.model.graph.initializer}
    producers = {o: n for n in result.model.graph.node for o in n.output}
    for node in result.model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            dq = producers[node.input[1]]
            assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == TensorProto.INT8
    assert not any(t.data_type == TensorProto.FLOAT and t.name.endswith(".weight") for t in inits.values())

    (out,) = report.outputs
    assert out.name == "logits" and out.top1_agreement is not None and out.top1_agreement >= 99.0
    assert 25.0 < out.sqnr_db < 80.0 and out.cosine > 0.99
    layer_nodes = {la.node for la in report.layers}
    # Each Conv's ReLU is folded into its output quantization, so the
    # comparable tensors are the ReLU outputs.
    assert {"relu1", "relu2", "pool2", "relu3", "relu4", "fc2"} <= layer_nodes
    assert all(np.isfinite(la.sqnr_db) and la.quantized for la in report.layers if la.node in ("relu2", "fc2"))
    assert report.eval_samples == len(data.x_test) and report.fallback is None
    json.dumps(report.to_json())  # JSON-safe (no inf / numpy types)


def test_max_drop_keeps_the_outlier_layers_in_float(digits) -> None:
    data = digits.data
    model = _with_dead_outlier_channels(digits.params, conv1=True, fc1=True)
    cal, ev = {"input": data.x_train[:200]}, {"input": data.x_test[:200]}
    plain = quantize(model, QuantConfig(per_channel=False), cal, eval_data=ev)
    assert plain.report.outputs[0].top1_agreement < 50.0  # default quantization is ruined

    controlled = quantize(model, QuantConfig(per_channel=False, max_drop=1.0), cal, eval_data=ev)
    fb = controlled.report.fallback
    assert fb is not None and fb.met
    assert sorted(controlled.fallback_layers) == ["conv1", "fc1"] == sorted(fb.layers)
    assert fb.drop_before > 50.0 and fb.drop_after <= 1.0
    assert controlled.report.outputs[0].top1_agreement >= 99.0
    assert fb.bytes_cost > 0
    assert set(fb.sensitivity) >= {"conv1", "conv2", "conv3", "fc1", "fc2"}
    # The ranking put the two broken layers first, so few evaluations were needed.
    assert {k for k, v in fb.sensitivity.items() if v["rank"] < 2} == {"conv1", "fc1"}
    assert fb.evaluations <= 6, fb.evaluations
    assert [f.node for f in fb.float_layers] == fb.layers and all(f.macs > 0 for f in fb.float_layers)
    assert all(f.extra_weight_bytes > 0 and f.buys_back is not None and f.buys_back > 0 for f in fb.float_layers)
    float_layers = {la.node for la in controlled.report.layers if la.op_type in ("Conv", "Gemm") and not la.quantized}
    assert float_layers <= {"conv1", "fc1"}


def test_user_metric_drives_the_budget(digits) -> None:
    data = digits.data
    model = _with_dead_outlier_channels(digits.params, conv1=True, fc1=False)
    x, y = data.x_test[:150], data.y_test[:150]
    calls = []

    def accuracy(outputs: dict, ev: dict) -> float:
        calls.append(sorted(ev))
        return float(np.mean(outputs["logits"].argmax(-1) == ev["labels"]))

    result = quantize(model, QuantConfig(per_channel=False, max_drop=1.0), {"input": data.x_train[:150]},
                      eval_data={"input": x, "labels": y}, metric=accuracy)  # fmt: skip
    assert result.fallback_layers == ["conv1"]
    assert result.report.metric_fp32 == pytest.approx(_accuracy(model, x, y))
    assert result.report.metric_quantized == pytest.approx(_accuracy(result.model, x, y))
    assert result.report.metric_fp32 - result.report.metric_quantized <= 0.01
    assert len(calls) >= 3 and calls[0] == ["input", "labels"]  # fp32, default int8, candidates

    # Without --eval, the metric sees the held-out rows of every array, labels included.
    seen = {}

    def held_out(outputs: dict, ev: dict) -> float:
        seen.update(n=len(outputs["logits"]), labels=len(ev["labels"]), x=len(ev["input"]))
        return 1.0

    quantize(digits.onnx, QuantConfig(max_drop=1.0), {"input": data.x_train[:50], "labels": data.y_train[:50]},
             metric=held_out)  # fmt: skip
    assert seen == {"n": 10, "labels": 10, "x": 10}

    with pytest.raises(QuantizationError, match="outside"):
        quantize(model, QuantConfig(max_drop=1.0), {"input": data.x_train[:20]}, metric=lambda o, d: 97.0)
    with pytest.raises(QuantizationError, match="raised KeyError") as info:
        quantize(model, QuantConfig(max_drop=1.0), {"input": data.x_train[:20]}, metric=lambda o, d: d["labels"])
    assert "metric(outputs, data)" in info.value.hint


def test_bad_requests_are_typed_errors(digits, tmp_path) -> None:
    x = {"input": digits.data.x_train[:20]}
    with pytest.raises(QuantizationError, match="no node or op type") as info:
        quantize(digits.onnx, QuantConfig(exclude=("Softmax",)), x)
    assert "Conv" in info.value.hint
    with pytest.raises(InputError, match="lacks the model input"):
        quantize(digits.onnx, QuantConfig(), {"image": digits.data.x_train[:20]})
    qdq = quantize(digits.onnx, QuantConfig(exclude=("Gemm", "conv3")), x).model
    weights = {n.name: n.input[1] for n in qdq.graph.node if n.op_type in ("Conv", "Gemm")}
    # Excluded layers read their float initializers, the others dequantized int8.
    assert [weights[k] for k in ("fc1", "fc2", "conv3")] == ["fc1.weight", "fc2.weight", "conv3.weight"]
    assert weights["conv2"] == "conv2.weight_DequantizeLinear_Output"
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize(qdq, QuantConfig(), x)
    # A top-1 budget on a model without class outputs needs an SQNR budget instead.
    features = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(digits.onnx)).extract_model(["input"], ["relu3"])
    # Stale value_info with the symbolic batch makes the loader's onnxslim
    # pass restore it on the input (reported to the loader's owner).
    del features.graph.value_info[:]
    with pytest.raises(QuantizationError, match="no output of the model") as info:
        quantize(features, QuantConfig(max_drop=1.0), x)
    assert "--min-sqnr" in info.value.hint
    res = quantize(features, QuantConfig(min_sqnr_db=20.0), x)
    assert res.report.fallback is not None and res.report.fallback.met


def test_cli_compress_writes_model_and_report(digits, tmp_path, capsys) -> None:
    src = tmp_path / "digits.onnx"
    onnx.save(digits.onnx, str(src))
    cal = tmp_path / "cal.npz"
    np.savez(cal, input=digits.data.x_train[:120], labels=digits.data.y_train[:120])
    out, rep = tmp_path / "digits.int8.onnx", tmp_path / "r.json"
    rc = main(["compress", str(src), "-o", str(out), "--quantize", "int8", "--calibration", str(cal),
               "--per-tensor", "--activation-symmetric", "--calibration-method", "percentile",
               "--percentile", "99.99", "--max-drop", "5", "--board", "stm32h7", "--report", str(rep), "--json"])  # fmt: skip
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    document = json.loads(rep.read_text())
    assert printed == document
    (step,) = document["steps"]
    assert step["step"] == "quantize" and step["eval_samples"] == 24  # 20% of 120 held out
    assert step["config"]["per_channel"] is False and step["config"]["activation_symmetric"] is True
    assert step["config"]["percentile"] == 99.99 and step["config"]["board"] == "stm32h7"
    assert step["weight_bytes"]["ratio"] > 3.0 and step["fallback"]["met"] is True
    assert onnx.load(str(out)).graph.output[0].name == "logits"
    assert not list(tmp_path.glob(".*.tmp"))

    assert main(["compress", str(src), "-o", str(out), "--max-drop", "1"]) == 2
    assert "need --quantize int8" in capsys.readouterr().err
    assert main(["compress", str(src), "-o", str(tmp_path / "x.onnx"), "--quantize", "int8"]) == 2
    assert "needs calibration data" in capsys.readouterr().err

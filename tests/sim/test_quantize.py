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


def _with_outlier_activation(params: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Scales conv2's output channel 0 by 1e4 and conv3's weights reading it
    by 1e-4: the function is unchanged, but the per-tensor activation range
    of relu2/pool2 grows 10^4-fold and crushes every other channel."""
    p = {k: v.copy() for k, v in params.items()}
    p["conv2.weight"][0] *= 1e4
    p["conv2.bias"][0] *= 1e4
    p["conv3.weight"][:, 0] *= 1e-4
    return export_onnx({k: v.astype(np.float32) for k, v in p.items()})


def test_ranking_finds_the_layer_behind_an_outlier_activation_first(digits) -> None:
    data = digits.data
    model = _with_outlier_activation(digits.params)
    cal, ev = {"input": data.x_train[:200]}, {"input": data.x_test[:200]}
    result = quantize(model, QuantConfig(max_drop=1.0), cal, eval_data=ev)
    fb = result.report.fallback
    assert fb is not None and fb.drop_before > 20.0  # the outlier ruins default quantization
    ranked = sorted(fb.sensitivity, key=lambda k: fb.sensitivity[k]["rank"])
    assert ranked[0] == "conv3", fb.sensitivity  # the consumer of the crushed activation
    assert fb.sensitivity["conv3"]["sqnr_db"] < 10.0 < fb.sensitivity[ranked[1]]["sqnr_db"]
    assert fb.met and result.fallback_layers == ["conv3"] and fb.evaluations <= 3
    assert fb.float_layers[0].buys_back is not None and fb.float_layers[0].buys_back > 20.0
    # Keeping conv3 in float makes it read the float activation (the MaxPool before it too).
    producers = {o: n for n in result.model.graph.node for o in n.output}
    conv3 = next(n for n in result.model.graph.node if n.name == "conv3")
    assert producers[conv3.input[0]].op_type == "MaxPool" and conv3.input[1] == "conv3.weight"


def test_max_time_returns_the_best_model_so_far(digits) -> None:
    import time

    data = digits.data
    model = _with_dead_outlier_channels(digits.params, conv1=True, fc1=True)
    y = data.y_test[:100]

    def slow_accuracy(outputs: dict, ev: dict) -> float:
        time.sleep(0.4)
        return float(np.mean(outputs["logits"].argmax(-1) == ev["labels"]))

    messages: list[str] = []
    t0 = time.monotonic()
    result = quantize(model, QuantConfig(per_channel=False, max_drop=0.0, max_time_s=2.0),
                      {"input": data.x_train[:100]}, eval_data={"input": data.x_test[:100], "labels": y},
                      metric=slow_accuracy, progress=messages.append)  # fmt: skip
    assert time.monotonic() - t0 < 15.0
    fb = result.report.fallback
    assert fb is not None and fb.stopped_early
    assert "stopped at the time limit (2 s)" in fb.message and "best model so far" in fb.message
    # The returned model is what the report describes.
    assert result.fallback_layers == fb.layers
    assert result.report.metric_quantized == pytest.approx(_accuracy(result.model, data.x_test[:100], y))
    assert fb.drop_after <= fb.drop_before
    assert any("ETA" in m for m in messages) or fb.evaluations <= 2


def test_cli_metric_and_max_time(digits, tmp_path, capsys) -> None:
    src = tmp_path / "outlier.onnx"
    onnx.save(_with_dead_outlier_channels(digits.params, conv1=True, fc1=False), str(src))
    data = digits.data
    cal, ev = tmp_path / "cal.npz", tmp_path / "eval.npz"
    np.savez(cal, input=data.x_train[:100])
    np.savez(ev, input=data.x_test[:120], labels=data.y_test[:120])
    (tmp_path / "my_metrics.py").write_text(
        "import numpy as np\n"
        "def accuracy(outputs, data):\n"
        "    return float(np.mean(outputs['logits'].argmax(-1) == data['labels']))\n"
    )
    out, rep = tmp_path / "q.onnx", tmp_path / "r.json"
    args = ["compress", str(src), "-o", str(out), "--quantize", "int8", "--calibration", str(cal), "--eval", str(ev),
            "--per-tensor", "--max-drop", "1", "--report", str(rep)]  # fmt: skip
    assert main([*args, "--metric", f"{tmp_path / 'my_metrics.py'}:accuracy"]) == 0
    captured = capsys.readouterr()
    assert "candidate 1" in captured.err and "ETA" in captured.err  # progress per evaluated candidate
    assert "layers kept in float" in captured.out and "conv1" in captured.out
    (step,) = json.loads(rep.read_text())["steps"]
    assert step["metric"]["fp32"] - step["metric"]["quantized"] <= 0.01
    assert step["fallback"]["layers"] == ["conv1"] and step["fallback"]["float_layers"][0]["macs"] > 0

    assert main([*args, "--metric", f"{tmp_path / 'my_metrics.py'}:nope"]) == 2
    err = capsys.readouterr().err
    assert "has no function 'nope'" in err and "Functions there: accuracy" in err
    assert main([*args, "--metric", "accuracy"]) == 2
    assert "MODULE:FUNCTION" in capsys.readouterr().err

    out.unlink()
    rc = main([*args, "--max-drop", "0", "--max-time", "0.01", "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and "stopped at the time limit" in err and "best model so far was written" in err
    assert out.is_file() and json.loads(rep.read_text())["output"] == str(out)


def test_float_head_leaves_the_outputs_unquantized(digits) -> None:
    x = {"input": digits.data.x_train[:60]}
    plain = quantize(digits.onnx, QuantConfig(), x).model
    head = quantize(digits.onnx, QuantConfig(float_head=True), x).model
    producers = {o: n for n in head.graph.node for o in n.output}
    assert {n.op_type for n in plain.graph.node if n.output[0] == "logits"} == {"DequantizeLinear"}
    assert producers["logits"].op_type == "Identity" and producers[producers["logits"].input[0]].name == "fc2"
    # The last Gemm keeps int8 weights and inputs.
    fc2 = producers[producers["logits"].input[0]]
    assert all(producers[i].op_type == "DequantizeLinear" for i in fc2.input[:2])
    from edgekit.compress.quality import run_outputs

    feeds = [{"input": digits.data.x_test[i : i + 1]} for i in range(50)]
    ref = np.stack([r[0] for r in run_outputs(digits.onnx, feeds)])
    err = lambda m: float(np.abs(np.stack([r[0] for r in run_outputs(m, feeds)]) - ref).mean())  # noqa: E731
    assert err(head) < err(plain)

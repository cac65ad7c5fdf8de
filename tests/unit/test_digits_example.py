"""Tests of the bundled digits CNN: data split, numpy trainer, ONNX export,
and the shipped example files."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

from edgekit.core.errors import ConfigError  # noqa: E402
from edgekit.examples import digits  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402


def _ort_session(model: onnx.ModelProto) -> "ort.InferenceSession":
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def trained() -> digits.TrainedModel:
    # One default training run (a few seconds) shared by the tests below.
    return digits.train_digits_cnn()


def test_split_is_fixed_stratified_and_scaled():
    data = digits.load_digits_data(seed=0)
    assert data.x_train.shape == (1347, 1, 8, 8) and data.x_test.shape == (450, 1, 8, 8)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0 and data.x_train.max() > 0.9
    # Stratified: every class holds about a quarter of its samples in test.
    train_counts = np.bincount(data.y_train, minlength=10)
    test_counts = np.bincount(data.y_test, minlength=10)
    frac = test_counts / (train_counts + test_counts)
    assert np.all(np.abs(frac - 0.25) < 0.01), frac
    again = digits.load_digits_data(seed=0)
    np.testing.assert_array_equal(again.x_test, data.x_test)
    np.testing.assert_array_equal(again.y_train, data.y_train)
    other = digits.load_digits_data(seed=1)
    assert not np.array_equal(other.y_test, data.y_test)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_test_fraction_is_a_config_error(fraction):
    with pytest.raises(ConfigError, match="test_fraction") as info:
        digits.load_digits_data(test_fraction=fraction)
    assert "test_fraction=0.25" in info.value.hint


@pytest.mark.parametrize(
    "kwargs, word",
    [({"epochs": 0}, "epochs=0"), ({"channels": (16, 0)}, "channels"), ({"channels": (8, 8, 8)}, "pair"),
     ({"hidden": -1}, "hidden=-1"), ({"learning_rate": 0.0}, "learning_rate")],
)  # fmt: skip
def test_bad_training_arguments_are_config_errors(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        digits.train_digits_cnn(**kwargs)


def test_backward_matches_finite_differences():
    # The trainer's backward pass is hand-written; check it numerically in
    # float64 with random biases so no pre-activation sits on a ReLU kink.
    rng = np.random.default_rng(3)
    params = {k: v.astype(np.float64) for k, v in digits._init_params(rng, (3, 4), 5).items()}
    for k in params:
        if k.endswith("bias"):
            params[k] = rng.normal(0.0, 0.1, params[k].shape)
    x = rng.random((4, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 3, 7, 9])

    def loss(p):
        return digits._softmax_xent(digits._forward_cached(p, x)[0], y)[0]

    logits, cache = digits._forward_cached(params, x)
    _, dlogits = digits._softmax_xent(logits, y)
    grads = digits._backward(params, cache, dlogits.astype(np.float64))
    eps = 1e-6
    for name, value in params.items():
        assert grads[name].shape == value.shape
        flat = value.reshape(-1)
        for i in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = loss(params)
            flat[i] = old - eps
            down = loss(params)
            flat[i] = old
            numeric = (up - down) / (2 * eps)
            assert grads[name].reshape(-1)[i] == pytest.approx(numeric, rel=1e-3, abs=1e-7), (name, i)


def test_training_is_deterministic_for_a_seed():
    data = digits.load_digits_data(seed=0)
    a = digits.train_digits_cnn(seed=0, epochs=1, data=data)
    b = digits.train_digits_cnn(seed=0, epochs=1, data=data)
    assert a.accuracy == b.accuracy
    assert a.losses == b.losses
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert a.onnx.SerializeToString() == b.onnx.SerializeToString()
    c = digits.train_digits_cnn(seed=1, epochs=1, data=data)
    assert not np.array_equal(c.params["conv2.weight"], a.params["conv2.weight"])


def test_default_training_reaches_95_percent(trained):
    assert trained.accuracy >= 0.95
    assert trained.losses[-1] < trained.losses[0] / 10
    np.testing.assert_allclose(
        trained.accuracy, (trained.forward(trained.data.x_test).argmax(1) == trained.data.y_test).mean()
    )


def test_export_is_valid_opset17_with_symbolic_batch(trained):
    model = trained.onnx
    onnx.checker.check_model(model, full_check=True)
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17)}
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "input" and out.name == "logits"
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["N", 1, 8, 8] and out_dims == ["N", 10]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 3 and ops.count("Gemm") == 2 and "MaxPool" in ops and "Flatten" in ops
    conv_out = {i.name: i.dims[0] for i in model.graph.initializer if i.name.startswith("conv")}
    assert min(conv_out.values()) >= 16
    assert len(model.SerializeToString()) < 100_000


def test_onnxruntime_matches_numpy_forward(trained):
    x = trained.data.x_test
    got = _ort_session(trained.onnx).run(None, {"input": x})[0]
    want = trained.forward(x)
    assert got.shape == (450, 10) and got.dtype == np.float32
    # Relative to the logits' scale: element-wise relative error is meaningless
    # for logits that happen to be near zero.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    ort_accuracy = float((got.argmax(axis=1) == trained.data.y_test).mean())
    assert ort_accuracy == trained.accuracy


def test_shipped_files_load_and_predict_their_labels():
    model_path = digits.example_model_path()
    sample = np.load(digits.example_sample_path())
    inputs = np.load(digits.example_inputs_path())
    assert set(sample.files) == {"input", "labels"} and set(inputs.files) == {"input"}
    x, labels = sample["input"], sample["labels"]
    assert x.shape == (16, 1, 8, 8) and x.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(inputs["input"], x)

    prepared = load_model(model_path)
    assert [(s.name, s.shape) for s in prepared.inputs] == [("input", (1, 1, 8, 8))]
    assert [(s.name, s.shape) for s in prepared.outputs] == [("logits", (1, 10))]
    session = _ort_session(prepared.model)
    predicted = np.array([session.run(None, {"input": x[i : i + 1]})[0].argmax() for i in range(16)])
    assert int((predicted == labels).sum()) >= 14, (predicted, labels)


def test_script_entry_writes_the_three_files(tmp_path, capsys):
    assert digits.main(["--out", str(tmp_path), "--epochs", "1"]) == 0
    assert "test top-1" in capsys.readouterr().out
    model = onnx.load(str(tmp_path / "digits_cnn.onnx"))
    onnx.checker.check_model(model)
    sample = np.load(tmp_path / "digits_sample.npz")
    assert sample["input"].shape == (16, 1, 8, 8) and sample["labels"].shape == (16,)
    assert np.load(tmp_path / "digits_input.npz").files == ["input"]

"""QuantConfig validation, board defaults, calibration data handling, report statistics."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compress.calibration import FeedsReader, load_arrays, make_feeds, split_holdout
from edgekit.compress.config import QuantConfig
from edgekit.compress.quality import ErrorStats, is_class_output, weight_bytes
from edgekit.core.errors import ConfigError, InputError
from edgekit.core.profiles import load_profiles
from edgekit.core.tensors import TensorSpec


@pytest.mark.parametrize(
    "kwargs, match, hint",
    [
        ({"calibration_method": "kl"}, "unknown calibration method 'kl'", "minmax, entropy, percentile"),
        ({"calibration_method": "minmax", "percentile": 99.9}, "only applies to the percentile",
         "--calibration-method percentile"),
        ({"calibration_method": "percentile", "percentile": 101}, "percentile must be in", "99.99"),
        ({"calibration_samples": 0}, "calibration_samples must be a positive integer", "100"),
        ({"calibration_samples": True}, "calibration_samples must be a positive integer", ""),
        ({"max_drop": -1}, "max_drop must be between 0 and 100", "one point of top-1"),
        ({"max_drop": float("nan")}, "max_drop must be between 0 and 100", ""),
        ({"min_sqnr_db": 0}, "min_sqnr_db must be a positive number", "30"),
        ({"eval_fraction": 1.0}, "eval_fraction must be between 0 and 1", "0.2"),
        ({"exclude": "Conv"}, "exclude must be a list", "Softmax"),
        ({"per_channel": 1}, "per_channel must be True or False", ""),
    ],
)
def test_invalid_configs_name_the_problem(kwargs, match, hint) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        QuantConfig(**kwargs)
    assert hint in info.value.hint


def test_valid_config_maps_to_onnxruntime() -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    cfg = QuantConfig(per_channel=False, activation_symmetric=True, calibration_method="percentile",
                      percentile=99.9, exclude=["Softmax"])  # fmt: skip
    assert cfg.exclude == ("Softmax",)
    kw = cfg.ort_kwargs()
    assert kw["quant_format"] is QuantFormat.QDQ
    assert kw["per_channel"] is False
    assert kw["weight_type"] is QuantType.QInt8 and kw["activation_type"] is QuantType.QInt8
    assert kw["calibrate_method"] is CalibrationMethod.Percentile
    assert kw["extra_options"] == {"WeightSymmetric": True, "ActivationSymmetric": True, "CalibPercentile": 99.9}
    assert QuantConfig(calibration_method="percentile").to_json()["percentile"] == 99.999
    assert not cfg.accuracy_controlled and QuantConfig(min_sqnr_db=30).accuracy_controlled


def test_board_defaults() -> None:
    profiles = load_profiles()
    npu_board = profiles.board("pynq-z2")
    npu = QuantConfig.for_board(npu_board, profiles.target_of(npu_board))
    assert (npu.per_channel, npu.weight_symmetric, npu.activation_symmetric) == (True, True, True)
    mcu_board = profiles.board("stm32h7")
    mcu = QuantConfig.for_board(mcu_board, profiles.target_of(mcu_board), per_channel=False, max_drop=1.0)
    assert (mcu.per_channel, mcu.weight_symmetric, mcu.activation_symmetric, mcu.max_drop) == (False, True, False, 1.0)
    host = profiles.board("host")
    assert QuantConfig.for_board(host, profiles.target_of(host)) == QuantConfig()
    with pytest.raises(ConfigError, match="unknown QuantConfig field"):
        QuantConfig.for_board(None, None, per_chanel=True)


def test_make_feeds_batches_and_errors(tmp_path) -> None:
    specs = [TensorSpec("x", (1, 3, 4), "float32")]
    feeds = make_feeds({"x": np.zeros((5, 3, 4), np.float64), "labels": np.arange(5)}, specs)
    assert len(feeds) == 5 and feeds[0]["x"].shape == (1, 3, 4) and feeds[0]["x"].dtype == np.float32
    # Items that already have the input's full shape are taken one per run.
    assert len(make_feeds({"x": np.zeros((2, 1, 3, 4), np.float32)}, specs)) == 2
    # A static batch of 2 takes two samples per run; the odd one is unused.
    assert len(make_feeds({"x": np.zeros((5, 3, 4), np.float32)}, [TensorSpec("x", (2, 3, 4), "float32")])) == 2
    with pytest.raises(InputError, match="lacks the model input") as info:
        make_feeds({"y": np.zeros((2, 3, 4))}, specs)
    assert "keyed by name: x" in info.value.hint
    with pytest.raises(InputError, match=r"has shape \[2, 5\]") as info:
        make_feeds({"x": np.zeros((2, 5))}, specs)
    assert "[N, 3, 4]" in info.value.hint
    two = [TensorSpec("a", (1, 2), "float32"), TensorSpec("b", (1, 2), "float32")]
    with pytest.raises(InputError, match="different sample counts"):
        make_feeds({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, two)
    with pytest.raises(InputError, match="does not exist"):
        load_arrays(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_arrays(bad)


def test_split_holdout_is_seeded_and_disjoint() -> None:
    feeds = [{"x": np.full((1,), i, np.float32)} for i in range(10)]
    cal, ev = split_holdout(feeds, 0.2, seed=0)
    assert len(cal) == 8 and len(ev) == 2
    ids = sorted(int(f["x"][0]) for f in cal + ev)
    assert ids == list(range(10))
    assert [f["x"][0] for f in ev] == [f["x"][0] for f in split_holdout(feeds, 0.2, seed=0)[1]]
    with pytest.raises(InputError, match="needs at least 2"):
        split_holdout(feeds[:1], 0.2, seed=0)
    reader = FeedsReader(feeds)
    assert len([r for r in iter(reader.get_next, None)]) == 10
    reader.set_range(2, 4)
    assert [int(r["x"][0]) for r in iter(reader.get_next, None)] == [2, 3]


def test_error_stats() -> None:
    ref = np.array([[3.0, 4.0, 0.0]])
    st = ErrorStats()
    st.update(ref, ref + np.array([[0.3, -0.4, 0.0]]), class_axis=True)
    # signal 25, noise 0.25 -> 20 dB
    assert st.sqnr_db == pytest.approx(20.0)
    assert st.max_abs == pytest.approx(0.4)
    assert st.top1_agreement == 100.0
    st.update(np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]), class_axis=True)
    assert st.top1_agreement == 50.0
    same = ErrorStats()
    same.update(ref, ref)
    assert math.isinf(same.sqnr_db) and same.cosine == pytest.approx(1.0)
    assert is_class_output((1, 10)) and is_class_output((1, 25, 97)) and not is_class_output((1, 3, 8, 8))


def test_weight_bytes_counts_int8_weights_not_activation_params() -> None:
    w_q = numpy_helper.from_array(np.zeros((4, 3), np.int8), "w_q")
    w_s = numpy_helper.from_array(np.ones(4, np.float32), "w_s")
    w_z = numpy_helper.from_array(np.zeros(4, np.int8), "w_z")
    b_q = numpy_helper.from_array(np.zeros(4, np.int32), "b_q")
    b_s = numpy_helper.from_array(np.ones(4, np.float32), "b_s")
    a_s = numpy_helper.from_array(np.array(0.1, np.float32), "a_s")
    a_z = numpy_helper.from_array(np.array(0, np.int8), "a_z")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_s", "a_z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "a_s", "a_z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b"], axis=0),
        helper.make_node("Gemm", ["xd", "w", "b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[w_q, w_s, w_z, b_q, b_s, a_s, a_z],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    # 12 int8 weights + 16 B scales + 4 B zero points + 16 B int32 bias.
    assert weight_bytes(model) == 12 + 16 + 4 + 16

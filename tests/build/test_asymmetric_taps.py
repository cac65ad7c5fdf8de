"""Asymmetric weights beyond int8 at a few taps: the rest read from the input in the conv's epilogue.

edgekit.compiler.integer.weight_taps: per-tensor asymmetric weights (onnxruntime
``QUInt8``, zero point other than 128) leave int8 at a few taps only; those are
added from the input in the conv's epilogue instead of a window sum. Checked
here: the split is exact; outputs equal the window-sum form's bit for bit (on
the generic ``llvm`` target and on this host) and lie within one step of
onnxruntime's QDQ graph; and the kernels are those of symmetric weights, every
conv's requantization fused (an int8 output, not an int32 result read back by a
kernel of its own), compiled for an AVX512-VNNI and an AVX2 target whatever CPU
runs the test.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

pytest.importorskip("tvm")

import tvm  # noqa: E402
from _host_cpu import host_target  # noqa: E402
from _int8_checks import assert_within_one_lsb_of_onnxruntime, kernel_calls, normal_feeds, run_built, small_cnn  # noqa: E402

from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.compiler.integer import weight_taps  # noqa: E402
from edgekit.compiler.integer.weight_taps import split_taps  # noqa: E402
from edgekit.compress.calibration import FeedsReader  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.frontend.uint8_activations import int8_activations  # noqa: E402

GENERIC = tvm.target.Target({"kind": "llvm"})
_SHAPE = (1, 3, 12, 12)


def test_split_is_exact_and_bounded() -> None:
    rng = np.random.default_rng(3)
    centered = rng.integers(-120, 120, (6, 4, 3, 3))
    centered[1, 1, 0, 2], centered[2, 1, 0, 2], centered[5, 3, 2, 2] = 200, -130, 255
    fitted, taps = split_taps(centered, 0, groups=2)
    assert fitted.dtype == np.int8 and len(taps) == 2  # channels 1 and 2 (group 0) share one position
    assert list(taps[0].rest) == [0, 73, -2, 0, 0, 0] and taps[1].group == 1
    rebuilt = fitted.astype(np.int64)
    for tap in taps:
        for o in np.nonzero(tap.rest)[0]:
            assert o // 3 == tap.group
            rebuilt[(o, *tap.position)] += tap.rest[o]
    np.testing.assert_array_equal(rebuilt, centered)
    assert split_taps(centered, 0, groups=2, max_taps=1) is None
    matmul = np.zeros((5, 3), np.int64)
    matmul[4, 1] = -200
    fitted, (tap,) = split_taps(matmul, 1)
    assert tap.position == (4,) and list(tap.rest) == [0, -72, 0] and fitted[4, 1] == -128


def _fp32_model() -> onnx.ModelProto:
    return small_cnn(_SHAPE, seed=7, mean=0.05, stride_on="depthwise")


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    return normal_feeds(_SHAPE, n, seed)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test CNN quantized by onnxruntime (QDQ, QUInt8 activations and weights, per tensor), with
    asymmetric and with symmetric weights: ``{"asym-qdq", "asym", "sym"}`` paths (the last two
    rewritten to int8 activations, as ``edgekit compile`` does)."""
    d = tmp_path_factory.mktemp("taps")
    onnx.save(_fp32_model(), str(d / "fp32.onnx"))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs pre-processing advice on the root logger
    out = {}
    try:
        for name, symmetric in (("asym", False), ("sym", True)):
            quantize_static(str(d / "fp32.onnx"), str(d / f"{name}-qdq.onnx"), FeedsReader(_feeds(16, 0)),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QUInt8, extra_options={"WeightSymmetric": symmetric})  # fmt: skip
            onnx.save(int8_activations(onnx.load(str(d / f"{name}-qdq.onnx"))).model, str(d / f"{name}.onnx"))
            out[name], out[f"{name}-qdq"] = str(d / f"{name}.onnx"), str(d / f"{name}-qdq.onnx")
    finally:
        root.setLevel(level)
    return out


def _linear_details(path: str) -> list[str]:
    report = import_onnx(load_model(path))[2]
    assert report["kept_float"] == [], report["kept_float"]
    return [c["detail"] for c in report["rewritten"] if c["kind"] in ("conv2d", "matmul")]


def test_every_asymmetric_layer_takes_taps(models: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    details = _linear_details(models["asym"])
    assert len(details) == 4 and all("taps beyond int8 read from the input" in d for d in details), details
    monkeypatch.setattr(weight_taps, "MAX_TAPS", 0)
    assert all("weight zero point subtracted" in d for d in _linear_details(models["asym"]))


@pytest.mark.parametrize("where", ["generic", "host"])
def test_taps_equal_the_window_sum_form_and_onnxruntime(models: dict[str, str], where: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    target = GENERIC if where == "generic" else host_target()
    xs = [f["x"] for f in _feeds(4, 9)]
    taps = run_built(models["asym"], target, xs)  # one build, four inputs
    monkeypatch.setattr(weight_taps, "MAX_TAPS", 0)  # every layer on the window-sum form
    window_sums = run_built(models["asym"], target, xs)
    for x, got, want in zip(xs, taps, window_sums):
        np.testing.assert_array_equal(got, want)
        assert_within_one_lsb_of_onnxruntime(models["asym-qdq"], {"x": x}, got)


def _conv_outputs(calls: list) -> list[str]:
    return [out[-1] for name, _ins, out in calls if "conv2d" in name]


@pytest.mark.parametrize("mcpu", ["znver4", "haswell"])
def test_conv_epilogues_stay_fused(models: dict[str, str], mcpu: str) -> None:
    """Every conv kernel writes its requantized output (its epilogue holds the taps), as many conv kernels as
    with symmetric weights, and at most one small kernel more per layer (a slice of an input). Fails on the
    window-sum form: its conv results are int32, read back by a kernel of their own (dense) or added to a
    second conv's (depthwise)."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    asym, sym = kernel_calls(models["asym"], target), kernel_calls(models["sym"], target)
    outputs = _conv_outputs(asym)
    # requantized: int8, or the next conv's operand form (uint8 for vpdpbusd, int16 for vpmaddwd); never the int32 sum
    assert len(outputs) == len(_conv_outputs(sym)) == 3 and "int32" not in outputs, asym
    assert len(asym) <= len(sym) + 4, ([c[0] for c in asym], [c[0] for c in sym])

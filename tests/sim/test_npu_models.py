"""Real int8 models on the NPU, tensor by tensor against the host's integer-only compile.

PP-OCR cls (the text-angle classifier in the ``rapidocr`` wheel) and the
PP-OCRv6 det small trunk (same wheel, real weights; see
``_npu_models.ppocr_det_trunk``) are compiled for pynq-z2 and run on the
Python model and, where Verilator is installed, on the accelerator's RTL.
Every int8 tensor the package produces -- each offloaded layer's output read
back from accelerator DRAM and each host sub-graph's output -- must equal
the same tensor of the model compiled for ``host`` with the integer-only
lowering in its fixed-point form (``_npu_models.host_integer_outputs``; on
x86 the host compile otherwise requantizes in float32, which is where the
PP-OCR cls mismatch came from: one element of ``depthwise_conv2d_1`` whose
exact fixed-point value is 18.499985 rounded to 19, and the network spread
it). Each model costs one host compile (about 30 s for cls, 70 s for det on
two loaded cores), hence ``slow``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.compiler.backends.npu import compile_npu
from edgekit.core.profiles import get_board
from edgekit.runtime.npu.loader import open_simulated
from edgekit.sim.npu.verilator import verilator_missing

sys.path.insert(0, str(Path(__file__).parent))
from _npu_models import host_integer_outputs, int8_tensors, ppocr_cls, ppocr_det_trunk  # noqa: E402

pytestmark = pytest.mark.slow
needs_verilator = pytest.mark.skipif(bool(verilator_missing()), reason=f"NPU RTL co-simulation: {verilator_missing()}")

MODELS = {"ppocr-cls": ppocr_cls, "ppocr-det-trunk": lambda: ppocr_det_trunk(64)}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request, tmp_path_factory):
    """The model's package for pynq-z2, its traced run on the Python model, and the host's tensors."""
    pytest.importorskip("rapidocr")
    model, feeds = MODELS[request.param]()
    npu = get_board("pynq-z2")[0].npu
    built = compile_npu(model, npu)
    executor, _, _ = open_simulated(built.members.__getitem__, npu)
    traced, steps = executor.run(feeds, trace=True)
    names = [n for n in int8_tensors(model) if n in traced]
    host = host_integer_outputs(model, feeds, names, tmp_path_factory.mktemp(request.param))
    return request.param, built, feeds, traced, steps, names, host, model


def _assert_matches_host(traced, names, host, outputs):
    """``names``: the int8 tensors; ``outputs``: the model outputs (float after the last dequantize)."""
    assert outputs
    differ = [(n, int(np.count_nonzero(traced[n] != host[n]))) for n in names if not np.array_equal(traced[n], host[n])]
    assert not differ, f"{len(differ)} of {len(names)} int8 tensors differ from the host integer compile, first: {differ[:3]}"
    for name in outputs:
        np.testing.assert_array_equal(traced[name], host[name], err_msg=name)


def test_every_int8_tensor_on_the_python_model_equals_the_host_integer_compile(case):
    name, built, _, traced, _, names, host, _ = case
    # Every offloaded layer's output is among the tensors compared.
    assert {layer.output for layer in built.partition.layers} <= set(names)
    assert len(built.partition.layers) >= (60 if name == "ppocr-cls" else 100)
    _assert_matches_host(traced, names, host, host.keys() - set(names))


@needs_verilator
def test_the_rtl_computes_the_same_tensors_and_cycles(case):
    _, built, feeds, _, model_steps, names, host, _ = case
    npu = get_board("pynq-z2")[0].npu
    executor, _, _ = open_simulated(built.members.__getitem__, npu, engine="rtl")
    traced, steps = executor.run(feeds, trace=True)
    _assert_matches_host(traced, names, host, host.keys() - set(names))
    rtl_cycles = [s.cycles for s in steps if s.kind == "npu"]
    model_cycles = [s.cycles for s in model_steps if s.kind == "npu"]
    assert len(rtl_cycles) == len(built.partition.layers)
    for layer, got, want in zip(built.partition.layers, rtl_cycles, model_cycles):
        assert abs(got - want) <= 0.05 * want, (layer.name, got, want)


def test_the_compiled_package_on_the_simulated_board_gives_the_host_outputs(case, tmp_path):
    """``compile_model`` for pynq-z2, the package run by its runner on the simulated board: the model's
    outputs equal the host integer compile's (test_npu_sim's package test of the small models, here on
    the real ones, sharing this file's host compile)."""
    import onnx

    from edgekit.compiler.backend import CompileOptions
    from edgekit.compiler.driver import compile_model
    from edgekit.package import open_package
    from edgekit.runtime.runner import open_runner

    _, _, feeds, _, _, _, host, model = case
    src = tmp_path / "model_q.onnx"
    onnx.save(model, src)
    pkg = tmp_path / "pynq-z2.ekpkg"
    compile_model(str(src), "pynq-z2", pkg, options=CompileOptions(int8_choice="int8"))
    board, _ = get_board("pynq-z2")
    runner = open_runner(open_package(pkg), board, sim=True)
    try:
        got = runner.run(feeds)
    finally:
        runner.close()
    outputs = [o.name for o in model.graph.output]
    assert sorted(got) == sorted(outputs)
    for name in outputs:
        np.testing.assert_array_equal(got[name], host[name], err_msg=name)

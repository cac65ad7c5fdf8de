"""Table lookups writing a ``vpdpbusd`` depthwise conv's blocked input (backends.llvm.depthwise_input; issue #14).

Which kernels the build makes is checked for explicit targets, whatever CPU
runs the test; outputs where this CPU runs the target's code: bit-identical
with the generic integer kernels, within one step of onnxruntime's QDQ graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from _host_cpu import skip_unless_runs_here
from _int8_checks import assert_within_one_lsb_of_onnxruntime, kernel_calls, quantized, run_built
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")

import edgekit.compiler.backends.llvm.int8 as cpu_int8  # noqa: E402
from edgekit.compiler.backends.llvm.depthwise_input import windows  # noqa: E402

ZEN4 = {"kind": "llvm", "mcpu": "znver4"}  # AVX512-VNNI + VBMI: 16-channel blocks, vpermi2b lookups
ICELAKE = {"kind": "llvm", "mcpu": "icelake-server"}  # the same on Intel (whose CPUs lack Zen's sse4a)
ALDERLAKE = {"kind": "llvm", "mcpu": "alderlake"}  # AVX-VNNI: 8-channel blocks, vpshufb lookups
CASCADELAKE = {"kind": "llvm", "mcpu": "cascadelake"}  # AVX512-VNNI, no VBMI: 16-channel blocks, vpermi2w lookups
SHAPE = (1, 8, 10, 14)


def _model() -> onnx.ModelProto:
    """Hard-swish feeding depthwise convs: 33 channels (fewer than one 64-value lookup, a ragged block),
    88 (a last window overlapping the one before), 8 (fewer than a 16-channel block); the 33-channel
    hard-swish also feeds an Add (two readers: the copy stays). Then ReLU convs feeding depthwise
    convs: 32 channels (whole 16-channel blocks: the conv writes them) and 24 (whole 8-channel blocks only)."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(v, k) for k, v in {
        "p1": w(33, 8, 1, 1), "d1": w(33, 1, 3, 3), "d2": w(33, 1, 3, 3), "p2": w(88, 33, 1, 1),
        "d3": w(88, 1, 5, 5), "p3": w(8, 88, 1, 1), "d4": w(8, 1, 3, 3), "p5": w(32, 8, 1, 1), "d5": w(32, 1, 3, 3),
        "p6": w(24, 32, 1, 1), "d6": w(24, 1, 3, 3)}.items()]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "p1"], ["c1"]),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "d1"], ["e1"], group=33, pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["e1"], ["h2"]),
        helper.make_node("Conv", ["h2", "d2"], ["e2"], group=33, pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["e2", "h2"], ["a2"]),
        helper.make_node("Conv", ["a2", "p2"], ["c2"]),
        helper.make_node("HardSwish", ["c2"], ["h3"]),
        helper.make_node("Conv", ["h3", "d3"], ["e3"], group=88, strides=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["e3", "p3"], ["c3"]),
        helper.make_node("HardSwish", ["c3"], ["h4"]),
        helper.make_node("Conv", ["h4", "d4"], ["e4"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["e4", "p5"], ["c5"]),
        helper.make_node("Relu", ["c5"], ["r5"]),
        helper.make_node("Conv", ["r5", "d5"], ["e5"], group=32, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["e5", "p6"], ["c6"]),
        helper.make_node("Relu", ["c6"], ["r6"]),
        helper.make_node("Conv", ["r6", "d6"], ["y"], group=24, pads=[1, 1, 1, 1]),
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 5, 7])
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> str:
    cal = {"x": np.random.default_rng(1).standard_normal((8, *SHAPE[1:])).astype(np.float32)}
    return quantized(tmp_path_factory.mktemp("dw_input"), _model(), cal)


@pytest.mark.parametrize(("c", "lanes", "step"), [(33, 16, 64), (88, 16, 64), (200, 16, 64), (16, 16, 64),
                                                  (40, 8, 32), (33, 8, 32), (8, 8, 32)])  # fmt: skip
def test_windows_cover_each_block_once_and_stay_in_the_row(c, lanes, step):
    blocks = [(k, n) for _s, _w, bs in windows(c, lanes, step) for k, n in bs]
    assert blocks == [(k, min(lanes, c - k * lanes)) for k in range(-(-c // lanes))]
    for start, width, bs in windows(c, lanes, step):
        assert 0 <= start and start + width <= c and width == (step if c >= step else lanes)
        assert all(start <= k * lanes and k * lanes + n <= start + width for k, n in bs)


@pytest.mark.parametrize(("target", "lanes"), [(ZEN4, 16), (ALDERLAKE, 8), (CASCADELAKE, 16)],
                         ids=["znver4", "alderlake", "cascadelake"])  # fmt: skip
def test_single_reader_lookups_write_the_blocked_input(int8_model, target, lanes):
    calls = kernel_calls(int8_model, tvm.target.Target(target))
    written = [out for name, _ins, out in calls if name.startswith("lookup_block")]
    copied = [ins[0] for name, ins, _out in calls if name.startswith("pad_block")]
    # The 33- and 88-channel single-reader lookups write blocks; the lookup the Add also reads
    # and the 8-channel one (fewer channels than a 16-channel block) keep the copy.
    assert sorted(w[1] * w[4] for w in written) == sorted([-(-33 // lanes) * lanes, -(-88 // lanes) * lanes]
                                                          + ([8] if lanes == 8 else []))  # fmt: skip
    assert all(w[4] == lanes and w[5] == "uint8" for w in written)
    assert sorted(c[3] for c in copied) == ([8, 24] if lanes == 16 else []) + [33]


@pytest.mark.parametrize(("target", "lanes"), [(ZEN4, 16), (ALDERLAKE, 8)], ids=["znver4", "alderlake"])
def test_convs_write_the_blocked_input_in_their_epilogue(int8_model, target, lanes):
    calls = kernel_calls(int8_model, tvm.target.Target(target))
    placed = [(name, out) for name, _ins, out in calls if "place_block" in name]
    # Whole blocks only: 32 channels for 16-lane blocks, 32 and 24 for 8-lane ones; each in its conv's kernel.
    assert sorted(out[1] * out[4] for _n, out in placed) == ([24] if lanes == 8 else []) + [32]
    assert all(name.startswith("fused_conv2d_vnni") and out[4] == lanes for name, out in placed), placed


@pytest.mark.parametrize("target", [ICELAKE, ALDERLAKE, CASCADELAKE], ids=["icelake-server", "alderlake", "cascadelake"])
def test_bit_identical_with_the_generic_integer_kernels(int8_model, monkeypatch, target):
    skip_unless_runs_here(target)
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32) * 1.5
    got = run_built(int8_model, tvm.target.Target(target), x)
    assert_within_one_lsb_of_onnxruntime(int8_model, {"x": x}, got)
    monkeypatch.setattr(cpu_int8, "dot_isa", lambda t: None)
    generic = run_built(int8_model, tvm.target.Target(target), x)
    assert np.std(generic) > 0
    np.testing.assert_array_equal(got, generic)


def test_convs_writing_blocks_stay_tuning_tasks(int8_model):
    # MetaSchedule keeps only kernels whose FLOPs TVM can estimate (tuning.extract_tasks).
    from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module
    from edgekit.compiler.backends.llvm.tuning import extract_tasks
    from edgekit.compiler.importer import import_onnx
    from edgekit.frontend.loader import load_model

    target = tvm.target.Target(ZEN4)
    tasks = extract_tasks(prepare_cpu_module(import_onnx(load_model(int8_model))[0], target)[0], target)
    assert any("place_block" in t.task_name for t in tasks), [t.task_name for t in tasks]

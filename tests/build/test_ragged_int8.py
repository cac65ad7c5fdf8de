"""int8 convolutions with the ragged channel counts structured pruning leaves (issue #14 item 6).

A layer pruned from 32 to 23 channels must not pay for 32: its dot-product
kernel takes as many reduction steps as 24 input channels need (``vpdpbusd``
reads 4 per step) and as many vectors as 23 output channels need, its
requantization is written straight from the register tile (no padded int32
result through memory and a second loop), and its input costs no more
kernels than a layer of 24 channels. Structure is checked for an explicit
AVX-512 VNNI target whatever CPU runs the test; numerics where this CPU runs
that code, against the generic integer kernels (bit-exact) and onnxruntime's
QDQ graph as written (1 LSB).
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")

import edgekit.compiler.backends.llvm.int8 as cpu_int8  # noqa: E402
from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from _host_cpu import first_runnable, needs_cpu  # noqa: E402
from _int8_checks import assert_within_one_lsb_of_onnxruntime, quantized, run_built  # noqa: E402

VNNI512 = {"kind": "llvm", "mcpu": "znver4"}
#: An AVX512-VNNI CPU whose code this machine runs, for the numerics (Intel CPUs have no sse4a).
RUN_VNNI512 = first_runnable("znver4", "icelake-server", "cascadelake")


def _model(channels: int) -> onnx.ModelProto:
    """Two padded 3x3 convs of ``channels`` outputs after a 24-channel input, each followed by Relu."""
    rng = np.random.default_rng(channels)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(w(channels, 24, 3, 3), "w1"), numpy_helper.from_array(w(channels, 1)[:, 0], "b1"),
             numpy_helper.from_array(w(channels, channels, 3, 3), "w2"),
             numpy_helper.from_array(w(channels, 1)[:, 0], "b2")]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "ragged", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory) -> dict[int, str]:
    """The QDQ model with 23 channels (pruned from 32 with ratio 0.3) and with 24."""
    cal = {"x": np.random.default_rng(1).standard_normal((16, 24, 8, 8)).astype(np.float32)}
    return {channels: quantized(tmp_path_factory.mktemp(f"ragged{channels}"), _model(channels), cal)
            for channels in (23, 24)}  # fmt: skip


def _scheduled(path: str, target: dict) -> tuple[list[str], dict[str, str]]:
    """The kernels ``main`` calls, in order, and the scheduled TIR of every kernel by name."""
    mod, _ = import_onnx(load_model(path))[:2]
    t = tvm.target.Target(target)
    prepared, _ = prepare_cpu_module(mod, t)
    with t, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(t))(prepared)
    calls = re.findall(r"R\.call_tir\(([A-Za-z0-9_]+),", scheduled["main"].script())
    tir = {gv.name_hint: f.script() for gv, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    return calls, tir


def test_ragged_conv_takes_the_steps_its_channels_need(int8_models):
    calls, tir = _scheduled(int8_models[23], VNNI512)
    convs = [n for n in calls if "conv2d_vnni512" in n]
    assert len(convs) == 2, calls
    second = tir[convs[1]]
    # Blocked weights [O/16, KH, KW, I/4, 16, 4]: 2 vectors for 23 output channels
    # (the fewest), 6 steps of 4 for 23 input channels (24, not 32).
    assert re.search(r"T\.Buffer\(\(T\.int64\(2\), T\.int64\(3\), T\.int64\(3\), T\.int64\(6\), T\.int64\(16\), "
                     r"T\.int64\(4\)\), \"int8\"\)", second), second[:600]  # fmt: skip
    # The requantization is in the tile's write-back, bounded to the 23 channels:
    # the only int32 buffer is the accumulator tile, and nothing past channel 23 is stored.
    buffers = re.findall(r"(\w+) = T\.sblock_alloc_buffer\(.*\"int32\"\)", second)
    assert len(buffers) == 1 and buffers[0].endswith("_global"), buffers
    assert re.search(r"T\.where\(.* < T\.int64\(23\)\)", second), second


def test_ragged_input_costs_no_more_kernels_than_a_round_one(int8_models):
    """Padding 23 channels to 24 for the dot product is one pad kernel with the
    zero-point pad, as for 24 channels (it was a third kernel)."""
    ragged, _ = _scheduled(int8_models[23], VNNI512)
    round_, _ = _scheduled(int8_models[24], VNNI512)
    assert len(ragged) == len(round_), (ragged, round_)


@needs_cpu(RUN_VNNI512)
def test_ragged_conv_is_exact(int8_models, monkeypatch):
    path, target = int8_models[23], tvm.target.Target({"kind": "llvm", "mcpu": RUN_VNNI512})
    x = np.random.default_rng(7).standard_normal((1, 24, 8, 8)).astype(np.float32)
    got = run_built(path, target, x)
    assert got.shape == (1, 23, 8, 8)
    monkeypatch.setattr(cpu_int8, "dot_isa", lambda t: None)
    np.testing.assert_array_equal(got, run_built(path, target, x))  # the generic integer kernels
    assert_within_one_lsb_of_onnxruntime(path, {"x": x}, got)

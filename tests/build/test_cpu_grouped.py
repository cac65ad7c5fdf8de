"""Grouped-conv epilogues (slice of the per-group padding, bias, ReLU, channel shuffle) against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")
ort = pytest.importorskip("onnxruntime")

from _host_cpu import host_target  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import build_cpu, import_onnx, prepare_cpu_module, schedule_passes
from edgekit.frontend.loader import load_model

RTOL = 1e-4
GROUPS, PER_GROUP, HW = 4, 34, 9  # ShuffleNet's 4 groups of 34: padded to whole vectors, sliced back


def _target():
    return host_target()  # this CPU, less what it lacks (or EDGEKIT_TEST_HOST_FLAGS)


def shuffle_unit(seed: int = 0) -> onnx.ModelProto:
    """A ShuffleNet unit: grouped 1x1 conv + ReLU, channel shuffle, depthwise 3x3, grouped 1x1, residual, ReLU."""
    rng = np.random.default_rng(seed)
    c = GROUPS * PER_GROUP

    def w(name, shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        w("W1", (c, PER_GROUP, 1, 1)), w("B1", (c,)),
        w("W2", (c, 1, 3, 3)), w("B2", (c,)),
        w("W3", (c, PER_GROUP, 1, 1)), w("B3", (c,)),
        numpy_helper.from_array(np.array([1, GROUPS, PER_GROUP, HW, HW], np.int64), "s5"),
        numpy_helper.from_array(np.array([1, c, HW, HW], np.int64), "s4"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["a"], group=GROUPS),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Reshape", ["r", "s5"], ["r5"]),
        helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t5", "s4"], ["sh"]),
        helper.make_node("Conv", ["sh", "W2", "B2"], ["d"], group=c, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d", "W3", "B3"], ["e"], group=GROUPS),
        helper.make_node("Add", ["e", "x"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, HW, HW]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "shuffle_unit", vi[:1], vi[1:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _prepared(tmp_path):
    path = tmp_path / "unit.onnx"
    onnx.save(shuffle_unit(), str(path))
    return load_model(str(path), None)


def test_shuffle_unit_matches_onnxruntime(tmp_path):
    prepared = _prepared(tmp_path)
    mod, params = import_onnx(prepared)
    built = build_cpu(mod, _target(), params)
    x = np.random.default_rng(1).standard_normal((1, GROUPS * PER_GROUP, HW, HW)).astype(np.float32)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x), *built.params)
    got = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
    want = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) / float(np.abs(want).max()) <= RTOL


def test_epilogue_loops_split_into_group_runs(tmp_path):
    """The slice epilogue's channel loop runs per group (extent 34), not over the flat 136 channels."""
    prepared = _prepared(tmp_path)
    mod, _params = import_onnx(prepared)
    target = _target()
    with target:
        prepared_mod, _ = prepare_cpu_module(mod, target)
        with tvm.transform.PassContext(opt_level=3):
            scheduled = tvm.transform.Sequential(schedule_passes(target))(prepared_mod)
    epilogues = {
        gv.name_hint: f.script()
        for gv, f in scheduled.functions_items()
        if "strided_slice" in gv.name_hint and "conv2d" not in gv.name_hint
    }
    assert epilogues, "no standalone slice epilogue: the grouped conv was not padded per group"
    # A flat loop over all channels vectorizes `c % 34` lane by lane; split, the channel
    # iter is `run * 34 + lane` (slice) or `pos * 4 + group` (slice and shuffle). The
    # model's last epilogue also transposes back to NCHW and keeps its loops.
    split = [n for n, text in epilogues.items() if f"* T.int64({PER_GROUP}))" in text or f"* T.int64({GROUPS}) +" in text]
    shuffles = [n for n in epilogues if n.count("transpose") >= 3]
    assert shuffles and set(shuffles) <= set(split), (split, list(epilogues))

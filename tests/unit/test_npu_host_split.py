"""The NPU backend's host sub-graphs do not depend on Python's string hashing."""

from __future__ import annotations

from onnx import helper

from edgekit.compiler.backends.npu.host_split import _pull_dequantize


def test_dequantize_copies_are_pulled_in_first_use_order():
    # One host run reads eight DequantizeLinear outputs of another run; the
    # copies it gets are placed in the order the run reads them (each
    # prepended, so the last read comes first), whatever PYTHONHASHSEED is.
    names = [f"t{k}" for k in range(8)]
    dqs = [helper.make_node("DequantizeLinear", [f"{t}_q", "s", "z"], [t], name=f"dq_{t}") for t in names]
    total = helper.make_node("Sum", names, ["y"], name="sum")
    run = [total]
    _pull_dequantize(run, {d.output[0]: d for d in dqs}, inits={"s", "z"})
    assert [n.name for n in run] == [f"dq_{t}" for t in reversed(names)] + ["sum"]

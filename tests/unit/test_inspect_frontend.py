"""``edgekit inspect`` says what compile's front end does (issue #20 item 3):
the ops TVM imports after legalization, which nodes were expanded or
rewritten, and compile's own refusal, word for word."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.cli.main import main
from edgekit.compiler.driver import compile_model
from edgekit.core.errors import UnsupportedOpsError

pytest.importorskip("tvm")


def _save(tmp_path: Path, nodes, inits, opset=17, extra_opsets=()) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def _inspect(path: Path, capsys) -> dict:
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_expanded_ops_are_reported_as_tvm_will_import_them(tmp_path: Path, capsys) -> None:
    scale = numpy_helper.from_array(np.ones((3, 4), np.float32), "s")
    path = _save(tmp_path, [helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=1)], [scale])
    data = _inspect(path, capsys)
    assert data["ops"] == {"LayerNormalization": 1}  # the model as loaded
    front = data["frontend"]
    assert front["ok"] and front["refusal"] == ""
    assert front["changes"] == {"LayerNormalization": {"expanded": 1}}
    assert "LayerNormalization" not in front["ops"] and front["ops"]["ReduceMean"] >= 1
    assert main(["inspect", str(path)]) == 0
    assert "after LayerNormalization expanded x1" in capsys.readouterr().out


def test_the_refusal_is_compiles_own(tmp_path: Path, capsys) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Frob", ["a"], ["y"], domain="my.ops")]
    path = _save(tmp_path, nodes, [], extra_opsets=[helper.make_opsetid("my.ops", 1)])
    with pytest.raises(UnsupportedOpsError) as err:
        compile_model(path, "host", tmp_path / "m.ekpkg")
    front = _inspect(path, capsys)["frontend"]
    assert not front["ok"] and front["refused_ops"] == ["my.ops::Frob"]
    assert front["refusal"] == str(err.value)
    assert main(["inspect", str(path)]) == 0
    assert "compile would refuse this model" in capsys.readouterr().out

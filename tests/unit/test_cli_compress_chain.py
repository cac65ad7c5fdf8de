"""`edgekit compress` chains pruning, recovery and quantization from flags or a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.cli.main import main
from edgekit.examples.digits import example_model_path, load_digits_data
from edgekit.frontend.analysis import analyze
from edgekit.frontend.loader import load_model


@pytest.fixture(scope="module")
def cal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cal") / "cal.npz"
    np.savez(path, input=load_digits_data().x_train[:200])
    return path


def test_prune_recover_quantize_from_flags(cal: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "small.onnx", tmp_path / "r.json"
    argv = ["compress", str(example_model_path()), "-o", str(out), "--prune-structured", "0.4", "--prune-round-to", "4",
            "--recover", "refit", "--calibration", str(cal), "--quantize", "int8", "--report", str(report)]
    assert main(argv) == 0
    doc = json.loads(report.read_text())
    assert [s["step"] for s in doc["steps"]] == ["graph", "quantize"]
    graph = doc["steps"][0]
    assert [s["step"] for s in graph["steps"]][:2] == ["prune-structured", "recover"]
    chain = graph["chain"]
    assert chain["after"]["macs"] < 0.7 * chain["before"]["macs"]
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    before = analyze(load_model(example_model_path())).macs
    after = analyze(load_model(out)).macs
    assert after < 0.7 * before


def test_recipe_file(cal: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[steps]]\ntype = "prune"\nsparsity = 0.5\n\n[[steps]]\ntype = "prune-nm"\npattern = "2:4"\n')
    out = tmp_path / "sparse.onnx"
    assert main(["compress", str(example_model_path()), "-o", str(out), "--recipe", str(recipe),
                 "--calibration", str(cal), "--json"]) == 0
    weights = [onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer if t.dims and len(t.dims) > 1]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert zeros >= 0.45


def test_recipe_and_flags_conflict(cal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[[steps]]\ntype = "prune"\nsparsity = 0.5\n')
    rc = main(["compress", str(example_model_path()), "-o", str(tmp_path / "x.onnx"), "--recipe", str(recipe),
               "--prune-structured", "0.3"])
    assert rc == 2
    assert "--recipe replaces the step flags" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_recover_without_data_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["compress", str(example_model_path()), "-o", str(tmp_path / "x.onnx"), "--prune-structured", "0.3",
               "--recover", "refit"])
    assert rc == 2
    assert "--recover needs data" in capsys.readouterr().err

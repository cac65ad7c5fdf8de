"""compress on a model that is already int8 says to compile it as it is
(the hint named a Python function, edgekit.compress.normalize_qoperator,
although `edgekit compile` normalizes QOperator models itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.cli.main import main
from edgekit.examples.digits import example_inputs_path, example_model_path

pytestmark = pytest.mark.unit


def test_compress_of_an_int8_model_points_to_compile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, int8 = str(example_inputs_path()), str(tmp_path / "int8.onnx")
    assert main(["-q", "compress", str(example_model_path()), "-o", int8, "--quantize", "int8", "--calibration", data]) == 0
    capsys.readouterr()
    assert main(["compress", int8, "-o", str(tmp_path / "again.onnx"), "--quantize", "int8", "--calibration", data]) == 2
    err = capsys.readouterr().err
    assert "already quantized" in err and "`edgekit compile` takes QDQ models" in err and "Traceback" not in err

"""The microcontroller flow through the CLI: compile, flash, run, bench, demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.cli.main import main
from edgekit.examples.digits import example_inputs_path, example_model_path

pytest.importorskip("unicorn")


BOARDS = {"rv32-mcu-sim": 100e6, "stm32h7": 480e6}


@pytest.fixture(scope="module", params=sorted(BOARDS))
def mcu_package(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mcu") / f"digits-{request.param}.ekpkg"
    assert main(["compile", str(example_model_path()), "--board", request.param, "-o", str(out)]) == 0
    return out


def _board_of(package: Path) -> str:
    return package.stem.split("-", 1)[1]


def test_flash_sim_verifies(mcu_package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flash", str(mcu_package), "--sim", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verified"] is True and result["simulated"] is True
    assert result["device"]["device_board"] == _board_of(mcu_package)
    assert result["device"]["arena_bytes"] == result["memory"]["arena_bytes"]


def test_flash_refuses_other_board(mcu_package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    board = _board_of(mcu_package)
    other = next(b for b in BOARDS if b != board)
    assert main(["flash", str(mcu_package), "--board", other, "--sim"]) == 2
    err = capsys.readouterr().err
    assert f"built for board '{board}'" in err and "--allow-other-board" in err


def test_run_on_simulated_mcu_matches_onnxruntime(mcu_package: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.npz"
    assert main(["run", str(mcu_package), "--input", str(example_inputs_path()), "-o", str(out)]) == 0
    got = np.load(out)["logits"]
    x = np.load(example_inputs_path())["input"]
    want = ort.InferenceSession(str(example_model_path())).run(None, {"input": x})[0]
    assert got.shape == want.shape
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 1e-4, rel


def test_bench_cycles_are_deterministic(mcu_package: Path, tmp_path: Path) -> None:
    results = []
    for i in range(2):
        path = tmp_path / f"r{i}.json"
        assert main(["bench", str(mcu_package), "--runs", "3", "--warmup", "1", "--json", str(path)]) == 0
        results.append(json.loads(path.read_text()))
    a, b = results
    assert a["simulated"] is True
    assert a["cycles"]["min"] > 0 and a["cycles"] == b["cycles"]
    assert a["cycles"]["std"] == 0  # same input, same firmware: every run takes the same cycles
    # latency is cycles at the board clock
    clock = BOARDS[_board_of(mcu_package)]
    assert a["latency_ms"]["p50"] == pytest.approx(a["cycles"]["p50"] / clock * 1e3, rel=1e-6)


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    assert main(["demo", "--runs", "3", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "digits_cnn-rv32-mcu-sim.ekpkg").exists()
    assert np.load(tmp_path / "outputs.npz")["logits"].shape == (16, 10)

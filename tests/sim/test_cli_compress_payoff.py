"""``edgekit compress ... --board B``: what each step buys on the board, with
warnings for a step that makes the model slower or bigger (issue 17 item 4).

The simulated RV32 MCU counts cycles deterministically, so the numbers and
warnings asserted here repeat exactly.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekit.cli.main import main
from edgekit.examples.digits import example_model_path

EXAMPLES = Path(example_model_path()).parent
CAL = EXAMPLES / "digits_input.npz"


@pytest.fixture(scope="module")
def add_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model of one elementwise Add: in int8 every element is quantized,
    requantized and dequantized, which costs far more on an MCU with a float
    unit than the float add it replaces."""
    folder = tmp_path_factory.mktemp("add")
    shape = [1, 8, 16, 16]
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"], name="add"), helper.make_node("Relu", ["s"], ["y"], name="relu")],
        "add", [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])  # fmt: skip
    model = folder / "add.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    rng = np.random.default_rng(0)
    cal = folder / "cal.npz"
    np.savez(cal, a=rng.normal(size=(16, *shape[1:])).astype(np.float32),
             b=rng.normal(size=(16, *shape[1:])).astype(np.float32))  # fmt: skip
    return model, cal


def test_board_payoff_step_by_step_on_the_simulated_mcu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", str(EXAMPLES / "digits_cnn.onnx"), "-o", str(tmp_path / "q.onnx"),
                 "--prune-structured", "0.3", "--prune-round-to", "4", "--quantize", "int8", "--calibration", str(CAL),
                 "--board", "rv32-mcu-sim", "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    payoff = doc["payoff"]
    assert payoff["board"] == "rv32-mcu-sim" and payoff["simulated"] is True
    rows = {r["step"]: r for r in payoff["summary"]}
    assert list(rows) == ["fp32", "prune-structured", "quantize", "chain"]
    fp32, pruned, int8 = rows["fp32"], rows["prune-structured"], rows["quantize"]
    for r in rows.values():
        assert not r["error"] and r["cycles"] > 0 and r["arena_bytes"] > 0
        assert r["flash_bytes"] == r["weight_bytes"] + r["code_bytes"]
        # Latency is the cycle count at the board's 100 MHz clock.
        assert r["latency_ms"] == pytest.approx(r["cycles"] / 100e6 * 1e3)
    # Each step against the one before, and against fp32: cycle ratios.
    assert pruned["speedup"] == pytest.approx(fp32["cycles"] / pruned["cycles"]) and pruned["speedup"] > 1.2
    assert int8["speedup"] == pytest.approx(pruned["cycles"] / int8["cycles"]) and int8["speedup"] > 1.2
    assert int8["speedup_vs_fp32"] == pytest.approx(fp32["cycles"] / int8["cycles"])
    assert int8["arena_vs_fp32"] == pytest.approx(int8["arena_bytes"] / fp32["arena_bytes"])
    assert int8["arena_vs_fp32"] < 1.0
    assert int8["flash_vs_fp32"] < 0.5
    assert rows["chain"]["cycles"] == int8["cycles"]
    # Both steps pay off on this board: nothing to warn about.
    assert doc["warnings"] == [] and payoff["warnings"] == []


def test_a_step_that_makes_the_model_slower_and_bigger_is_warned_about(
        add_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, cal = add_model
    argv = ["compress", str(model), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8", "--calibration", str(cal),
            "--board", "rv32-mcu-sim"]  # fmt: skip
    assert main([*argv, "--json", "--report", str(tmp_path / "r.html")]) == 0
    doc = json.loads(capsys.readouterr().out)
    fp32, int8 = doc["payoff"]["summary"]
    assert int8["cycles"] > 2 * fp32["cycles"] and int8["flash_bytes"] > fp32["flash_bytes"]
    slower = [w for w in doc["warnings"] if "slower" in w]
    bigger = [w for w in doc["warnings"] if "weights + code bigger" in w]
    assert len(slower) == 1 and f"{int8['cycles'] / fp32['cycles']:.2f}x" in slower[0]
    assert "quantize" in slower[0] and "rv32-mcu-sim" in slower[0] and len(bigger) == 1
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h2>On rv32-mcu-sim</h2>" in page and "Warning: the quantize step makes the model" in page

    # Without --json the warnings are printed (stderr), beside the table.
    assert main(argv) == 0
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "warning: the quantize step makes the model" in err and "slower on rv32-mcu-sim" in err, err
    assert "step by step against fp32" in captured.out and "slower" in captured.out


def test_no_payoff_keeps_only_the_board_defaults(
        add_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, cal = add_model
    assert main(["compress", str(model), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8", "--calibration",
                 str(cal), "--board", "rv32-mcu-sim", "--no-payoff", "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert "payoff" not in doc and doc["warnings"] == []
    assert doc["steps"][0]["config"]["board"] == "rv32-mcu-sim"


@pytest.mark.parametrize("json_mode", [False, True])
def test_compress_shows_progress_on_a_terminal_only_in_human_mode(
        add_model: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_mode: bool,
        capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from edgekit.cli import progress, render

    terminal = io.StringIO()
    monkeypatch.setattr(render, "err_console", Console(file=terminal, force_terminal=True, width=100))
    monkeypatch.setattr(progress, "SHOW_AFTER_S", 0.0)  # every step counts as long here
    model, cal = add_model
    assert main(["compress", str(model), "-o", str(tmp_path / "q.onnx"), "--prune-unstructured", "0.5",
                 "--quantize", "int8", "--calibration", str(cal), "--board", "rv32-mcu-sim",
                 *(["--json"] if json_mode else [])]) == 0  # fmt: skip
    shown = terminal.getvalue()
    for what in ("compressing", "quantizing", "measuring on rv32-mcu-sim"):
        assert (what in shown) is not json_mode, shown
    capsys.readouterr()


def test_layers_kept_in_float_are_measured_on_the_board(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """#18 item 5: what each layer accuracy control keeps in float costs on
    the board. The digits CNN with conv2's output channel 0 scaled by 1e4
    (and conv3's weights reading it by 1e-4: the same function) loses most
    of its accuracy in int8 until conv3 computes in float."""
    from onnx import numpy_helper

    model = onnx.load(str(EXAMPLES / "digits_cnn.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    for name, index, factor in (("conv2.weight", np.s_[0], 1e4), ("conv2.bias", np.s_[0], 1e4),
                                ("conv3.weight", np.s_[:, 0], 1e-4)):  # fmt: skip
        array = numpy_helper.to_array(inits[name]).copy()
        array[index] *= factor
        inits[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))
    src = tmp_path / "outlier.onnx"
    onnx.save(model, str(src))
    from edgekit.examples import digits

    data = digits.load_digits_data(seed=0)
    np.savez(tmp_path / "cal.npz", input=data.x_train[:150])
    np.savez(tmp_path / "eval.npz", input=data.x_test[:150])
    assert main(["compress", str(src), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8", "--calibration",
                 str(tmp_path / "cal.npz"), "--eval", str(tmp_path / "eval.npz"), "--max-drop", "1",
                 "--board", "rv32-mcu-sim", "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    fallback = doc["steps"][0]["fallback"]
    assert fallback["layers"] == ["conv3"]
    cost = fallback["float_layers"][0]["board"]
    assert cost["board"] == "rv32-mcu-sim" and cost["simulated"] and not cost["error"]
    # Cycle counts are deterministic: the float conv3 costs cycles on an MCU
    # with int8 kernels, and its float32 activation needs more arena.
    assert cost["cycles"] > 0 and cost["speedup_if_int8"] > 1.0
    assert cost["latency_ms"] == pytest.approx(cost["cycles"] / 100e6 * 1e3)
    assert cost["arena_bytes"] >= 0 and cost["flash_bytes"] > 0  # fp32 weights instead of int8
    # The payoff table measures the same final model: its int8 row is the model with conv3 in float.
    int8_row = next(r for r in doc["payoff"]["summary"] if r["step"] == "quantize")
    assert int8_row["cycles"] > 0

"""The CI example (examples/ci/) on two simulated boards: the unchanged model
passes its gate, a model with an extra convolution fails it with a readable
table and a JUnit file a JUnit parser reads."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
CI = REPO / "examples" / "ci"
MODEL = REPO / "edgekit" / "examples" / "digits_cnn.onnx"
SIM_BOARDS = ["rv32-mcu-sim", "stm32h7"]


def _workflow() -> dict:
    return yaml.safe_load((CI / "edgekit-gate.yml").read_text())


def _gate_all(boards: list[str], model: Path, out: Path) -> dict[str, tuple[int, str]]:
    """Runs gate.sh for every board at once (as the CI matrix does); returns (exit code, stdout + stderr)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    procs = {b: subprocess.Popen(["bash", str(CI / "gate.sh"), b, str(model), str(out)], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for b in boards}
    return {b: (p.wait(timeout=300), p.stdout.read()) for b, p in procs.items()}  # type: ignore[union-attr]


def _slower_model(path: Path) -> Path:
    """The example with one more 3x3 convolution (16->16 channels at 8x8): ~38% more MACs."""
    model = onnx.load(str(MODEL))
    g = model.graph
    rng = np.random.default_rng(0)
    g.initializer.extend([
        numpy_helper.from_array((rng.standard_normal((16, 16, 3, 3)) * 0.05).astype(np.float32), "extra.weight"),
        numpy_helper.from_array(np.zeros(16, np.float32), "extra.bias"),
    ])
    idx = next(i for i, n in enumerate(g.node) if n.name == "relu1")
    extra = [helper.make_node("Conv", ["relu1", "extra.weight", "extra.bias"], ["extra"], name="extra_conv",
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["extra"], ["extra_relu"], name="extra_relu")]
    for n in g.node:
        if n.name == "conv2":
            n.input[0] = "extra_relu"
    for k, node in enumerate(extra):
        g.node.insert(idx + 1 + k, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_workflow_runs_the_gate_script_on_three_boards() -> None:
    job = _workflow()["jobs"]["gate"]
    boards = job["strategy"]["matrix"]["board"]
    assert len(boards) == 3 and set(SIM_BOARDS) <= set(boards)
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "examples/ci/gate.sh" in runs
    assert any("junit" in str(step.get("with", {}).get("report_paths", "")) for step in job["steps"])
    for board in SIM_BOARDS:
        assert (CI / "baselines" / f"{board}.json").is_file()


@pytest.mark.slow
def test_gate_passes_then_fails_on_a_slower_model(tmp_path: Path) -> None:
    slow = _slower_model(tmp_path / "slow.onnx")
    # The unchanged model passes on one board (the gate is not always red),
    # the slower one fails on both; the runs go in parallel like the CI matrix.
    oks = _gate_all(SIM_BOARDS[:1], MODEL, tmp_path / "ok")
    bads = _gate_all(SIM_BOARDS, slow, tmp_path / "bad")
    code, text = oks[SIM_BOARDS[0]]
    assert code == 0, text
    assert "gate passed" in text
    passed = ET.parse(tmp_path / "ok" / f"{SIM_BOARDS[0]}.junit.xml").getroot()
    assert passed.get("failures") == "0" and passed.get("tests") == "3"
    for board in SIM_BOARDS:
        code, text = bads[board]
        assert code == 1, text
        table = text[text.index("gate against baseline"):]
        latency_row = next(line for line in table.splitlines() if line.startswith("latency"))
        assert "REGRESSED" in latency_row and "cycles p50" in latency_row and "+5%" in latency_row
        change = float(latency_row.split("%")[0].split()[-1])
        assert change > 20.0  # the extra convolution costs far more than the 5% allowed
        assert "gate REGRESSED: latency" in table

        root = ET.parse(tmp_path / "bad" / f"{board}.junit.xml").getroot()
        assert root.tag == "testsuites" and int(root.get("failures")) >= 1
        cases = {c.get("name").split()[0]: c for c in root.iter("testcase")}
        assert set(cases) == {"latency", "size", "arena"}
        failure = cases["latency"].find("failure")
        assert failure is not None and board in failure.get("message") and "REGRESSED" in failure.text
        assert cases["arena"].find("failure") is None

        assert "<svg" in (tmp_path / "bad" / f"{board}.html").read_text()
        assert "REGRESSED" in (tmp_path / "bad" / f"{board}.md").read_text()

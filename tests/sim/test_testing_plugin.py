"""The edgekit.testing pytest plugin runs a user's test on a simulated board."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]

USER_TEST = '''
import numpy as np
import onnxruntime as ort
import pytest

MODEL = {model!r}
X = np.load({data!r})["input"][:1]


def test_digits_on_board(edgekit_board):
    result = edgekit_board.run(MODEL, {{"input": X}})
    ref = ort.InferenceSession(MODEL).run(None, {{"input": X}})[0]
    np.testing.assert_allclose(result.outputs["logits"], ref, rtol=1e-4, atol=1e-4)
    assert result.simulated and 1_000_000 < result.cycles < 5_000_000
    again = edgekit_board.run(MODEL, {{"input": X}})  # cached package, deterministic simulator
    assert again.cycles == result.cycles and again.package == result.package


def test_cycle_budget_fails(edgekit_board):
    assert edgekit_board.run(MODEL, {{"input": X}}).cycles < 1000, "over the cycle budget"


@pytest.mark.edgekit_boards("rv32-mcu-sim", "stm32h7")
def test_marker_parametrizes(edgekit_board):
    assert edgekit_board.name in ("rv32-mcu-sim", "stm32h7")
'''


@pytest.mark.slow
def test_user_test_runs_on_simulated_board(pytester: pytest.Pytester) -> None:
    examples = REPO / "edgekit" / "examples"
    pytester.makepyfile(test_user=USER_TEST.format(model=str(examples / "digits_cnn.onnx"),
                                                   data=str(examples / "digits_input.npz")))
    # A subprocess: an in-process run would unload TVM afterwards, and TVM cannot be imported twice.
    result = pytester.runpytest_subprocess("-p", "edgekit.testing", "--edgekit-boards", "rv32-mcu-sim", "-v")
    result.stdout.fnmatch_lines([
        "*test_digits_on_board?rv32-mcu-sim? PASSED*",
        "*test_cycle_budget_fails?rv32-mcu-sim? FAILED*",
        "*test_marker_parametrizes?rv32-mcu-sim? PASSED*",
        "*test_marker_parametrizes?stm32h7? PASSED*",
    ])
    result.stdout.fnmatch_lines(["*over the cycle budget*"])
    result.assert_outcomes(passed=3, failed=1)

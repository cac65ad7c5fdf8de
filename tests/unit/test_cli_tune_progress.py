"""`edgekit tune` in a pipe prints no progress bar on stdout (its last frame,
"tuning (searching) 0/? trials", came before the results there)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgekit.cli import cmd_tune
from edgekit.cli.main import main

pytestmark = pytest.mark.unit


def test_tune_in_a_pipe_prints_results_only(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fake_tune(model, trials, *, progress, **kw):  # noqa: ANN001, ANN003, ANN202
        progress(SimpleNamespace(trials_done=1, trials_total=2, task="conv", task_index=0, num_tasks=1, eta_s=3.0))
        return SimpleNamespace(to_json=lambda: {}, trials_measured=2, seconds=1.0, trials_reused=0,
                               database_dir="db", measured_on={"where": "local"}, tasks=[])  # fmt: skip

    monkeypatch.setattr(cmd_tune, "tune_model", fake_tune)
    assert main(["tune", "m.onnx", "--board", "host", "--trials", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("measured 2 trials") and "tuning" not in out and "tuning" not in err

"""Payoff decides port-or-simulator with runtime.connection.connect, once per board.

The compile step is replaced (the packages' sizes are given), so nothing is
built: what is checked is which boards are run, simulated or reported as not
runnable.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.api import payoff
from edgekit.compress.payoff import PackageMeasurement, PayoffPlan
from edgekit.core.profiles import load_profiles
from edgekit.core.resources import data_dir


def _board_without_simulator(tmp_path: Path) -> Path:
    """rv32-mcu-sim under another name, with no port and no simulator."""
    text = (data_dir("board_configs") / "rv32-mcu-sim.toml").read_text(encoding="utf-8")
    head, _, _ = text.partition("[simulator]")
    folder = tmp_path / "boards"
    folder.mkdir()
    (folder / "nosim-mcu.toml").write_text(
        head.replace('name = "rv32-mcu-sim"', 'name = "nosim-mcu"') + '[simulator]\nkind = "none"\n', encoding="utf-8"
    )
    return folder


class _Ticks:
    total = 0

    def __call__(self, what: str, detail: str = "") -> None:
        pass


def _measure(monkeypatch, board, board_dirs, tmp_path) -> tuple[dict[str, PackageMeasurement], list]:
    sims: list = []
    monkeypatch.setattr(payoff, "_compile", lambda k, m, brd, folder, dirs: PackageMeasurement(key=k, stats={}))

    def bench(keys, paths, measured, name, dirs, tick, sim=None):
        sims.append(sim)
        for k in keys:
            measured[k].simulated = bool(sim)

    monkeypatch.setattr(payoff, "_bench", bench)
    monkeypatch.setattr(payoff, "_interleave", lambda keys, *args: sims.append(("interleaved", len(keys))))
    plan = PayoffPlan(models={"a" * 64: None, "b" * 64: None}, fp32_key="a" * 64, rows=[])
    tick = _Ticks()
    tick.total = 10
    return payoff._measure(plan, board, tmp_path, board_dirs, tick, rounds=3, runs=1), sims


def test_a_board_without_port_or_simulator_keeps_sizes_and_says_why(tmp_path, monkeypatch):
    boards = _board_without_simulator(tmp_path)
    board = load_profiles([boards]).board("nosim-mcu")
    measured, sims = _measure(monkeypatch, board, [boards], tmp_path)
    assert sims == [None]  # _bench ran on no package
    for m in measured.values():
        assert not m.error and m.bench_error.startswith("not run: no serial port for board 'nosim-mcu'")
        assert "no simulator" in m.bench_error


def test_a_board_without_port_is_measured_on_its_simulator(tmp_path, monkeypatch, caplog):
    board = load_profiles().board("rv32-mcu-sim")
    measured, sims = _measure(monkeypatch, board, [], tmp_path)
    assert sims == [True] and all(m.simulated and not m.bench_error for m in measured.values())
    assert sum("using its unicorn simulator" in r.getMessage() for r in caplog.records) == 1  # one notice


def test_a_board_that_is_this_machine_is_timed_not_simulated(tmp_path, monkeypatch):
    measured, sims = _measure(monkeypatch, load_profiles().board("host"), [], tmp_path)
    assert sims == [None, ("interleaved", 2)]

"""Tables keep every cell whole in a pipe or a log, where rich assumes 80
columns (``edgekit boards`` printed ``raspberr…``, bench ``0.005…``)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from edgekit.cli import cmd_bench, cmd_boards, render, render_compress
from edgekit.cli.main import main
from edgekit.core.profiles import list_boards
from edgekit.runtime.stats import STAT_KEYS

pytestmark = pytest.mark.unit


def _console(width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, color_system=None), out


def test_boards_in_a_pipe_names_every_board_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    con, out = _console(80)  # what rich assumes in a pipe
    monkeypatch.setattr(cmd_boards, "console", con)
    assert main(["boards"]) == 0
    text = out.getvalue()
    assert "…" not in text
    for board in list_boards():
        assert board.name in text and board.target in text


def test_print_whole_keeps_a_narrow_table_at_the_console_width() -> None:
    from rich.table import Table

    table = Table("a", "b")
    table.add_row("1", "2")
    con, out = _console(80)
    render.print_whole(table, con)
    assert max(len(line) for line in out.getvalue().splitlines()) <= 80


def _report(p50_ms: float, ort_p50_ms: float) -> dict:
    stats = lambda p50: {k: p50 * (1.0 + 0.1 * i) for i, k in enumerate(STAT_KEYS)}  # noqa: E731
    return {"model": "digits.int8", "board": "host", "simulated": False, "runs": 50, "warmup": 5, "threads": 2,
            "inputs": "random", "latency_ms": stats(p50_ms), "throughput_per_s": 1000.0 / p50_ms,
            "ort_latency_ms": stats(ort_p50_ms), "ort_throughput_per_s": 1000.0 / ort_p50_ms,
            "ratio_vs_ort": p50_ms / ort_p50_ms, "ort_max_rel_error": {"max": 0.0}, "outputs_agree": True}


@pytest.mark.parametrize(("p50", "unit", "cell"), [(0.00533, "µs", "5.33"), (3.05, "ms", "3.05")])
def test_bench_table_fits_80_columns(monkeypatch: pytest.MonkeyPatch, p50: float, unit: str, cell: str) -> None:
    con, out = _console(80)
    monkeypatch.setattr(cmd_bench, "console", con)
    cmd_bench._render(_report(p50, 0.0124))
    text = out.getvalue()
    assert "…" not in text, text
    assert f"latency in {unit}" in text and cell in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_bench_rate_uses_thousands() -> None:
    assert cmd_bench._rate(186573.0) == "187k" and cmd_bench._rate(215.4) == "215"


def test_payoff_failed_step_keeps_the_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    error = ("CompileError: TVM failed to build the model for llvm (InternalError: Check failed: "
             "indices.size() <= static_cast<size_t>(total_lanes) (64 vs. 16) : )")
    row = dict(error="", flash_bytes=1_390_000, arena_bytes=1_200_000, cycles=None, latency_ms=0.298,
               speedup_vs_fp32=1.0, arena_vs_fp32=1.0, flash_vs_fp32=1.0)
    rows = [dict(row, step="fp32"),
            dict(row, step="prune-structured", latency_ms=0.225, speedup_vs_fp32=1.33, arena_vs_fp32=0.68),
            dict(row, step="quantize", error=error, flash_bytes=None, arena_bytes=None, latency_ms=None),
            dict(row, step="chain", error="not run: no simulator", latency_ms=None, speedup_vs_fp32=None)]
    report = SimpleNamespace(board="host", simulated=False, timing="wall clock", summary=lambda: rows)
    con, out = _console(80)
    monkeypatch.setattr(render_compress, "console", con)
    render_compress._render_payoff(report)  # type: ignore[arg-type]
    text = out.getvalue()
    table, notes = text.split("(1) quantize:")
    assert "…" not in table and "prune-structured" in table and "1.33x faster" in table
    assert "failed (1)" in table and "not run (2)" in table and "1.1 MiB" in table
    assert "total_lanes" in notes.replace("\n", "") and "(2) all steps: not run: no simulator" in notes



@pytest.mark.parametrize(("cycles", "whose"), [(None, "the emulator's"), (37929.0, "the simulated board's")])
def test_simulated_bench_says_whose_latency(monkeypatch: pytest.MonkeyPatch, cycles: float | None, whose: str) -> None:
    report = dict(_report(3.05, 0.0117), simulated=True)
    if cycles is not None:
        report["cycles"] = {k: cycles for k in STAT_KEYS}
    con, out = _console(200)
    monkeypatch.setattr(cmd_bench, "console", con)
    cmd_bench._render(report)
    assert f"latencies are {whose} and this host's" in out.getvalue()

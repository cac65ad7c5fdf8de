"""Markdown summaries for CI logs (e.g. ``$GITHUB_STEP_SUMMARY``) and the gate table.

:func:`gate_rows` is the one place the regression table's cells are
formatted; the terminal, Markdown, HTML and JUnit renderings all use it so
they say the same thing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from edgekit.report.gates import Check, GateResult
from edgekit.report.variants import accuracy_label, variants_of

__all__ = [
    "GATE_HEADER",
    "bench_markdown",
    "compress_markdown",
    "format_bytes",
    "format_value",
    "gate_rows",
    "gate_text_table",
]

logger = logging.getLogger(__name__)

#: Column titles of the regression table.
GATE_HEADER = ("metric", "compared", "baseline", "current", "change", "limit", "rule", "status")

_STATUS = {"fail": "REGRESSED", "pass": "ok", "improved": "improved", "skipped": "skipped"}


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def format_value(value: float | None, unit: str) -> str:
    """A gated value for a table: bytes with units, cycles as integers, ms with 4 digits."""
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value:,.0f} B"
    if unit == "cycles":
        return f"{value:,.0f}"
    return f"{value:.4g} {unit}"


def _row(c: Check) -> list[str]:
    change = "-" if c.change is None else f"{c.change * 100:+.2f}%"
    limit = f"+{c.limit * 100:g}%"
    if c.allowance:
        limit += f" + {format_value(c.allowance, c.unit)} noise"
    status = _STATUS.get(c.status, c.status)
    if c.rule == "noise-aware":
        status += " (confidence unknown)" if c.confidence is None else f" ({c.confidence:.1%} confident slower)"
    return [c.metric, c.quantity, format_value(c.baseline, c.unit), format_value(c.current, c.unit), change, limit,
            c.rule, status]


def gate_rows(result: GateResult) -> list[list[str]]:
    """One row of strings per check, in :data:`GATE_HEADER` order."""
    return [_row(c) for c in result.checks]


def gate_text_table(result: GateResult) -> str:
    """The regression table as aligned plain text (logs, JUnit bodies)."""
    rows = [list(GATE_HEADER), *gate_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(GATE_HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def _stats_row(label: str, stats: Mapping[str, float], fmt: str) -> list[str]:
    return [label, *(format(stats[k], fmt) for k in ("min", "p50", "p90", "p99", "mean", "std"))]


def bench_markdown(report: Mapping[str, Any], gate: GateResult | None = None,
                   board_memory: Mapping[str, int] | None = None) -> str:
    """A Markdown summary of one bench report and, if given, its gate.

    Args:
        report: The ``bench --json`` object.
        gate: The gate result, when the run was gated.
        board_memory: ``ram_bytes`` / ``flash_bytes`` of the board, to show use
            as a share of it.
    """
    sim = " (simulated)" if report.get("simulated") else ""
    lines = [f"### {report.get('model', 'model')} on {report.get('board', '?')}{sim}", ""]
    if gate is not None:
        verdict = "**passed**" if gate.passed else f"**REGRESSED** ({', '.join(c.metric for c in gate.failed)})"
        lines += [f"Gate against baseline: {verdict}", ""]
        lines += _md_table(GATE_HEADER, gate_rows(gate))
        lines += [f"> {n}" for n in gate.notes]
        lines.append("")
    header = ("", "min", "p50", "p90", "p99", "mean", "std")
    rows = [_stats_row("latency (ms)", report["latency_ms"], ".4g")]
    for key in ("cycles", "instructions"):
        if key in report:
            rows.append(_stats_row(key, report[key], ",.0f"))
    if "ort_latency_ms" in report:
        rows.append(_stats_row("onnxruntime (ms)", report["ort_latency_ms"], ".4g"))
    lines += [f"{report.get('runs', '?')} timed runs after {report.get('warmup', '?')} warm-up.", ""]
    lines += _md_table(header, rows)
    mem = report.get("memory") or {}
    if mem:
        board_memory = board_memory or {}
        ram, flash = board_memory.get("ram_bytes", 0), board_memory.get("flash_bytes", 0)
        used_flash = mem.get("weight_bytes", 0) + mem.get("code_bytes", 0)
        used_ram = mem.get("arena_bytes", 0) + mem.get("workspace_bytes", 0)
        mrows = [["RAM (arena + workspace)", format_bytes(used_ram), format_bytes(ram) if ram else "-",
                  f"{used_ram / ram * 100:.1f}%" if ram else "-"],
                 ["flash (weights + code)", format_bytes(used_flash), format_bytes(flash) if flash else "-",
                  f"{used_flash / flash * 100:.1f}%" if flash else "-"]]
        lines += ["", *_md_table(("memory", "used", "board has", "share"), mrows)]
    return "\n".join(lines) + "\n"


def compress_markdown(document: Mapping[str, Any]) -> str:
    """A Markdown summary of a ``compress --report`` document: one row per variant."""
    lines = [f"### compression of {document.get('model', 'model')}", ""]
    rows = [[v.name, format_bytes(v.weight_bytes) if v.weight_bytes is not None else "-",
             "-" if v.accuracy is None else f"{v.accuracy:.2f}%",
             "-" if v.sqnr_db is None else f"{v.sqnr_db:.1f}",
             "-" if v.latency_ms is None else f"{v.latency_ms:.4g}"] for v in variants_of(document)]
    lines += _md_table(("variant", "weights", accuracy_label(document), "SQNR dB", "latency ms"), rows)
    if document.get("output") is None:
        lines += ["", "**The compressed model was not written: a quality budget was not met.**"]
    return "\n".join(lines) + "\n"


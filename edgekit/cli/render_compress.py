"""Tables of ``edgekit compress``: the graph passes, the int8 quality
report, the layers kept in float and what each step bought on the board."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.table import Table

from edgekit.api.compress import CompressResult
from edgekit.cli.render import console, format_bytes, print_whole
from edgekit.compress.payoff import PayoffReport
from edgekit.compress.quality import QualityReport

__all__ = ["render_result"]

#: Layers shown in the per-layer table (the worst by SQNR) before "... N more".
_MAX_LAYERS_SHOWN = 15


def render_result(result: CompressResult) -> None:
    """Every step's tables, in order, then the board payoff."""
    for step in result.steps:
        if step.name == "normalize_qoperator":
            console.print("normalized to QDQ: " + ", ".join(f"{c} {op}" for op, c in sorted(step.detail.items())))
        elif step.name == "quantize":
            _render_quant(step.detail)
        else:
            _render_graph(step.section)
    if result.payoff is not None:
        _render_payoff(result.payoff)


def _db(x: float) -> str:
    return "identical" if math.isinf(x) and x > 0 else f"{x:.1f}"


def _render_graph(section: dict[str, Any]) -> None:
    tbl = Table(title="compression steps")
    for col in ("step", "params", "MACs", "weight bytes", "fidelity vs original"):
        tbl.add_column(col, justify="left" if col == "step" else "right")
    for step in section.get("steps", []):
        before, after = step.get("before", {}), step.get("after", {})
        fid = step.get("fidelity") or {}
        parts = []
        if fid.get("sqnr_db") is not None:
            parts.append(f"SQNR {fid['sqnr_db']:.1f} dB")
        if fid.get("top1_agreement") is not None:
            parts.append(f"top-1 {fid['top1_agreement']:.1f}%")
        fid_text = ", ".join(parts) or "-"
        tbl.add_row(
            str(step.get("step")),
            f"{before.get('params', 0):,} -> {after.get('params', 0):,}",
            f"{before.get('macs', 0):,} -> {after.get('macs', 0):,}",
            f"{before.get('weight_bytes', 0):,} -> {after.get('weight_bytes', 0):,}",
            fid_text,
        )
    print_whole(tbl, console)


def _render_quant(report: QualityReport) -> None:
    out = Table(title=f"int8 vs fp32 on {report.eval_samples} samples ({report.eval_source})")
    for col in ("output", "SQNR dB", "cosine", "max abs err", "top-1 agreement"):
        out.add_column(col, justify="left" if col == "output" else "right")
    for o in report.outputs:
        agree = "-" if o.top1_agreement is None else f"{o.top1_agreement:.2f}%"
        out.add_row(o.name, _db(o.sqnr_db), f"{o.cosine:.5f}", f"{o.max_abs_error:.4g}", agree)
    print_whole(out, console)
    if report.metric_fp32 is not None:
        console.print(f"metric: fp32 {report.metric_fp32:.4f}, int8 {report.metric_quantized:.4f}")

    layers = sorted(report.layers, key=lambda layer: layer.sqnr_db)[:_MAX_LAYERS_SHOWN]
    if layers:
        shown = {id(layer) for layer in layers}
        worst = f"the {len(layers)} worst, " if len(layers) < len(report.layers) else ""
        tbl = Table(title=f"per-layer error ({worst}in graph order)")
        for col in ("node", "op", "int8", "SQNR dB", "cosine", "max abs err"):
            tbl.add_column(col, justify="left" if col in ("node", "op") else "right")
        for layer in [la for la in report.layers if id(la) in shown]:
            tbl.add_row(layer.node, layer.op_type, "yes" if layer.quantized else "float", _db(layer.sqnr_db),
                        f"{layer.cosine:.5f}", f"{layer.max_abs_error:.4g}")
        print_whole(tbl, console)
        if len(report.layers) > len(layers):
            console.print(f"... and {len(report.layers) - len(layers)} more layers (see --report)")
    if report.config.get("weight_bits_reason"):
        console.print(f"weights: {report.config['weight_bits']}-bit ({report.config['weight_bits_reason']})")
    console.print(
        f"weight bytes: {report.weight_bytes_before:,} -> {report.weight_bytes_after:,} "
        f"({report.compression_ratio:.2f}x smaller)"
    )
    fb = report.fallback
    if fb is not None:
        if fb.float_layers:
            measured = next((f.board for f in fb.float_layers if f.board), None)
            where = f"; cost on {measured['board']}" if measured else ""
            tbl = Table(title=f"layers kept in float ({fb.evaluations} evaluations, {fb.seconds:.0f} s{where}); "
                        "SQNR: dB of the layer quantized alone; buys: points it buys back",
                        box=box.SIMPLE_HEAD, padding=(0, 1))
            board_cols = [("+cycles" if measured["simulated"] else "+latency"), "+arena B"] if measured else []
            for col in ("node", "op", "SQNR", "MACs", "+wt B", "+act B", *board_cols, "buys"):
                if col == "node":
                    tbl.add_column(col, min_width=8, overflow="fold")
                else:
                    tbl.add_column(col, justify="left" if col == "op" else "right", no_wrap=True)
            for f in fb.float_layers:
                sens = "-" if f.sensitivity_sqnr_db is None else _db(f.sensitivity_sqnr_db)
                buys = "not measured" if f.buys_back is None else f"{f.buys_back:.2f}"
                board = [_board_cost(f.board), "-" if not f.board or f.board["arena_bytes"] is None
                         else f"{f.board['arena_bytes']:+,.0f}"] if measured else []  # fmt: skip
                tbl.add_row(f.node, f.op_type, sens, f"{f.macs:,}", f"{f.extra_weight_bytes:,}",
                            f"{f.extra_activation_bytes:,}", *board, buys)
            print_whole(tbl, console)
        console.print(f"accuracy control: {fb.message}")


def _render_payoff(report: PayoffReport) -> None:
    tbl = Table(title=f"on {report.board}, step by step against fp32", box=box.SIMPLE_HEAD)
    rows = report.summary()
    cycles = any(row["cycles"] is not None for row in rows)
    for col in ("step", "cycles" if cycles else "latency", "vs fp32", "arena", "weights+code"):
        tbl.add_column(col, justify="left" if col == "step" else "right", no_wrap=col != "step", overflow="fold")
    # Why a step has no numbers goes under the table, numbered: a compiler's
    # error in a cell took the table's whole width and cut every other column.
    notes: list[str] = []
    for row in rows:
        name = "all steps" if row["step"] == "chain" else row["step"]
        if row["error"]:
            notes.append(f"({len(notes) + 1}) {name}: {row['error']}")
        if row["error"] and row["flash_bytes"] is None:
            tbl.add_row(name, f"failed ({len(notes)})", "", "", "")
            continue
        if row["error"]:  # compiled, but could not run here
            lat = f"not run ({len(notes)})"
        elif row["cycles"] is not None:
            lat = f"{row['cycles'] / 1e6:.3g} M" if row["cycles"] >= 1e6 else f"{row['cycles'] / 1e3:.3g} k"
        else:
            lat = "-" if row["latency_ms"] is None else f"{row['latency_ms']:.3g} ms"
        speedup = row["speedup_vs_fp32"]
        if speedup is None or row["step"] == "fp32":
            vs = "-"
        elif abs(speedup - 1.0) < 0.005:
            vs = "same"
        else:
            vs = f"{speedup:.2f}x faster" if speedup > 1.0 else f"{1 / speedup:.2f}x slower"
        tbl.add_row(name, lat, vs, _sized(row["arena_bytes"], row["arena_vs_fp32"]),
                    _sized(row["flash_bytes"], row["flash_vs_fp32"]))
    print_whole(tbl, console)
    for note in notes:
        console.print(note, highlight=False, markup=False)
    console.print(report.timing, highlight=False)


def _sized(n: int | None, ratio: float | None) -> str:
    if n is None:
        return "-"
    text = format_bytes(n)
    return text if ratio is None or abs(ratio - 1.0) < 0.005 else f"{text} {100 * (ratio - 1):+.0f}%"


def _board_cost(cost: dict[str, Any] | None) -> str:
    """A float layer's latency cost on the board: ``+994 k`` (cycles), ``+0.05 ms``."""
    if not cost or cost.get("error"):
        return "-" if not cost else str(cost["error"])[:40]
    if cost.get("cycles") is not None:
        return f"{cost['cycles'] / 1e3:+,.0f} k"
    return "-" if cost.get("latency_ms") is None else f"{cost['latency_ms']:+.3g} ms"

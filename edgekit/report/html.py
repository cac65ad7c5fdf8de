"""Self-contained HTML reports: plots are inline SVG drawn with matplotlib, no
scripts, no CDN, no external file -- the report opens offline and can be
attached to a CI run as one artifact.

Every plot sits in ``<figure class="plot" id="plot-...">`` so tests and users
can find it: ``plot-latency``, ``plot-layers``, ``plot-memory`` in bench
reports; ``plot-variants``, ``plot-layer-sqnr`` in compression reports.
"""

from __future__ import annotations

import datetime as _dt
import html
import io
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekit.report.gates import GateResult
from edgekit.report.markdown import GATE_HEADER, format_bytes, gate_rows
from edgekit.report.variants import accuracy_label, variants_of

__all__ = ["bench_html", "compress_html", "layer_times", "write_html"]

logger = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:60rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}tr.fail td{background:#fde2e2;font-weight:600}
tr.improved td{background:#e2f5e2}.verdict-fail{color:#b00020}.verdict-pass{color:#1b7f2a}
figure.plot{margin:1rem 0}figure.plot svg{max-width:100%;height:auto}.note{color:#666;font-size:.9rem}
"""

_BLUE, _ORANGE, _GREY, _RED = "#3b6ea8", "#e08a2c", "#bbbbbb", "#c0392b"


# --------------------------------------------------------------------------- #
# Plot helpers
# --------------------------------------------------------------------------- #


#: A board capacity up to this many times the largest use is drawn to scale
#: in the memory chart; a larger one is written next to the bar.
_DRAWN_CAPACITY = 8

def _figure(width: float = 7.0, height: float = 3.0) -> Any:
    # Figure objects, not pyplot: no global state, safe inside a user's process.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    # Text as text (small, selectable) and stable element ids (reproducible files).
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "edgekit"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _plot(plot_id: str, caption: str, fig: Any) -> str:
    return (f'<figure class="plot" id="plot-{plot_id}">{_svg(fig)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _page(title: str, sections: Sequence[str]) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from edgekit import __version__

    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>" + "".join(sections)
        + f'<p class="note">edgekit {html.escape(__version__)}, {stamp}</p></body></html>\n'
    )


# --------------------------------------------------------------------------- #
# Bench report
# --------------------------------------------------------------------------- #


def _latency_section(report: Mapping[str, Any]) -> str:
    stats = report["latency_ms"]
    samples = (report.get("samples") or {}).get("latency_ms")
    fig = _figure()
    ax = fig.add_subplot()
    if samples:
        ax.hist(samples, bins=min(40, max(5, len(samples) // 3)), color=_BLUE)
        ax.set_ylabel("runs")
        caption = f"Histogram of {len(samples)} timed runs with the percentiles marked."
    else:
        # Only summary statistics in the JSON: show them as a ladder instead of inventing a distribution.
        keys = ["min", "p50", "p90", "p99", "mean"]
        ax.barh(keys[::-1], [stats[k] for k in keys[::-1]], color=_BLUE)
        caption = ("Latency statistics over the timed runs (this bench JSON holds no per-run samples, "
                   "so no histogram is drawn).")
    for key, color in (("p50", _ORANGE), ("p90", _RED), ("p99", "#7d3c98")):
        ax.axvline(stats[key], color=color, linestyle="--", linewidth=1, label=f"{key} {stats[key]:.4g} ms")
    ax.set_xlabel("latency (ms)" + (" — simulated" if report.get("simulated") else ""))
    ax.legend(loc="best", fontsize=8)
    rows = [["latency (ms)", *(f"{stats[k]:.4g}" for k in ("min", "p50", "p90", "p99", "mean", "std"))]]
    for key in ("cycles", "instructions"):
        if key in report:
            rows.append([key, *(f"{report[key][k]:,.0f}" for k in ("min", "p50", "p90", "p99", "mean", "std"))])
    if "ort_latency_ms" in report:
        o = report["ort_latency_ms"]
        rows.append(["onnxruntime (ms)", *(f"{o[k]:.4g}" for k in ("min", "p50", "p90", "p99", "mean", "std"))])
    extra = ""
    if report.get("simulated") and "cycles" not in report:
        extra += ("<p>Latency on this board's emulator is the emulator's wall clock on this host, "
                  "not the board's latency.</p>")
    if "ratio_vs_ort" in report and report.get("simulated"):
        # The board is simulated and onnxruntime ran on this host: a ratio of
        # the two would compare two machines, not two runtimes.
        extra += ("<p>onnxruntime ran on this host, the model on a simulated board: the two latencies "
                  "are not a like-for-like ratio (the comparison checks that the outputs agree).</p>")
    elif "ratio_vs_ort" in report:
        extra += f'<p>p50 ratio edgekit / onnxruntime: {report["ratio_vs_ort"]:.2f}x</p>'
    return ("<h2>Latency</h2>" + _plot("latency", caption, fig)
            + _table(("", "min", "p50", "p90", "p99", "mean", "std"), rows) + extra)


def layer_times(report: Mapping[str, Any]) -> tuple[list[str], list[float], list[str], str]:
    """Per-layer time of a bench report, where the runner measured one.

    Reads ``npu.layers`` (accelerator layers: predicted ms from cycles; host
    layers: measured ms) or a top-level ``layers`` list of ``{name,
    latency_ms | cycles}`` for runners that profile per layer.

    Returns:
        Names, values, where each ran (``npu``/``host``/``""``), and the unit.
    """
    layers = (report.get("npu") or {}).get("layers") or report.get("layers") or []
    names, values, where = [], [], []
    unit = "ms"
    if layers and all("latency_ms" not in la and "host_ms" not in la and "cycles" in la for la in layers):
        unit = "cycles"
    for la in layers:
        if unit == "cycles":
            value = float(la["cycles"])
        else:
            value = float(la.get("latency_ms") or 0.0) + float(la.get("host_ms") or 0.0)
        names.append(str(la.get("name", "?")))
        values.append(value)
        where.append(str(la.get("where", "")))
    return names, values, where, unit


def _layers_section(report: Mapping[str, Any]) -> str:
    names, values, where, unit = layer_times(report)
    if not names:
        return ("<h2>Per-layer time</h2><p class=\"note\">This runner does not measure per-layer time "
                "(NPU boards do; MCU and host runs report the whole model).</p>")
    fig = _figure(7.0, max(2.0, 0.28 * len(names) + 1.0))
    ax = fig.add_subplot()
    colors = [_ORANGE if w == "host" else _BLUE for w in where]
    ax.barh(names[::-1], values[::-1], color=colors[::-1])
    ax.set_xlabel(unit)
    ax.tick_params(axis="y", labelsize=7)
    total = sum(values) or 1.0
    rows = [[n, w or "-", f"{v:.4g}", f"{v / total * 100:.1f}%"] for n, v, w in zip(names, values, where)]
    caption = "Time per layer (blue: accelerator, predicted from cycles; orange: host, measured)." \
        if any(where) else "Time per layer."
    npu = report.get("npu") or {}
    extra = ""
    if "utilization" in npu:
        extra = (f"<p>NPU MAC utilization {npu['utilization'] * 100:.1f}%, offloaded MACs "
                 f"{npu.get('offloaded_macs_fraction', 0) * 100:.1f}%</p>")
    return ("<h2>Per-layer time</h2>" + _plot("layers", caption, fig) + extra
            + _table(("layer", "where", unit, "share"), rows))


def _memory_section(report: Mapping[str, Any], board_memory: Mapping[str, int] | None) -> str:
    mem = report.get("memory") or {}
    if not mem:
        return ""
    board_memory = board_memory or {}
    parts = {
        "RAM": ([("arena", mem.get("arena_bytes", 0)), ("workspace", mem.get("workspace_bytes", 0))],
                board_memory.get("ram_bytes", 0)),
        "flash": ([("weights", mem.get("weight_bytes", 0)), ("code", mem.get("code_bytes", 0))],
                  board_memory.get("flash_bytes", 0)),
    }
    fig = _figure(7.0, 2.2)
    ax = fig.add_subplot()
    rows = []
    used = {label: sum(size for _, size in pieces) for label, (pieces, _) in parts.items()}
    # A capacity far beyond what is used (456 KiB of 4 GiB) would squeeze the
    # bars to nothing: the axis then ends near the largest use, and such a
    # capacity is written next to its bar instead of drawn.
    span = max(used.values()) or 1
    drawn = {label: cap for label, (_, cap) in parts.items() if cap and cap <= _DRAWN_CAPACITY * span}
    xmax = max([span, *drawn.values()]) * 1.25
    for y, (label, (pieces, capacity)) in enumerate(parts.items()):
        left = 0.0
        colors = (_BLUE, "#7d3c98") if label == "RAM" else ("#2e8b57", _ORANGE)
        for (name, size), color in zip(pieces, colors):
            ax.barh(y, size / 1024, left=left / 1024, color=color, label=name if size else None)
            left += size
        if label in drawn:
            ax.barh(y, capacity / 1024, fill=False, edgecolor=_GREY, linestyle="--")
        elif capacity:
            ax.text(left / 1024 + xmax / 1024 * 0.01, y, f"of {format_bytes(capacity)} ({left / capacity:.2%})",
                    va="center", fontsize=8, color=_GREY)
        rows.append([label, format_bytes(left), format_bytes(capacity) if capacity else "-",
                     f"{left / capacity * 100:.1f}%" if capacity else "-"])
    ax.set_xlim(0, xmax / 1024)
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.set_yticks(range(len(parts)), list(parts))
    ax.set_xlabel("KiB (dashed box: the board's capacity, where it fits the scale)")
    ax.legend(loc="lower right", fontsize=8)
    caption = "Memory the package needs against the board's RAM and flash."
    return "<h2>Memory</h2>" + _plot("memory", caption, fig) + _table(("memory", "used", "board has", "share"), rows)


def _gate_section(gate: GateResult | None) -> str:
    if gate is None:
        return ""
    verdict = ('<p class="verdict-pass">Gate passed.</p>' if gate.passed else
               f'<p class="verdict-fail">Regressed: {html.escape(", ".join(c.metric for c in gate.failed))}</p>')
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in gate.notes)
    return ("<h2>Regression gate</h2>" + verdict
            + _table(GATE_HEADER, gate_rows(gate), [c.status for c in gate.checks]) + notes)


def bench_html(report: Mapping[str, Any], *, gate: GateResult | None = None,
               board_memory: Mapping[str, int] | None = None) -> str:
    """The HTML report of one ``bench --json`` object.

    Args:
        report: The bench report.
        gate: Its gate result, if the run was gated.
        board_memory: ``ram_bytes`` and ``flash_bytes`` of the board (see
            :meth:`edgekit.core.profiles.Board.to_json`), to draw capacity.
    """
    sim = " (simulated)" if report.get("simulated") else ""
    title = f"{report.get('model') or 'model'} on {report.get('board', '?')}{sim}"
    runner = report.get("runner") or {}
    intro = (f"<p>{report.get('runs', '?')} timed runs after {report.get('warmup', '?')} warm-up, "
             f"{html.escape(str(runner.get('device') or runner.get('runner') or ''))}, "
             f"inputs: {html.escape(str(report.get('inputs', '?')))}.</p>")
    sections = [intro, _gate_section(gate), _latency_section(report), _layers_section(report),
                 _memory_section(report, board_memory)]
    return _page(f"edgekit bench: {title}", sections)


# --------------------------------------------------------------------------- #
# Compression report
# --------------------------------------------------------------------------- #


def _variants_plot(document: Mapping[str, Any], latencies: Mapping[str, float] | None) -> str:
    variants = [v for v in variants_of(document, latencies) if v.weight_bytes is not None and v.accuracy is not None]
    if not variants:
        return '<p class="note">No variant has both a size and an accuracy.</p>'
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    timed = [v for v in variants if v.latency_ms is not None]
    if timed:
        # Marker area grows with latency so the trade-off reads in one picture.
        top = max(v.latency_ms for v in timed) or 1.0  # type: ignore[type-var]
        sizes = [40 + 400 * (v.latency_ms / top) if v.latency_ms is not None else 40 for v in variants]
    else:
        sizes = [60] * len(variants)
    ax.scatter([v.weight_bytes / 1024 for v in variants], [v.accuracy for v in variants], s=sizes,  # type: ignore[operator]
               color=[_BLUE if v.name == "fp32" else _ORANGE for v in variants], alpha=0.8)
    for v in variants:
        label = v.name + (f"\n{v.latency_ms:.3g} ms" if v.latency_ms is not None else "")
        ax.annotate(label, (v.weight_bytes / 1024, v.accuracy), textcoords="offset points", xytext=(6, 4),  # type: ignore[operator]
                    fontsize=8)
    ax.set_xlabel("weight KiB")
    ax.set_ylabel(accuracy_label(document))
    lat = "marker area: latency" if timed else "latency not measured in this report"
    return _plot("variants", f"Accuracy vs size of each variant ({lat}).", fig)


def _layer_sqnr_plot(document: Mapping[str, Any]) -> str:
    layers = []
    for step in document.get("steps", []):
        if step.get("step") == "quantize":
            layers = [la for la in step.get("layers", []) if la.get("sqnr_db") is not None]
    if not layers:
        return ""
    fig = _figure(7.0, max(2.0, 0.28 * len(layers) + 1.0))
    ax = fig.add_subplot()
    names = [la["node"] for la in layers][::-1]
    ax.barh(names, [la["sqnr_db"] for la in layers][::-1],
            color=[_BLUE if la["quantized"] else _GREY for la in layers][::-1])
    ax.set_xlabel("SQNR vs fp32 (dB), grey: kept in float")
    ax.tick_params(axis="y", labelsize=7)
    return "<h2>Per-layer error</h2>" + _plot("layer-sqnr", "Output SQNR of each layer after quantization.", fig)


def _payoff_section(document: Mapping[str, Any]) -> str:
    """``compress --board``'s measurements: each step compiled for the board."""
    payoff = document.get("payoff")
    if not payoff:
        return ""
    cycles = bool(payoff.get("simulated"))
    rows = []
    for r in payoff.get("summary", []):
        if r.get("cycles") is not None:
            latency = f"{r['cycles']:,.0f} cycles ({r['latency_ms']:.4g} ms)"
        else:
            latency = "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.4g} ms"
        speed = r.get("speedup_vs_fp32")
        rows.append([r["step"], r.get("error") or latency, "-" if speed is None else f"{speed:.2f}x",
                     "-" if r.get("arena_bytes") is None else format_bytes(r["arena_bytes"]),
                     "-" if r.get("flash_bytes") is None else format_bytes(r["flash_bytes"]), r.get("verdict", "")])
    warnings = "".join(f'<p class="verdict-fail">Warning: {html.escape(w)}</p>' for w in document.get("warnings", []))
    return (f"<h2>On {html.escape(str(payoff.get('board')))}</h2>" + warnings
            + _table(("step", "cycles" if cycles else "latency", "speed-up vs fp32", "arena", "weights + code",
                      "verdict"), rows)
            + f'<p class="note">{html.escape(str(payoff.get("timing", "")))}</p>')


def compress_html(document: Mapping[str, Any], *, latencies: Mapping[str, float] | None = None) -> str:
    """The HTML report of a ``compress --report`` document.

    Args:
        document: ``{"model", "output", "steps"}`` as written by ``edgekit compress``.
        latencies: Latency in ms per variant name, to add what the document lacks.
    """
    rows = [[v.name, format_bytes(v.weight_bytes) if v.weight_bytes is not None else "-",
             "-" if v.accuracy is None else f"{v.accuracy:.2f}", "-" if v.sqnr_db is None else f"{v.sqnr_db:.1f}",
             "-" if v.latency_ms is None else f"{v.latency_ms:.4g}", "-" if v.macs is None else f"{v.macs:,}"]
            for v in variants_of(document, latencies)]
    status = ('<p class="verdict-fail">A quality budget was not met: the compressed model was not written.</p>'
              if document.get("output") is None else
              f"<p>Wrote {html.escape(str(document.get('output')))}.</p>")
    sections = [status, "<h2>Variants</h2>", _variants_plot(document, latencies),
                _table(("variant", "weights", accuracy_label(document), "SQNR dB", "latency ms", "MACs"), rows),
                _payoff_section(document), _layer_sqnr_plot(document)]
    return _page(f"edgekit compress: {document.get('model', 'model')}", sections)


def write_html(path: str | os.PathLike[str], text: str) -> None:
    """Writes an HTML report (UTF-8)."""
    Path(path).write_text(text, encoding="utf-8")

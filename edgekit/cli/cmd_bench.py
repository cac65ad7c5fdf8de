"""``edgekit bench``: latency statistics of a package, optionally against onnxruntime,
with reports (HTML, Markdown) and a regression gate against a baseline (exit 1
and a table of what regressed; JUnit XML for CI)."""

from __future__ import annotations

import argparse
from typing import Any

from rich import box
from rich.table import Table

from edgekit.api.bench import BenchOptions, BenchResult, ReportFiles, Tracker, bench_package
from edgekit.api.gate import GateRequest, gate_package
from edgekit.cli.bench_tracker import add_tracker_flags
from edgekit.cli.progress import activity_for
from edgekit.cli.render import add_json_flags, add_target_flags, console, emit_result, err_console, format_bytes, target_of
from edgekit.core.errors import InputError
from edgekit.report.gates import GateResult, parse_regression
from edgekit.report.markdown import gate_text_table
from edgekit.runtime.runner import AGREE_TOLERANCE
from edgekit.runtime.stats import STAT_KEYS

__all__ = ["add_parser", "run", "EXIT_REGRESSION"]

#: Exit code when the gate finds a regression (2 stays "user error").
EXIT_REGRESSION = 1


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure a package's latency (and compare with onnxruntime)",
        description="Run PKG WARMUP times untimed, then RUNS times timed, and report min/p50/p90/p99/mean/std "
        "latency and throughput. Without --input, seeded random inputs are used; with it, the first sample.",
        epilog="examples:\n"
        "  edgekit bench model.ekpkg --runs 50 --compare-ort --json-out result.json\n"
        "  edgekit bench model.ekpkg --json > base.json                # record a baseline\n"
        "  edgekit bench model.ekpkg --baseline base.json --max-regression 5% --junit junit.xml "
        "--report bench.html --markdown bench.md\n"
        "exit codes: 0 ok, 1 a gated quantity regressed, 2 a usage error. Gating rules: docs/reports.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("package", metavar="PKG", help=".ekpkg package from `edgekit compile`")
    p.add_argument("--runs", type=_positive, default=None, metavar="N",
                   help="timed runs (default 50; 1 on a deterministic, cycle-counting simulator)")
    p.add_argument("--warmup", type=_non_negative, default=None, metavar="N",
                   help="untimed runs first (default 5; 0 on a deterministic simulator)")
    p.add_argument("--input", metavar="IN.npz", help="input arrays (default: random data of the right shape)")
    p.add_argument("--compare-ort", action="store_true",
                   help="also time onnxruntime on the package's model.onnx with the same inputs and threads")
    add_json_flags(p, "the report", file_after_json=True)
    g = p.add_argument_group("reports and regression gate")
    g.add_argument("--report", metavar="R.html", help="write a self-contained HTML report (plots inline)")
    g.add_argument("--markdown", metavar="M.md", help="write a Markdown summary (e.g. for $GITHUB_STEP_SUMMARY)")
    g.add_argument("--baseline", metavar="B.json", help="gate latency, size and arena against this bench --json file")
    g.add_argument("--max-regression", action="append", metavar="PCT",
                   help="allowed growth over the baseline: 5%% (default) or per quantity, e.g. latency=5%%,size=0%%")
    g.add_argument("--confirm", type=_non_negative, default=2, metavar="N",
                   help="re-measure a failing wall-clock latency up to N times, gate the fastest (default 2)")
    g.add_argument("--junit", metavar="J.xml", help="write the gate's checks as JUnit XML (needs --baseline)")
    add_target_flags(p)
    add_tracker_flags(p)
    p.set_defaults(func=run)


def _num(value: float) -> str:
    """Three to four significant digits without exponents, so columns stay narrow."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _rate(value: float) -> str:
    """Runs per second, thousands as ``k``: ``186573`` -> ``187k``."""
    return _num(value) if value < 10_000 else f"{value / 1000:.0f}k"


def _time_unit(report: dict[str, Any]) -> tuple[str, float]:
    """``ms``, or ``µs`` when edgekit's median is under a millisecond: a
    10-us model printed in ms (``0.00533``) needs seven characters a column,
    and eight such columns overflow an 80-column terminal (rich then cut the
    digits: ``0.005…``)."""
    return ("ms", 1.0) if report["latency_ms"]["p50"] >= 1.0 else ("µs", 1000.0)


def _stat_row(label: str, stats: dict[str, float], throughput: float, scale: float = 1.0) -> list[str]:
    return [label, *(_num(stats[k] * scale) for k in STAT_KEYS), _rate(throughput)]


def _render(report: dict[str, Any]) -> None:
    sim = " (simulated)" if report["simulated"] else ""
    unit, scale = _time_unit(report)
    table = Table(title=f"{report['model']} on {report['board']}{sim}: latency in {unit} over {report['runs']} runs "
                        f"({report['warmup']} warm-up, {report['threads']} thread(s), {report['inputs']} inputs)",
                  # No vertical rules: eight columns of numbers then fit 80 columns without cut digits.
                  box=box.SIMPLE_HEAD)
    table.add_column("runtime", no_wrap=True)
    for key in STAT_KEYS:
        table.add_column(key, justify="right", no_wrap=True)
    table.add_column("per s", justify="right", no_wrap=True)
    table.add_row(*_stat_row("edgekit", report["latency_ms"], report["throughput_per_s"], scale))
    if "ort_latency_ms" in report:
        label = "onnxruntime" if not report.get("simulated") else "ort (host)"
        table.add_row(*_stat_row(label, report["ort_latency_ms"], report["ort_throughput_per_s"], scale))
    console.print(table)
    mode = report.get("runner", {}).get("vm_exec_mode")
    if mode == "compiled":
        console.print("TVM VM: main runs as compiled code", highlight=False)
    elif mode == "bytecode":
        console.print("TVM VM: main runs as bytecode, one interpreted call per kernel (packages compiled by "
                      "this edgekit run it as compiled code: recompile to drop that overhead)", highlight=False)
    if report["simulated"] and "cycles" not in report:
        console.print("latency: the emulator's wall clock on this host, not the board's latency", highlight=False)
    for key in ("cycles", "instructions"):
        if key in report:
            console.print(f"{key}: " + ", ".join(f"{k} {report[key][k]:.0f}" for k in STAT_KEYS))
    if "ratio_vs_ort" in report:
        err = report["ort_max_rel_error"]["max"]
        tolerance = report.get("agree_tolerance", AGREE_TOLERANCE)
        verdict = "[green]outputs agree[/]" if report["outputs_agree"] else f"[red]outputs differ by more than {tolerance:.2g}[/]"
        err_text = "NaN" if err is None else f"{err:.2g}"
        if tolerance > AGREE_TOLERANCE:
            err_text += (f" (tolerance {tolerance:.2g}: float32 sums of {report['accumulation_length']:,} products "
                         "through the layers)")
        if report.get("simulated"):
            # A simulated board's latency is the board's (cycles at its clock);
            # onnxruntime ran on this machine: the ratio compares two machines.
            # An emulator without cycle counts (qemu-user) times this machine too, not the board.
            whose = "the simulated board's" if "cycles" in report else "the emulator's"
            console.print(f"outputs vs onnxruntime: max relative error {err_text}: {verdict} "
                          f"(latencies are {whose} and this host's; not a like-for-like ratio)")
        else:
            console.print(f"p50 ratio edgekit/onnxruntime: {report['ratio_vs_ort']:.2f}x; "
                          f"max relative error {err_text}: {verdict}")
    mem = report.get("memory", {})
    if mem:
        console.print("memory: " + ", ".join(f"{k.removesuffix('_bytes')} {format_bytes(v)}" for k, v in mem.items()))


def _render_gate(gate: GateResult, out: Any) -> None:
    # Plain aligned text rather than a rich Table: CI logs are 80 columns wide
    # for rich, and a folded table is unreadable; the same text goes into JUnit.
    lines = gate_text_table(gate).splitlines()
    out.print(f"gate against baseline on {gate.board}:", highlight=False)
    for i, line in enumerate(lines):
        failed = i >= 2 and gate.checks[i - 2].status == "fail"
        out.print(line, style="bold red" if failed else None, soft_wrap=True, highlight=False, markup=False)
    for note in gate.notes:
        out.print(f"note: {note}", soft_wrap=True, highlight=False, markup=False)
    if gate.passed:
        out.print("gate [green]passed[/]")
    else:
        out.print("gate [bold red]REGRESSED[/]: " + ", ".join(c.metric for c in gate.failed), highlight=False)


def _measure(args: argparse.Namespace) -> BenchResult:
    options = BenchOptions(runs=args.runs, warmup=args.warmup, inputs=args.input, compare_ort=args.compare_ort)
    tracker = Tracker(args.tracker, args.key or "", args.wait) if args.tracker else None
    reports = ReportFiles(html=args.report, markdown=args.markdown, junit=args.junit)
    if args.baseline:
        gate = GateRequest(args.baseline, parse_regression(args.max_regression), args.confirm)
        return gate_package(args.package, gate, options=options, target=target_of(args), tracker=tracker,
                            reports=reports)  # fmt: skip
    return bench_package(args.package, options=options, target=target_of(args), tracker=tracker, reports=reports)


def run(args: argparse.Namespace) -> int:
    if (args.max_regression or args.junit) and not args.baseline:
        raise InputError("--max-regression and --junit need --baseline",
                         hint="Add --baseline BASE.json (written by `edgekit bench PKG --json-out BASE.json`).")
    with activity_for(args, "benchmarking" + (" and timing onnxruntime" if args.compare_ort else "")):
        result = _measure(args)
    report, gate = result.report, result.gate
    stdout_json = emit_result(args, report)
    quiet = getattr(args, "quiet", False)
    if not stdout_json and not quiet:
        _render(report)
        if report.get("deterministic") and args.runs is None:
            console.print(f"{report['board']}'s simulator counts cycles, so every run measures the same: ran it "
                          "once (pass --runs N to repeat)", highlight=False)
    if gate is not None:
        # The table goes to stderr when stdout carries JSON, and is shown even with -q on failure.
        if not gate.passed or not quiet:
            _render_gate(gate, err_console if stdout_json else console)
    if result.written and not quiet:
        err_console.print("wrote " + ", ".join(result.written))
    return 0 if result.passed else EXIT_REGRESSION

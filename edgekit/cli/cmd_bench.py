"""``edgekit bench``: latency statistics of a package, optionally against onnxruntime."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from edgekit.cli.cmd_compile import format_bytes
from edgekit.cli.cmd_run import add_target_flags
from edgekit.cli.render import console, write_json
from edgekit.runtime.data import read_npz
from edgekit.runtime.runner import AGREE_TOLERANCE, bench_package
from edgekit.runtime.stats import STAT_KEYS

__all__ = ["add_parser", "run"]


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
        epilog="example: edgekit bench model.ekpkg --runs 50 --compare-ort --json result.json",
    )
    p.add_argument("package", metavar="PKG", help=".ekpkg package from `edgekit compile`")
    p.add_argument("--runs", type=_positive, default=50, metavar="N", help="timed runs (default 50)")
    p.add_argument("--warmup", type=_non_negative, default=5, metavar="N", help="untimed runs first (default 5)")
    p.add_argument("--input", metavar="IN.npz", help="input arrays (default: random data of the right shape)")
    p.add_argument("--compare-ort", action="store_true",
                   help="also time onnxruntime on the package's model.onnx with the same inputs and threads")
    p.add_argument("--json", metavar="R.json", help="write the report as JSON ('-' for stdout)")
    add_target_flags(p)
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


def _stat_row(label: str, stats: dict[str, float], throughput: float) -> list[str]:
    return [label, *(_num(stats[k]) for k in STAT_KEYS), _num(throughput)]


def _render(report: dict[str, Any]) -> None:
    sim = " (simulated)" if report["simulated"] else ""
    table = Table(title=f"{report['model']} on {report['board']}{sim}: latency in ms over {report['runs']} runs "
                        f"({report['warmup']} warm-up, {report['threads']} thread(s), {report['inputs']} inputs)")
    table.add_column("runtime", no_wrap=True)
    for key in STAT_KEYS:
        table.add_column(key, justify="right", no_wrap=True)
    table.add_column("per s", justify="right", no_wrap=True)
    table.add_row(*_stat_row("edgekit", report["latency_ms"], report["throughput_per_s"]))
    if "ort_latency_ms" in report:
        table.add_row(*_stat_row("onnxruntime", report["ort_latency_ms"], report["ort_throughput_per_s"]))
    console.print(table)
    for key in ("cycles", "instructions"):
        if key in report:
            console.print(f"{key}: " + ", ".join(f"{k} {report[key][k]:.0f}" for k in STAT_KEYS))
    if "ratio_vs_ort" in report:
        err = report["ort_max_rel_error"]["max"]
        verdict = "[green]outputs agree[/]" if report["outputs_agree"] else f"[red]outputs differ by more than {AGREE_TOLERANCE:g}[/]"
        err_text = "NaN" if err is None else f"{err:.2e}"
        console.print(f"p50 ratio edgekit/onnxruntime: {report['ratio_vs_ort']:.2f}x; "
                      f"max relative error {err_text}: {verdict}")
    mem = report.get("memory", {})
    if mem:
        console.print("memory: " + ", ".join(f"{k.removesuffix('_bytes')} {format_bytes(v)}" for k, v in mem.items()))


def run(args: argparse.Namespace) -> int:
    arrays = read_npz(args.input) if args.input else None
    report = bench_package(
        args.package,
        board=args.board,
        runs=args.runs,
        warmup=args.warmup,
        arrays=arrays,
        compare_ort=args.compare_ort,
        allow_other_board=args.allow_other_board,
        port=args.port,
        sim=args.sim,
        board_dirs=args.boards_dir,
    )
    if args.json:
        write_json(args.json, report)
    if args.json != "-" and not getattr(args, "quiet", False):
        _render(report)
    return 0

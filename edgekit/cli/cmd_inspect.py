"""``edgekit inspect``: MACs, parameters, memory and board fit of a model."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from edgekit.api.inspect import inspect_model
from edgekit.cli.render import add_json_flags, console, emit_result, print_whole
from edgekit.core.tensors import TensorSpec, parse_input_shapes
from edgekit.frontend.analysis import GRAPH_WALK, ModelReport
from edgekit.frontend.compile_check import FrontEndCheck

__all__ = ["add_parser", "run"]

#: Rows of the op histogram shown before "... and N more".
_MAX_OPS_SHOWN = 20
#: Tensors listed from the peak of a memory plan.
_MAX_LIVE_SHOWN = 5


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="count MACs, parameters and memory of a model",
        description="Load an ONNX model as edgekit compiles it and report its inputs, outputs, operators, "
        "parameters, weight bytes, MACs and peak activation memory; with --board, whether it fits.",
        epilog="examples:\n  edgekit inspect model.onnx --board stm32h7\n"
        "  edgekit inspect model.onnx --input-shape x=1x3x48x192 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="the .onnx file")
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=SHAPE",
        help="static shape of an input, e.g. data=1x3x224x224 (repeat per input)",
    )
    p.add_argument("--board", metavar="B", help="check RAM/flash fit on this board (see 'edgekit boards')")
    p.add_argument("--boards-dir", action="append", default=[], metavar="DIR", help="extra folder of board/target TOML files")
    add_json_flags(p, "the report")
    p.add_argument("--layers", action="store_true", help="also list every layer with its MACs and parameters")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = inspect_model(args.model, input_shapes=parse_input_shapes(args.input_shape), board=args.board,
                           board_dirs=args.boards_dir)  # fmt: skip
    if emit_result(args, result.to_json()):
        return 0
    _render(result.report, show_layers=args.layers, planned=result.plan is not None)
    _render_frontend(result.frontend)
    if result.plan is not None:
        _render_plan(result.plan, result.advice, result.ram_for_arena[1])
    if result.npu is not None:
        _render_offload(result.npu)
    return 0


def _render_offload(offload: dict) -> None:
    table = Table(title=f"accelerator offload: {offload['offloaded_macs_fraction']:.1%} of MACs")
    for col in ("node", "op", "runs on", "reason"):
        table.add_column(col)
    for place in offload["placements"]:
        where = "[green]npu[/green]" if place["where"] == "npu" else "host"
        table.add_row(place["node"], place["op"], where, place.get("reason") or "")
    print_whole(table, console)
    if not offload["offloaded_layers"]:
        console.print("[yellow]nothing is offloaded:[/yellow] the accelerator runs int8 layers; quantize first "
                      "(edgekit compress --quantize int8 --board ...).")


def _bytes(n: int) -> str:
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n} B"


def _count(n: int) -> str:
    for unit, f in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= f:
            return f"{n / f:.3g} {unit} ({n:,})"
    return f"{n:,}"


def _tensor_rows(table: Table, kind: str, specs: list[TensorSpec]) -> None:
    for s in specs:
        shape = "x".join(str(d) if d >= 0 else "?" for d in s.shape) or "scalar"
        table.add_row(kind, s.name, shape, s.dtype)


def _render_frontend(check: FrontEndCheck) -> None:
    """What compile's front end does: the expansions and rewrites, or its refusal."""
    done = "; ".join(f"{op} {action} x{n}" for op, actions in check.changes.items() for action, n in actions.items())
    if check.ok:
        nodes = sum(check.ops.values())
        console.print(f"[green]compile front end:[/green] TVM imports {nodes} nodes"
                      + (f" after {done}" if done else " as loaded"), highlight=False)
    else:
        console.print(f"[red]compile would refuse this model:[/red] {check.refusal}", highlight=False)


def _render_plan(plan: Any, advice: list[Any], ram_note: str) -> None:
    live = Table(title=f"largest tensors alive at kernel {plan.peak_step + 1} of {plan.kernel_calls} ({plan.peak_kernel})")
    for col, justify in (("tensor", "left"), ("shape", "left"), ("bytes", "right"), ("written by", "left"),
                         ("ONNX layers (matched by shape)", "left")):
        live.add_column(col, justify=justify)  # type: ignore[arg-type]
    for t in plan.live_at_peak[:_MAX_LIVE_SHOWN]:
        live.add_row(t.name, f"{'x'.join(map(str, t.shape))} {t.dtype}".strip(), _bytes(t.nbytes), t.kernel,
                     ", ".join(t.layers) or "-")  # fmt: skip
    print_whole(live, console)
    console.print(f"[dim]planner:[/dim] {plan.planner}", highlight=False)
    console.print(f"[dim]available:[/dim] {ram_note}", highlight=False)
    for assumption in plan.assumptions:
        console.print(f"[dim]assumes:[/dim] {assumption}", highlight=False)
    for item in advice:
        console.print(f"[yellow]to shrink it:[/yellow] {item.text}", highlight=False)


def _render(report: ModelReport, *, show_layers: bool, planned: bool = False) -> None:
    tensors = Table(title=f"{report.name} (opset {report.opset})")
    for col in ("", "name", "shape", "dtype"):
        tensors.add_column(col)
    _tensor_rows(tensors, "input", report.inputs)
    _tensor_rows(tensors, "output", report.outputs)
    print_whole(tensors, console)

    summary = Table(title="size and compute", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row("MACs", _count(report.macs))
    summary.add_row("parameters", _count(report.params))
    summary.add_row("weight bytes", _bytes(report.weight_bytes))
    label = "peak activations, unfused graph" if planned else "peak activations"
    summary.add_row(label, f"{_bytes(report.peak_activation_bytes)} (at {report.peak_activation_node})")
    if report.fits is not None and planned:
        summary.add_row(f"arena planned for {report.fits.board}", _bytes(report.fits.needed_ram))
    print_whole(summary, console)

    ops = Table(title="operators")
    ops.add_column("op")
    ops.add_column("nodes", justify="right")
    ops.add_column("MACs", justify="right")
    by_op = report.macs_by_op
    items = list(report.ops.items())
    for op, n in items[:_MAX_OPS_SHOWN]:
        macs = by_op.get(op, 0)
        share = f"{macs / report.macs:.1%}" if report.macs else "-"
        ops.add_row(op, str(n), f"{_count(macs)}  {share}" if macs else "-")
    if len(items) > _MAX_OPS_SHOWN:
        ops.add_row(f"... and {len(items) - _MAX_OPS_SHOWN} more", "", "")
    print_whole(ops, console)

    if show_layers:
        layers = Table(title="layers")
        for col, justify in (("#", "right"), ("name", "left"), ("op", "left"), ("output", "left"),
                             ("MACs", "right"), ("params", "right")):
            layers.add_column(col, justify=justify)  # type: ignore[arg-type]
        for i, layer in enumerate(report.layers):
            shape = "?" if layer.output_shape is None else "x".join(map(str, layer.output_shape))
            layers.add_row(str(i), layer.name, layer.op, shape, f"{layer.macs:,}", f"{layer.params:,}")
        print_whole(layers, console)

    if report.fits is not None:
        f = report.fits
        fit = Table(title=f"fit on board {f.board}")
        for col in ("memory", "needed", "available", "fits"):
            fit.add_column(col)
        for label, need, have, ok in (
            (f.ram_label, f.needed_ram, f.ram_bytes, f.ram_ok),
            (f.flash_label, f.needed_flash, f.flash_bytes, f.flash_ok),
        ):
            fit.add_row(label, _bytes(need), _bytes(have) if have else "not limited",
                        "[green]yes[/green]" if ok else "[red]no[/red]")
        print_whole(fit, console)
        if not planned:
            console.print(f"[dim]RAM from the {f.planner or GRAPH_WALK}[/dim]", highlight=False)

    for note in report.notes:
        console.print(f"[dim]note:[/dim] {note}", highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)

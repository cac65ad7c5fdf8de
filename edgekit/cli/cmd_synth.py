"""``edgekit synth``: the bitstream of an FPGA board's accelerator, and a model's program and weights images."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from edgekit.api.synth import synthesize
from edgekit.cli.render import StageProgress, add_json_flags, console, emit_result, err_console, format_bytes, json_to_stdout
from edgekit.core.tensors import parse_input_shapes

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="synthesize an FPGA board's accelerator into a bitstream (open flow), with a model's images",
        description="Run the open FPGA flow (Yosys, nextpnr-ecp5, ecppack from pip install 'edgekit[fpga]') on the "
        "board's top (the NPU of its profile, block-RAM memory, UART bridge; rtl/boards/) and write the bitstream, a "
        "JSON report (LUT/FF/DSP/BRAM, Fmax, seconds) and, with MODEL, the compiled package, the program and weights "
        "images for the UART loader and the latency predicted at the board's clock and at the achieved Fmax. The "
        "bitstream depends on the board only: synthesize once (57 minutes for 8x8 on two busy cores), then use "
        "--no-bitstream per model.",
        epilog="examples:\n  edgekit synth --board ulx3s-85f -o ulx3s/\n"
        "  edgekit synth model_int8.onnx --board ulx3s-85f -o ulx3s/ --no-bitstream\n"
        "then: openFPGALoader -b ulx3s ulx3s/ulx3s_top.bit\n"
        "      edgekit run ulx3s/model.ekpkg --port /dev/ttyUSB0 --input in.npz -o out.npz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", nargs="?", help="int8 QDQ ONNX model to compile for the board (optional)")
    p.add_argument("--board", required=True, help="FPGA board profile (one with an [fpga] section, e.g. ulx3s-85f)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the bitstream, images, logs and report.json")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224", help="static shape of a model input")
    flow = p.add_mutually_exclusive_group()
    flow.add_argument("--no-bitstream", action="store_true", help="skip the FPGA flow: only compile MODEL and write its images")
    flow.add_argument("--synth-only", action="store_true",
                      help="stop after Yosys synthesis: cell counts in minutes, no place-and-route, no bitstream")
    p.add_argument("--boards-dir", action="append", default=[], metavar="DIR", help="extra folder of board/target TOML files")
    add_json_flags(p, "the report")
    p.set_defaults(func=run)


def _table(result: dict[str, Any]) -> Table:
    table = Table(title=f"{result['board']}: {result['part']}")
    table.add_column("item")
    table.add_column("value")
    for label, use in result.get("resources", {}).items():
        table.add_row(label, f"{use['used']}" + (f" / {use['available']}" if "available" in use else " (after synthesis)"))
    if result.get("fmax_mhz"):
        met = "meets" if result["timing_met"] else "MISSES"
        table.add_row("Fmax", f"{result['fmax_mhz']:.1f} MHz ({met} the {result['clock_mhz']:g} MHz clock)")
    if result.get("bitstream"):
        table.add_row("bitstream", f"{result['bitstream']} ({format_bytes(result['bitstream_bytes'])})")
    if result.get("seconds"):
        table.add_row("time", ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items()))
    model = result.get("model")
    if model:
        table.add_row("package", model["package"])
        for image in model["images"]:
            table.add_row(image["file"], f"{format_bytes(image['bytes'])} at {image['addr']:#x}")
        table.add_row("accelerator memory", f"{format_bytes(model['memory_bytes'])}")
        at_fmax = f", {model['latency_ms_at_fmax']:.3f} ms at Fmax" if model.get("latency_ms_at_fmax") else ""
        table.add_row("predicted NPU time", f"{model['npu_cycles']} cycles: {model['latency_ms_at_clock']:.3f} ms at "
                      f"{result['clock_mhz']:g} MHz{at_fmax} (host sub-graphs and UART not included)")  # fmt: skip
    return table


def run(args: argparse.Namespace) -> int:
    quiet = json_to_stdout(args) or getattr(args, "quiet", False)
    with StageProgress(err_console, enabled=not quiet) as progress:
        result = synthesize(args.board, args.output, model=args.model, input_shapes=parse_input_shapes(args.input_shape),
                            bitstream=not args.no_bitstream, place=not args.synth_only, board_dirs=args.boards_dir,
                            progress=progress).report  # fmt: skip
    if emit_result(args, result):
        return 0
    console.print(_table(result))
    if result.get("bitstream"):
        console.print(f"load it: openFPGALoader -b ulx3s {result['bitstream']}   (or fujprog)")
    if result.get("model"):
        console.print(f"run it:  edgekit run {result['model']['package']} --port /dev/ttyUSB0 --input IN.npz -o OUT.npz")
    return 0

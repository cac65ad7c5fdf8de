"""``edgekit doctor``: what this machine has for edgekit's targets."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from edgekit.api.doctor import doctor_report
from edgekit.cli.render import add_json_flags, console, emit_result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check toolchains, simulators, serial ports and versions",
        description="Report the Python packages, toolchains, simulators, serial ports and GPUs edgekit can use here.",
        epilog="example: edgekit doctor --json",
    )
    add_json_flags(p, "the findings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = doctor_report().to_json()
    if emit_result(args, report):
        return 0
    table = Table(title="edgekit doctor")
    table.add_column("item")
    table.add_column("status")
    table.add_row("python", report["python"])
    for name, ver in report["packages"].items():
        table.add_row(name, ver or "[red]missing[/]")
    for name, path in report["tools"].items():
        table.add_row(name, path or "[yellow]not found[/]")
    ports = report["serial_ports"]
    table.add_row("serial ports", ", ".join(f"{p['device']} {p['vid_pid']}".strip() for p in ports) or "none")
    for name, why in report["fpga"].items():
        # escape: "pip install 'edgekit[rtl]'" lost its "[rtl]" as a style tag
        table.add_row(name, f"[yellow]{escape(why)}[/]" if why else "ok")
    gpu = report["gpu"]
    table.add_row("CUDA GPU", "yes" if gpu["tvm_cuda_device"] else "[yellow]none[/]")
    console.print(table)
    return 0

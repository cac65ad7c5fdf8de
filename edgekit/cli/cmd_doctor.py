"""``edgekit doctor``: what this machine has for edgekit's targets."""

from __future__ import annotations

import argparse
import importlib
import platform
import shutil
import sys
from typing import Any

from rich.table import Table

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


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    return str(getattr(mod, "__version__", "installed"))


def _serial_ports() -> list[dict[str, Any]]:
    try:
        from serial.tools import list_ports
    except Exception:
        return []
    ports = []
    for p in list_ports.comports():
        vidpid = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else ""
        ports.append({"device": p.device, "vid_pid": vidpid, "description": p.description})
    return ports


def _gpu() -> dict[str, Any]:
    smi = shutil.which("nvidia-smi")
    info: dict[str, Any] = {"nvidia_smi": smi, "nvcc": shutil.which("nvcc")}
    try:
        import tvm

        info["tvm_cuda_device"] = bool(tvm.cuda(0).exist)
    except Exception:
        info["tvm_cuda_device"] = False
    return info


def collect() -> dict[str, Any]:
    """Everything ``doctor`` reports, as a dict."""
    packages = {
        name: _version(mod)
        for name, mod in [
            ("onnx", "onnx"),
            ("onnxruntime", "onnxruntime"),
            ("onnxslim", "onnxslim"),
            ("apache-tvm", "tvm"),
            ("apache-tvm-ffi", "tvm_ffi"),
            ("numpy", "numpy"),
            ("pyserial", "serial"),
            ("unicorn", "unicorn"),
            ("ziglang", "ziglang"),
        ]
    }
    tools = {name: shutil.which(name) for name in ("cc", "qemu-aarch64", "qemu-riscv64", "chromium")}
    from edgekit.npu.rtl_build import verilator_missing
    from edgekit.npu.rtl_synth import yowasp_missing

    # "" = usable; otherwise what is missing and how to install it
    fpga = {"rtl simulation (--sim rtl)": verilator_missing(), "open FPGA flow (edgekit synth)": yowasp_missing()}
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "tools": tools,
        "serial_ports": _serial_ports(),
        "gpu": _gpu(),
        "fpga": fpga,
    }


def run(args: argparse.Namespace) -> int:
    report = collect()
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
        table.add_row(name, f"[yellow]{why}[/]" if why else "ok")
    gpu = report["gpu"]
    table.add_row("CUDA GPU", "yes" if gpu["tvm_cuda_device"] else "[yellow]none[/]")
    console.print(table)
    return 0

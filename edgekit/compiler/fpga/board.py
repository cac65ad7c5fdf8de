"""What a user loads on an FPGA board: the bitstream of its board top, and a model's program and weights images.

:func:`build_fpga_board` is ``edgekit synth``: the open flow
(:mod:`edgekit.compiler.fpga.synth`) on the board's top, then — with a model —
the model compiled for the board, its images for the UART loader and the
predicted latency at the clock the routed design achieves. The bitstream
depends on the board profile only; the images on the model only.

Files written to the output folder:

* ``<top>.bit`` — the bitstream (``openFPGALoader -b ulx3s <top>.bit``);
* ``model.ekpkg`` — the compiled package (``edgekit run/flash --port``);
* ``weights.bin``, ``program.bin`` and ``load.json`` — the two memory
  images with their addresses, sizes and SHA-256, for any loader that
  speaks the bridge's byte protocol (docs/npu-isa.md, "Board top");
* ``report.json`` — the result below; logs of every tool.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from edgekit.core.errors import ConfigError
from edgekit.core.links import SIMULATORS

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = ["build_fpga_board", "write_load_images", "RESOURCE_KINDS"]

logger = logging.getLogger(__name__)

#: Report names of nextpnr's (and Yosys's) ECP5 resource kinds.
RESOURCE_KINDS = {"LUT4": ("TRELLIS_COMB", "LUT4"), "FF": ("TRELLIS_FF", "TRELLIS_FF"), "DSP": ("MULT18X18D", "MULT18X18D"),
                  "BRAM": ("DP16KD", "DP16KD")}  # fmt: skip


def write_load_images(package_path: Path, out_dir: Path) -> dict[str, Any]:
    """Writes ``weights.bin``, ``program.bin`` and ``load.json`` from a compiled NPU package; returns ``load.json``'s content."""
    from edgekit.package import open_package
    from edgekit.npu.package import PLAN_MEMBER, PROGRAM_MEMBER, WEIGHTS_MEMBER

    package = open_package(package_path)
    plan = json.loads(package.read(PLAN_MEMBER))
    dram = plan["dram"]
    images = []
    for name, member, addr in (("weights.bin", WEIGHTS_MEMBER, dram["const_base"]), ("program.bin", PROGRAM_MEMBER, dram["program_base"])):
        data = package.read(member)
        (out_dir / name).write_bytes(data)
        images.append({"file": name, "addr": addr, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    load = {
        "board": package.board,
        "memory_bytes": dram["size"],
        "images": images,
        "programs": [{"layer": lj["name"], "addr": lj["program_addr"], "instructions": lj["insn_count"]} for lj in plan["layers"]],
        "protocol": "docs/npu-isa.md, 'Board top': W writes an image, S 0x10/0x14/0x18 then S 0x08=1 starts a program, G 0x0C polls",
    }
    (out_dir / "load.json").write_text(json.dumps(load, indent=1))
    return load


def _resources(report: Any) -> dict[str, dict[str, int]]:
    """LUT4/FF/DSP/BRAM used (and available, after placement) from nextpnr, else Yosys's cell counts."""
    out = {}
    for label, (pnr_kind, cell) in RESOURCE_KINDS.items():
        if report.utilization:
            out[label] = dict(report.utilization.get(pnr_kind, {"used": 0, "available": 0}))
        else:
            out[label] = {"used": int(report.cells.get(cell, 0))}
    return out


def _predicted_cycles(package_path: Path, board: "Board") -> tuple[int, list[dict[str, Any]]]:
    """Accelerator cycles of one inference: each layer's program, in step order, on the cycle model.

    Timing only (the count does not depend on values), so no host code runs
    and no driver is needed: the programs go straight to the simulated device.
    """
    from edgekit.npu.package import PLAN_MEMBER, PROGRAM_MEMBER, WEIGHTS_MEMBER
    from edgekit.package import open_package

    assert board.npu is not None
    package = open_package(package_path)
    plan = json.loads(package.read(PLAN_MEMBER))
    dram = plan["dram"]
    simulated_npu = SIMULATORS.get("npu").load("model")  # sim/ is compiler's sibling
    device = simulated_npu(board.npu, dram["size"], functional=False)
    device.write(dram["const_base"], package.read(WEIGHTS_MEMBER))
    device.write(dram["program_base"], package.read(PROGRAM_MEMBER))
    layers = []
    for kind, index in plan["steps"]:
        if kind == "npu":
            lj = plan["layers"][int(index)]
            layers.append({"name": lj["name"], "cycles": device.execute(lj["program_addr"], lj["insn_count"]).cycles})
    return sum(lj["cycles"] for lj in layers), layers


def build_fpga_board(
    board: "Board",
    out_dir: Path,
    *,
    model: str | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    bitstream: bool = True,
    place: bool = True,
    board_dirs: Iterable[str] = (),
    progress: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Synthesizes ``board``'s top and (with ``model``) writes the model's images; returns the report.

    Args:
        board: A profile with ``[npu]`` and ``[fpga]`` (e.g. ulx3s-85f).
        out_dir: Output folder (created).
        model: An int8 QDQ ONNX model to compile for the board, or ``None``.
        input_shapes: Static input shapes for the model.
        bitstream: ``False`` skips the FPGA flow (only the model's images).
        place: ``False`` stops the flow after Yosys (cell counts, no bitstream).
        board_dirs: Extra folders of profiles (where ``board`` came from).
        progress: ``progress(stage, message)`` before each stage.

    Raises:
        ConfigError: the board has no FPGA top, the YoWASP tools are missing,
            or there is nothing to do.
        CompileError: a tool failed or the model does not fit the board.
    """
    from edgekit.npu.rtl_sources import board_parameters

    note = progress or (lambda stage, message: logger.info("%s", message))
    board_parameters(board)  # a board without [fpga] fails here, before anything runs
    if not bitstream and model is None:
        raise ConfigError("--no-bitstream without a model leaves nothing to do", hint="Give a MODEL, or drop --no-bitstream.")
    out_dir.mkdir(parents=True, exist_ok=True)
    assert board.npu is not None and board.fpga is not None
    result: dict[str, Any] = {"board": board.name, "part": f"ECP5 {board.fpga.device} {board.fpga.package} speed {board.fpga.speed}",
                              "clock_mhz": board.npu.clock_hz / 1e6}  # fmt: skip
    if bitstream:
        from edgekit.compiler.fpga.synth import synthesize_board

        synth = synthesize_board(board, out_dir, place=place, progress=note)
        result.update(
            top=synth.top,
            bitstream=synth.bitstream or None,
            bitstream_bytes=synth.bitstream_bytes,
            resources=_resources(synth),
            fmax_mhz=synth.fmax_mhz or None,
            timing_met=synth.timing_met if place else None,
            seconds={k: round(v, 1) for k, v in synth.seconds.items()},
            synthesis=synth.to_json(),
        )
    if model is not None:
        from edgekit.compiler.driver import compile_model

        pkg = out_dir / "model.ekpkg"
        compile_model(model, board.name, pkg, input_shapes=dict(input_shapes or {}), board_dirs=board_dirs, progress=note)
        note("images", "writing the program and weights images")
        load = write_load_images(pkg, out_dir)
        note("predict", "counting the accelerator's cycles on the cycle model")
        cycles, layers = _predicted_cycles(pkg, board)
        fmax = result.get("fmax_mhz")
        result["model"] = {
            "package": str(pkg),
            "images": load["images"],
            "memory_bytes": load["memory_bytes"],
            "npu_cycles": cycles,
            "layers": layers,
            "latency_ms_at_clock": cycles / board.npu.clock_hz * 1e3,
            "latency_ms_at_fmax": cycles / (fmax * 1e3) if fmax else None,
            "latency_note": "predicted: accelerator cycles of the cycle model (calibrated from the RTL) at the board's "
            "clock and at the achieved Fmax; host sub-graphs and UART transfers not included",
        }
    (out_dir / "report.json").write_text(json.dumps(result, indent=1, default=str))
    return result

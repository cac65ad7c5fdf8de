"""``edgekit synth``: an FPGA board's accelerator through the open flow
(Yosys, nextpnr-ecp5, ecppack) into a bitstream, with a model's images."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgekit.compiler.fpga.board import build_fpga_board
from edgekit.core.profiles import load_profiles

__all__ = ["SynthResult", "synthesize"]


@dataclass(frozen=True)
class SynthResult:
    """What the flow produced.

    Attributes:
        output_dir: The folder with the bitstream, images, logs and ``report.json``.
        report: ``board``, ``part``, ``resources``, ``fmax_mhz``,
            ``timing_met``, ``bitstream``, ``seconds`` per stage and, with a
            model, ``model`` {package, images, cycles} (docs/fpga-board.md).
    """

    output_dir: Path
    report: dict[str, Any]


def synthesize(
    board: str,
    output_dir: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    bitstream: bool = True,
    place: bool = True,
    board_dirs: Iterable[str | os.PathLike[str]] = (),
    progress: Callable[[str, str], None] | None = None,
) -> SynthResult:
    """Synthesizes ``board``'s accelerator and (with ``model``) compiles the
    model into the images the board loads.

    Example::

        result = synthesize("ulx3s-85f", "ulx3s/", model="model.int8.onnx")
        print(result.report["fmax_mhz"])

    Args:
        bitstream: ``False`` skips the FPGA flow (only the model's images).
        place: ``False`` stops after Yosys (cell counts, no bitstream).
        progress: ``progress(stage, message)`` before each stage.

    Raises:
        ConfigError: not an FPGA board, the open tools are missing, or
            nothing to do.
        CompileError: a tool failed or the model does not fit.
    """
    dirs = list(board_dirs)
    profile = load_profiles(dirs).board(board)
    out = Path(output_dir)
    report = build_fpga_board(profile, out, model=None if model is None else str(model), input_shapes=input_shapes,
                              bitstream=bitstream, place=place, board_dirs=dirs, progress=progress)  # fmt: skip
    return SynthResult(out, report)

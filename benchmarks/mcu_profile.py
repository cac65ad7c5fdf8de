"""Per-layer instruction counts of a model on a simulated MCU board.

Compiles the model for the board (the same AOT path as ``edgekit compile``),
runs one inference of the linked firmware in the unicorn simulator and splits
the executed instructions by kernel call: a call starts when the core leaves
``ek_model_run`` for a kernel and ends when it comes back. Counts are
deterministic (the basic-block counting of ``edgekit.sim.mcu``).

Used to find which layers of an int8 model lose against fp32 (issue #15).

Usage::

    .venv/bin/python benchmarks/mcu_profile.py MODEL.onnx [--board stm32h7] [--top 30]
    .venv/bin/python benchmarks/mcu_profile.py --case ppocr_cls [--board rv32-mcu-sim] [--int8 | --compare]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from elftools.elf.elffile import ELFFile

from edgekit.compiler.backends.aot_c.pipeline import FIRMWARE_ELF, WEIGHTS_BIN, measure_and_link, compile_aot
from edgekit.compiler.backends.aot_c.nn import EXTERN_KERNEL, LUT_KERNEL, MUL_KERNEL, QUANTIZE_KERNEL, SUM_KERNEL
from edgekit.compiler.backend import no_progress
from edgekit.core.profiles import load_profiles
from edgekit.frontend.loader import load_model
from edgekit.runtime.device import DeviceClient
from edgekit.runtime.transport import SerialTransport
from edgekit.sim.mcu import McuSimulator

__all__ = ["StepCount", "profile_model"]


@dataclass
class StepCount:
    """One kernel call: its symbol, the shapes it touches, what kind of layer it is, the instructions it ran."""

    step: int
    func: str
    shapes: str
    instructions: int
    layer: str = ""


def _layer_kind(graph: Any, call: Any) -> str:
    """``conv 3x3``, ``conv 1x1``, ``depthwise 5x5``, ``fully connected`` or what else the call does."""
    tensors = [graph.tensors[a] for a in call.args]
    if call.func == EXTERN_KERNEL:
        hdr = next(t.value for t in tensors if t.kind == "weight" and t.dtype == "int32")
        kind, kh, kw = int(hdr[0]), int(hdr[7]), int(hdr[8])
        return ("conv", "depthwise", "fully connected")[kind] + (f" {kh}x{kw}" if kind < 2 else "")
    if "conv2d" in call.func:
        w = next(t for t in tensors if t.kind == "weight" and len(t.shape) == 4)
        x = next(t for t in tensors if t.kind != "weight" and len(t.shape) == 4)
        depthwise = w.shape[1] == 1 and w.shape[0] == x.shape[1] > 1
        return f"{'depthwise' if depthwise else 'conv'} {w.shape[2]}x{w.shape[3]}"
    if "matmul" in call.func or "dense" in call.func:
        return "fully connected"
    names = {LUT_KERNEL: "lookup table", SUM_KERNEL: "squeeze-excite sum", QUANTIZE_KERNEL: "input quantize",
             MUL_KERNEL: "squeeze-excite multiply"}  # fmt: skip
    if call.func in names:
        return names[call.func]
    return "pooling" if "pool" in call.func or "mean" in call.func else "elementwise (TVM)"


class _SteppedSimulator(McuSimulator):
    """Records the instruction count each time the core leaves ``ek_model_run``."""

    def __init__(self, elf: bytes, board: Any) -> None:
        sym = ELFFile(io.BytesIO(elf)).get_section_by_name(".symtab").get_symbol_by_name("ek_model_run")[0]
        self._run_lo = sym["st_value"] & ~1
        self._run_hi = self._run_lo + sym["st_size"]
        self._inside = False
        self.marks: list[tuple[int, bool]] = []  # (instructions before the block, entering a kernel)
        super().__init__(elf, board)

    def _on_block(self, uc: Any, address: int, size: int, ud: Any) -> None:
        inside = self._run_lo <= address < self._run_hi
        if inside != self._inside:
            self.marks.append((self.instructions, not inside))
            self._inside = inside
        super()._on_block(uc, address, size, ud)


def profile_model(path: str, board_name: str, feeds: dict[str, np.ndarray] | None = None) -> list[StepCount]:
    """Instructions of each kernel call of one inference of ``path`` on ``board_name``."""
    profiles = load_profiles()
    board = profiles.board(board_name)
    target = profiles.target_of(board)
    prepared = load_model(path)
    art = compile_aot(prepared, target.tvm_target())
    members, _, _, _ = measure_and_link(art, board, target, no_progress)
    rng = np.random.default_rng(0)
    feeds = feeds or {
        i.name: rng.uniform(-1, 1, i.shape).astype(i.dtype) if np.dtype(i.dtype).kind == "f"
        else rng.integers(-128, 128, i.shape).astype(i.dtype)
        for i in prepared.inputs
    }  # fmt: skip
    sim = _SteppedSimulator(members[FIRMWARE_ELF], board)
    link = SerialTransport(sim.port_name, board.transport.baudrate)
    try:
        client = DeviceClient(link)
        client.hello()
        client.load(members[WEIGHTS_BIN])
        for i, spec in enumerate(prepared.inputs):
            client.set_input(i, np.ascontiguousarray(feeds[spec.name], spec.dtype).tobytes())
        sim.marks.clear()
        client.run(1)
    finally:
        link.close()
        sim.close()
    # Each kernel call is one excursion out of ek_model_run: after the core
    # first enters it, marks alternate (leave for a kernel, come back); the
    # last leave is its return to the agent.
    seq = sim.marks[next(i for i, (_, leaving) in enumerate(sim.marks) if not leaving):]
    spans = [(seq[j][0], seq[j + 1][0]) for j in range(1, len(seq) - 1, 2)]
    graph = art.graph
    calls = graph.calls
    if len(spans) < len(calls):
        raise RuntimeError(f"{len(spans)} kernel excursions seen for {len(calls)} calls")
    rows = []
    for step, (call, (a, b)) in enumerate(zip(calls, spans)):
        shapes = " ".join(
            f"{graph.tensors[t].dtype}{list(graph.tensors[t].shape)}"
            for t in call.args
            if graph.tensors[t].kind != "weight"
        )
        rows.append(StepCount(step, call.func, shapes, b - a, _layer_kind(graph, call)))
    return rows


def _case_models(name: str, tmp: Path) -> tuple[str, str]:
    """``(fp32 path, int8 path)`` of a benchmark case (benchmarks/quantization.py), quantized with edgekit's defaults."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import onnx

    import quantization as qcases
    from edgekit.compress import QuantConfig, quantize

    case = qcases.digits_case(calibration_samples=256) if name == "digits_cnn" else qcases.ppocr_case()
    fp32, int8 = tmp / "fp32.onnx", tmp / "int8.onnx"
    onnx.save(case.fp32, fp32)
    quantize(str(fp32), QuantConfig(), calibration=case.calibration).save(int8)
    return str(fp32), str(int8)


def print_comparison(fp32: list[StepCount], int8: list[StepCount], title: str) -> None:
    """int8 against fp32 instructions per kind of layer."""
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for i, rows in enumerate((fp32, int8)):
        for r in rows:
            kinds[r.layer][i] += r.instructions
            kinds[r.layer][2 + i] += 1
    print(f"{title}\n\n| layers | fp32 calls | fp32 instructions | int8 calls | int8 instructions | int8 / fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, (f, q, nf, nq) in sorted(kinds.items(), key=lambda kv: -max(kv[1][:2])):
        ratio = f"{q / f:.2f}" if f and q else "-"
        print(f"| {kind} | {nf} | {f:,} | {nq} | {q:,} | {ratio} |")
    tf, tq = sum(r.instructions for r in fp32), sum(r.instructions for r in int8)
    print(f"| **all kernel calls** | {len(fp32)} | {tf:,} | {len(int8)} | {tq:,} | {tq / tf:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--case", choices=["digits_cnn", "ppocr_cls"])
    parser.add_argument("--int8", action="store_true", help="with --case: quantize it first (edgekit defaults)")
    parser.add_argument("--compare", action="store_true",
                        help="with --case: int8 against fp32 per kind of layer (both profiled)")
    parser.add_argument("--board", default="rv32-mcu-sim")
    parser.add_argument("--top", type=int, default=0, help="print only the N most expensive calls")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgekit-mcu-profile-") as tmp:
        path = args.model
        if args.case:
            fp32, int8 = _case_models(args.case, Path(tmp))
            if args.compare:
                print_comparison(profile_model(fp32, args.board), profile_model(int8, args.board),
                                 f"{args.case} on {args.board} (benchmarks/mcu_profile.py --case {args.case} "
                                 f"--compare --board {args.board})")  # fmt: skip
                return 0
            path = int8 if args.int8 else fp32
        rows = profile_model(path, args.board)
    total = sum(r.instructions for r in rows)
    shown = sorted(rows, key=lambda r: -r.instructions)[: args.top] if args.top else rows
    print("| step | kernel | layer | tensors | instructions | share |\n|---:|---|---|---|---:|---:|")
    for r in shown:
        print(f"| {r.step} | {r.func[:60]} | {r.layer} | {r.shapes} | {r.instructions:,} | {r.instructions / total:.1%} |")
    print(f"\ntotal in kernel calls: {total:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

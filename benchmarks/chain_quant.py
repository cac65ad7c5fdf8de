"""int8 quality with and without roundings inside elementwise chains (``QuantConfig.chain_ends_only``).

Each model is quantized twice with the default ``QuantConfig()``, once as is
(chains of one tensor -- hard-swish, GELU, ... -- quantized at their ends
only) and once with ``chain_ends_only=False`` (onnxruntime's quantizer rounds
after every op it knows), on the same data, and both QDQ graphs are run as
written (onnxruntime, optimizations off) against the fp32 model: output SQNR,
cosine, top-1 agreement, and the task metric where the data has labels.

Cases: ``ppocr-cls`` and ``ppocr-det`` of ``benchmarks/quantization.py``
(random [-1, 1] inputs; rendered text pages), and ``ppocr-cls-task`` /
``ppocr-rec-task`` of ``benchmarks/accuracy.py`` (rendered lines: rotation
top-1; exact match of the CTC decoding).

With ``--mcpu CPU`` both int8 graphs are also compiled for that LLVM CPU (all
int8, as ``benchmarks/int8_target.py`` builds them) and timed side by side in
one process: rounds alternate the order, ``--runs`` calls each per round, the
figure is the 10th percentile of all calls.

Usage::

    .venv/bin/python benchmarks/chain_quant.py [--models ppocr-cls,ppocr-det,ppocr-cls-task,ppocr-rec-task]
        [--eval-samples 200] [--calibration-samples 64] [--mcpu znver5 --rounds 10 --runs 20 --threads 2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy  # noqa: E402
import quantization  # noqa: E402

from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.compress.chains import find_unary_chains  # noqa: E402


def _bench_case(name: str) -> Callable[[int, int], tuple[onnx.ModelProto, dict, dict, Callable | None]]:
    def make(cal: int, ev: int) -> tuple[onnx.ModelProto, dict, dict, Callable | None]:
        maker = {"ppocr-cls": quantization.ppocr_case, "ppocr-det": quantization.ppocr_det_case}[name]
        case = maker(cal, ev)
        return case.fp32, case.calibration, case.evaluation, None

    return make


def _task_case(name: str) -> Callable[[int, int], tuple[onnx.ModelProto, dict, dict, Callable | None]]:
    def make(cal: int, ev: int) -> tuple[onnx.ModelProto, dict, dict, Callable | None]:
        case = accuracy.CASES[name](cal, ev)
        return case.fp32, case.calibration, case.evaluation, case.metric

    return make


CASES = {
    "ppocr-cls": _bench_case("ppocr-cls"),
    "ppocr-det": _bench_case("ppocr-det"),
    "ppocr-cls-task": _task_case("ppocr-cls"),
    "ppocr-rec-task": _task_case("ppocr-rec"),
}


def latency_ms(models: list[onnx.ModelProto], feeds: dict[str, np.ndarray], mcpu: str, rounds: int, runs: int,
               threads: int) -> list[float]:  # fmt: skip
    """10th-percentile latency of each model compiled for ``mcpu``, timed interleaved."""
    import tvm
    from tvm import relax

    from edgekit.compiler.backends.llvm.relax_build import build_cpu
    from edgekit.compiler.importer import import_onnx
    from edgekit.frontend.loader import load_model

    target = quantization.runnable_target(mcpu)
    vms = []
    for model in models:
        mod, weights = import_onnx(load_model(model))[:2]
        built = build_cpu(mod, target, weights, num_threads=threads)
        vm = relax.VirtualMachine(built.executable, tvm.cpu())
        vm.set_input("main", *[tvm.runtime.tensor(np.ascontiguousarray(v[:1])) for v in feeds.values()], *built.params)
        vms.append(vm)
    times: list[list[float]] = [[] for _ in vms]
    for r in range(rounds):
        order = range(len(vms)) if r % 2 == 0 else reversed(range(len(vms)))
        for k in order:
            for _ in range(3):
                vms[k].invoke_stateful("main")
            for _ in range(runs):
                t = time.perf_counter()
                vms[k].invoke_stateful("main")
                times[k].append((time.perf_counter() - t) * 1e3)
    return [float(np.percentile(t, 10)) for t in times]


def measure(name: str, cal: int, ev: int, timing: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    fp32, calibration, evaluation, metric = CASES[name](cal, ev)
    rows = []
    for ends_only in (False, True):
        t0 = time.perf_counter()
        q = quantize(fp32, QuantConfig(chain_ends_only=ends_only), calibration=calibration, eval_data=evaluation,
                     metric=metric)  # fmt: skip
        rep = q.report
        rows.append({
            "model": name,
            "chains": "ends only" if ends_only else "rounded inside",
            "q_nodes": sum(n.op_type == "QuantizeLinear" for n in q.model.graph.node),
            "outputs": [(o.name, o.sqnr_db, o.cosine, o.top1_agreement) for o in rep.outputs],
            "metric": (rep.metric_fp32, rep.metric_quantized),
            "seconds": time.perf_counter() - t0,
            "n_chains": len(find_unary_chains(fp32)),
            "eval": len(next(iter(evaluation.values()))),
            "model_proto": q.model,
        })  # fmt: skip
    if timing:
        inputs = {k: v for k, v in evaluation.items() if k in {i.name for i in fp32.graph.input}}
        for row, ms in zip(rows, latency_ms([r["model_proto"] for r in rows], inputs, **timing)):
            row["ms"] = ms
    return rows


def render(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Command: `{command}`; CPU: {quantization.cpu_description()}; date: {date.today()}.",
        "",
        "| model (eval samples) | chains | QuantizeLinear nodes | output SQNR dB | cosine | top-1 agree | task metric fp32 → int8 "
        "| int8 ms |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        for name, sqnr, cos, top1 in r["outputs"]:
            fp, q8 = r["metric"]
            task = "-" if fp is None else f"{100 * fp:.1f} % → {100 * q8:.1f} %"
            agree = "-" if top1 is None else f"{top1:.1f} %"
            ms = f"{r['ms']:.3f}" if "ms" in r else "-"
            lines.append(f"| {r['model']} ({r['eval']}) | {r['chains']} | {r['q_nodes']} | {sqnr:.2f} | {cos:.4f} | "
                         f"{agree} | {task} | {ms} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--calibration-samples", type=int, default=64)
    parser.add_argument("--mcpu", default=None, help="also time both int8 graphs compiled for this LLVM CPU")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    timing = dict(mcpu=args.mcpu, rounds=args.rounds, runs=args.runs, threads=args.threads) if args.mcpu else None
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    names = args.models.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    rows = [row for name in names for row in measure(name, args.calibration_samples, args.eval_samples, timing)]
    command = (f".venv/bin/python benchmarks/chain_quant.py --models {args.models} --eval-samples {args.eval_samples} "
               f"--calibration-samples {args.calibration_samples}")  # fmt: skip
    if timing:
        command += f" --mcpu {args.mcpu} --rounds {args.rounds} --runs {args.runs} --threads {args.threads}"
    print(render(rows, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())

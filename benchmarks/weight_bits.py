"""8-bit against 7-bit int8 weights (``QuantConfig.weight_bits``): accuracy, and latency on an x86 CPU.

Each model is quantized twice on the same data, with 8-bit weights
(``[-127, 127]``) and with 7-bit ones (``[-64, 64]``, onnxruntime's
``reduce_range``); activations are 8-bit in both. Accuracy: output SQNR
against the fp32 model and the task metric where the data has labels (the
quantizer's quality report: the QDQ graph run by onnxruntime). With
``--mcpu CPU`` the fp32 model and both int8 models are compiled for that LLVM
CPU (all int8, as ``benchmarks/int8_target.py`` builds them), the dense int8
kernels are counted by instruction form (``u8s8``: ``vpmaddubsw``, used only
where the weights cannot saturate it; ``i16``: ``vpmaddwd`` on int16), and
the three are timed side by side in one process: rounds rotate the order,
``--runs`` calls each per round, the figure is the 10th percentile of all
calls -- of the calling thread's CPU time with ``--threads 1`` (a shared
machine's other processes then do not count), of the wall clock otherwise.

With ``--mca haswell,znver2,...`` the dense int8 kernels compiled for
``--mcpu`` are also handed to ``llvm-mca`` (from LLVM, on the PATH): for each
kernel the smallest loop that holds its multiplies (the register tile's
reduction step), and the products per cycle the named CPUs' scheduling
models give it, median over the kernels of each form -- a model of CPUs this
machine is not, not a measurement. A kernel whose reduction is unrolled into
straight-line code (no loop holds its multiplies, e.g. a classifier's last
1x1 layer) is left out and counted on stderr.

Cases: ``digits`` (the shipped CNN, test split, real labels),
``ppocr-cls`` / ``ppocr-rec`` (rendered lines of ``benchmarks/accuracy.py``:
rotation top-1, exact match of the CTC decoding), ``squeezenet`` (the onnx
light model with seeded weights and random inputs: SQNR only).

Usage::

    .venv/bin/python benchmarks/weight_bits.py [--models digits,ppocr-cls,squeezenet]
        [--calibration-samples 64] [--eval-samples 200] [--mcpu haswell --rounds 10 --runs 20 --threads 2]
        [--mca haswell,znver2,skylake,znver3]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
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
from int8_target import interleaved_p10  # noqa: E402

from edgekit.compress import QuantConfig, quantize  # noqa: E402

Made = tuple[onnx.ModelProto, dict, dict, Callable | None]


def _digits(cal: int, ev: int) -> Made:
    case = quantization.digits_case(cal, ev)
    return case.fp32, case.calibration, {**case.evaluation, "labels": case.labels}, accuracy.top1


def _task(name: str) -> Callable[[int, int], Made]:
    def make(cal: int, ev: int) -> Made:
        case = accuracy.CASES[name](cal, ev)
        return case.fp32, case.calibration, case.evaluation, case.metric

    return make


def _light(name: str) -> Callable[[int, int], Made]:
    def make(cal: int, ev: int) -> Made:
        case = quantization.light_case(name, min(cal, 16), min(ev, 8))
        return case.fp32, case.calibration, case.evaluation, None

    return make


CASES: dict[str, Callable[[int, int], Made]] = {
    "digits": _digits,
    "ppocr-cls": _task("ppocr-cls"),
    "ppocr-rec": _task("ppocr-rec"),
    "squeezenet": _light("squeezenet"),
    "resnet50": _light("resnet50"),
}


def dense_kernels(built: Any) -> dict[str, int]:
    """How many dense int8 kernels take each instruction form (by the kernel's name)."""
    from edgekit.compiler.backends.llvm.intrin import I16_256, I16_512, U8S8_256, U8S8_512, VNNI256, VNNI512

    names = [gv.name_hint for gv in built.lowered.get_global_vars()]
    forms = {"u8s8": f"({U8S8_256.name}|{U8S8_512.name})", "i16": f"({I16_256.name}|{I16_512.name})",
             "vnni": VNNI512.name, "vnni256": VNNI256.name}
    return {form: sum(bool(re.search(rf"(?<!depthwise_)(conv2d|matmul)_{isa}", n)) for n in names)
            for form, isa in forms.items()}  # fmt: skip


def latency(models: dict[str, onnx.ModelProto], feeds: dict[str, np.ndarray], mcpu: str, rounds: int, runs: int,
            threads: int) -> tuple[dict[str, float], dict[str, dict[str, int]]]:  # fmt: skip
    """10th-percentile latency (ms) of each model compiled for ``mcpu``, and its dense kernels' forms."""
    import tvm
    from tvm import relax

    from edgekit.compiler.backends.llvm.relax_build import build_cpu
    from edgekit.compiler.importer import import_onnx
    from edgekit.frontend.loader import load_model

    target = quantization.runnable_target(mcpu)
    vms, kernels = {}, {}
    for tag, model in models.items():
        mod, weights = import_onnx(load_model(model))[:2]
        built = build_cpu(mod, target, weights, num_threads=threads)
        kernels[tag] = dense_kernels(built)
        vm = relax.VirtualMachine(built.executable, tvm.cpu())
        vm.set_input("main", *[tvm.runtime.tensor(np.ascontiguousarray(v[:1])) for v in feeds.values()], *built.params)
        vms[tag] = vm
    return interleaved_p10(vms, rounds, runs, time.thread_time if threads == 1 else time.perf_counter), kernels



def _inner_loop(asm: str) -> list[str]:
    """The instructions of the smallest loop of ``asm`` that holds a ``vpmadd*`` (empty if none)."""
    lines = asm.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^(\.LBB\d+_\d+):", line))}
    best: list[str] = []
    for j, line in enumerate(lines):
        m = re.match(r"^\s+j\w+\s+(\.LBB\d+_\d+)", line)
        if m and labels.get(m.group(1), j) < j:
            body = [x for x in lines[labels[m.group(1)] + 1 : j + 1] if x.strip() and not x.strip().startswith((".", "#"))]
            if any("vpmadd" in x for x in body) and (not best or len(body) < len(best)):
                best = body
    return best


def mca_rates(model: onnx.ModelProto, mcpu: str, cpus: list[str]) -> dict[str, tuple[int, dict[str, float]]]:
    """Per form: how many dense kernels, and the median int8 products per cycle of their inner loops
    by llvm-mca CPU model."""
    import subprocess

    import tvm

    from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes
    from edgekit.compiler.importer import import_onnx
    from edgekit.frontend.loader import load_model

    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    mod, weights = import_onnx(load_model(model))[:2]
    n_in = int(mod["main"].attrs["num_input"])
    by_name = {p.name: np.asarray(w.numpy() if hasattr(w, "numpy") else w)
               for p, w in zip(mod["main"].params[n_in:], weights)}  # fmt: skip
    prepared, _ = prepare_cpu_module(mod, target, weights=by_name)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(target))(prepared)
    rates: dict[str, dict[str, list[float]]] = {}
    unrolled: dict[str, int] = {}
    for gv, func in scheduled.functions_items():
        found = re.search(r"(?:conv2d|matmul)_(u8s8|i16)_(?:256|512)", gv.name_hint)
        form = found.group(1) if found else None
        if form is None or "depthwise" in gv.name_hint:
            continue
        lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)
        body = _inner_loop(lib.inspect_source("asm"))
        if not body:  # reduction unrolled into straight-line code (e.g. a 1x1 head): no loop to model
            unrolled[form] = unrolled.get(form, 0) + 1
            continue
        # Products per instruction: vpmaddubsw 32 per ymm, vpmaddwd 16 (twice that on zmm);
        # in the u8s8 form the vpmaddwd only widen the pairs.
        macs = (sum(32 * (2 if "zmm" in x else 1) for x in body if "vpmaddubsw" in x)
                or sum(16 * (2 if "zmm" in x else 1) for x in body if "vpmaddwd" in x))
        for cpu in cpus:
            out = subprocess.run(["llvm-mca", f"-mcpu={cpu}", "-iterations=200"], input="\n".join(body),
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
            cycles = int(re.search(r"Total Cycles:\s+(\d+)", out).group(1)) / 200
            rates.setdefault(form, {}).setdefault(cpu, []).append(macs / cycles)
    if unrolled:
        print(f"llvm-mca: left out {sum(unrolled.values())} dense kernel(s) with no loop around the multiplies "
              f"({', '.join(f'{n} {f}' for f, n in unrolled.items())})", file=sys.stderr)  # fmt: skip
    return {form: (len(next(iter(per.values()))), {cpu: float(np.median(v)) for cpu, v in per.items()})
            for form, per in rates.items()}  # fmt: skip


def measure(name: str, cal: int, ev: int, timing: dict[str, Any] | None, mca: list[str]) -> list[dict[str, Any]]:
    fp32, calibration, evaluation, metric = CASES[name](cal, ev)
    rows, models = [], {"fp32": fp32}
    for bits in (8, 7):
        q = quantize(fp32, QuantConfig(weight_bits=bits), calibration=calibration, eval_data=evaluation,
                     metric=metric)  # fmt: skip
        out = q.report.outputs[0]
        rows.append({"model": name, "bits": bits, "sqnr": out.sqnr_db, "top1": out.top1_agreement,
                     "metric": (q.report.metric_fp32, q.report.metric_quantized), "eval": len(evaluation["labels"])
                     if "labels" in evaluation else len(next(iter(evaluation.values())))})  # fmt: skip
        models[f"int8_w{bits}"] = q.model
        if mca:
            rows[-1]["mca"] = mca_rates(q.model, timing["mcpu"] if timing else "haswell", mca)
    if timing:
        inputs = {k: v for k, v in evaluation.items() if k in {i.name for i in fp32.graph.input}}
        ms, kernels = latency(models, inputs, **timing)
        for row in rows:
            tag = f"int8_w{row['bits']}"
            row.update(ms=ms[tag], fp32_ms=ms["fp32"], kernels=kernels[tag])
    return rows


def render(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Command: `{command}`; CPU: {quantization.cpu_description()}; date: {date.today()}; "
        f"load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| model (eval samples) | weights | output SQNR dB | top-1 agree | task metric fp32 → int8 "
        "| dense kernels u8s8 / i16 | int8 ms | fp32 ms | int8/fp32 |",
        "|---|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        fp, q = r["metric"]
        task = "-" if fp is None else f"{100 * fp:.1f} % → {100 * q:.1f} %"
        agree = "-" if r["top1"] is None else f"{r['top1']:.1f} %"
        k = r.get("kernels")
        forms = "-" if k is None else f"{k['u8s8']} / {k['i16']}"
        timed = "- | - | -" if "ms" not in r else f"{r['ms']:.3f} | {r['fp32_ms']:.3f} | {r['ms'] / r['fp32_ms']:.2f}"
        lines.append(f"| {r['model']} ({r['eval']}) | {r['bits']}-bit | {r['sqnr']:.2f} | {agree} | {task} | {forms} "
                     f"| {timed} |")  # fmt: skip
    mca = [(r, form, n, per) for r in rows for form, (n, per) in r.get("mca", {}).items()]
    if mca:
        cpus = list(mca[0][3])
        lines += ["", "llvm-mca, dense int8 kernels' inner loops, products per cycle (median over kernels):", "",
                  "| model | weights | form (kernels) | " + " | ".join(cpus) + " |",
                  "|---|---|---|" + "---:|" * len(cpus)]  # fmt: skip
        lines += [f"| {r['model']} | {r['bits']}-bit | {form} ({n}) | " + " | ".join(f"{per[c]:.1f}" for c in cpus)
                  + " |" for r, form, n, per in mca]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,ppocr-cls,squeezenet", help="comma-separated subset of: "
                        + ", ".join(CASES))  # fmt: skip
    parser.add_argument("--calibration-samples", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--mcpu", default=None, help="also time fp32 and both int8 models compiled for this LLVM CPU")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mca", default="", help="comma-separated llvm-mca CPU models for the dense kernels' loops")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    timing = dict(mcpu=args.mcpu, rounds=args.rounds, runs=args.runs, threads=args.threads) if args.mcpu else None
    rows = []
    for name in args.models.split(","):
        rows += measure(name, args.calibration_samples, args.eval_samples, timing,
                        [c for c in args.mca.split(",") if c])  # fmt: skip
        print(render(rows[-2:], "partial"), file=sys.stderr, flush=True)
    command = (f".venv/bin/python benchmarks/weight_bits.py --models {args.models} --calibration-samples "
               f"{args.calibration_samples} --eval-samples {args.eval_samples}")  # fmt: skip
    if args.mcpu:
        command += f" --mcpu {args.mcpu} --rounds {args.rounds} --runs {args.runs} --threads {args.threads}"
    if args.mca:
        command += f" --mca {args.mca}"
    print(render(rows, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())

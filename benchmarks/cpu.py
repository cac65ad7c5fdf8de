"""CPU benchmark: onnxruntime fp32 vs edgekit untuned vs edgekit tuned, in one process.

Usage::

    python benchmarks/cpu.py                      # untuned only
    python benchmarks/cpu.py --trials 200         # also tune each model (200 trials)
    python benchmarks/cpu.py --models squeezenet,cls --repeat 20

Prints a markdown table (for BENCHMARKS.md). Every latency is the median of
interleaved runs (onnxruntime, edgekit untuned, edgekit tuned, again..., the
order rotated each round), so load from other processes hits all columns
alike; the ratios are the result, absolute times move with the machine's load.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LIGHT = "backend/test/data/light"
MODELS = {
    "squeezenet": ("onnx", f"{LIGHT}/light_squeezenet.onnx", None),
    "resnet50": ("onnx", f"{LIGHT}/light_resnet50.onnx", None),
    "shufflenet": ("onnx", f"{LIGHT}/light_shufflenet.onnx", None),
    "inception_v1": ("onnx", f"{LIGHT}/light_inception_v1.onnx", None),
    "ppocr_cls": ("rapidocr", "models/ch_ppocr_mobile_v2.0_cls_mobile.onnx", {"x": (1, 3, 48, 192)}),
    "ppocr_det": ("rapidocr", "models/PP-OCRv6_det_small.onnx", {"x": (1, 3, 320, 320)}),
    "ppocr_rec": ("rapidocr", "models/PP-OCRv6_rec_small.onnx", {"x": (1, 3, 48, 320)}),
}


def model_path(package: str, rel: str) -> Path:
    mod = __import__(package)
    return Path(mod.__file__).parent / rel


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS))
    parser.add_argument("--trials", type=int, default=0, help="MetaSchedule trials per model (0 = no tuned column)")
    parser.add_argument("--db", default=None, help="tuning database root (default: a fresh temporary folder)")
    parser.add_argument("--repeat", type=int, default=10, help="interleaved rounds per model")
    parser.add_argument("--threads", type=int, default=0, help="threads for both runtimes (0 = all cores)")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edgekit.compiler.cpu_pipeline import build_cpu, import_onnx, set_num_threads
    from edgekit.compiler.tuning import open_database, tune_model
    from edgekit.core.profiles import get_board
    from edgekit.frontend.loader import load_model

    threads = set_num_threads(args.threads)
    board, target = get_board("host")
    tvm_target = target.tvm_target()
    db_root = args.db or tempfile.mkdtemp(prefix="edgekit-bench-db-")
    rows = []
    for name in args.models.split(","):
        package, rel, shapes = MODELS[name]
        path = model_path(package, rel)
        try:
            prepared = load_model(str(path), shapes)
            mod, params = import_onnx(prepared)
            t0 = time.perf_counter()
            untuned = build_cpu(mod, tvm_target, params, num_threads=threads, use_shipped=False)
            build_s = time.perf_counter() - t0
        except Exception as exc:  # report the model as failed, go on with the others
            rows.append((name, None, None, None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"))
            print(f"{name}: {rows[-1][-1]}", file=sys.stderr)
            continue
        tuned = None
        note = f"build {build_s:.0f} s"
        if args.trials:
            report = tune_model(prepared, board, target, args.trials, db_root=db_root)
            tuned = build_cpu(mod, tvm_target, params, database=open_database(tvm_target, db_root), num_threads=threads)
            note += f"; tuned {report.trials_measured + report.trials_reused} trials, {report.seconds / 60:.1f} min, {len(tuned.tuned_kernels)} kernels"
        rng = np.random.default_rng(0)
        feeds = {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in prepared.inputs}
        so = ort.SessionOptions()
        if args.threads:
            so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(prepared.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        runners = {"ort": lambda sess=sess, feeds=feeds: sess.run(None, feeds)}
        for key, built in (("untuned", untuned), ("tuned", tuned)):
            if built is None:
                continue
            vm = relax.VirtualMachine(built.executable, tvm.cpu())
            fn = vm["main"]
            vargs = [tvm.runtime.tensor(v) for v in feeds.values()] + list(built.params)
            runners[key] = lambda fn=fn, vargs=vargs: fn(*vargs)
        for fn in runners.values():  # warm-up
            fn()
        samples: dict[str, list[float]] = {k: [] for k in runners}
        keys = list(runners)
        for r in range(args.repeat):
            # Rotate the order every round: the first call after the other
            # runtime pays for waking its thread pool (identical builds
            # measured up to 25% apart in a fixed order).
            for key in keys[r % len(keys):] + keys[: r % len(keys)]:
                samples[key].append(median_ms(runners[key], 3))
        med = {k: float(np.median(v)) for k, v in samples.items()}
        rows.append((name, med["ort"], med["untuned"], med.get("tuned"), note))
        print(f"{name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items()), file=sys.stderr)

    print(f"\nHost: {platform.processor() or platform.machine()}, target {tvm_target}, {threads} threads, "
          f"onnxruntime {ort.__version__}, TVM {tvm.__version__}\n")
    print("| model | onnxruntime fp32 ms | edgekit untuned ms | ratio | edgekit tuned ms | ratio | notes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    ratios_u, ratios_t = [], []
    for name, o, u, t, note in rows:
        if o is None:
            print(f"| {name} | | | | | | {note} |")
            continue
        ru = u / o
        ratios_u.append(ru)
        tcell, rtcell = "-", "-"
        if t is not None:
            ratios_t.append(t / o)
            tcell, rtcell = f"{t:.2f}", f"{t / o:.2f}x"
        print(f"| {name} | {o:.2f} | {u:.2f} | {ru:.2f}x | {tcell} | {rtcell} | {note} |")

    def geo(xs: list[float]) -> str:
        return f"{math.exp(sum(map(math.log, xs)) / len(xs)):.2f}x" if xs else "-"

    print(f"| **geometric mean** | | | **{geo(ratios_u)}** | | **{geo(ratios_t)}** | ratio = edgekit / onnxruntime |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

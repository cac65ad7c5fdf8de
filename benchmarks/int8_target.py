"""int8 vs fp32 latency of models compiled for an explicit x86 CPU, run on this machine.

``benchmarks/quantization.py`` measures the packages ``--board host`` builds
(this machine's own CPU). This script compiles the same fp32 and int8 models
(same quantization, same data) for a named LLVM CPU instead -- e.g.
``haswell``, the AVX2 kernels, on a machine with AVX-512 -- and times them
side by side in one process: rounds alternate the order, each engine runs
``--runs`` calls per round, and the figure is the 10th percentile of all
calls (a shared machine). The CPU must be able to run the named CPU's code.

A third build is timed with them: the fp32 build of the QDQ graph
(:func:`edgekit.frontend.qdq_graph.float_model`), what ``compile
--int8-choice auto`` ships when the whole model is faster in fp32; it should
run as fast as the fp32 model.

Usage::

    .venv/bin/python benchmarks/int8_target.py --mcpu haswell[,znver2] [--models ppocr-cls,squeezenet]
        [--rounds 10] [--runs 20] [--threads 2] [--profile N] [--arithmetic-lookups]
        [--baseline TREE] [--cpu-time] [--weight-bits 7|8|auto]

Several ``--mcpu`` names (comma-separated) build the models for each, and all
builds of one model are timed in the same interleaved rounds. ``--baseline
TREE`` (a source tree, e.g. a ``git archive`` snapshot of the commit before a
change) adds that tree's int8 build of the same quantized model in place of
the QDQ graph's fp32 build: the table then gives int8 before and after the
change beside fp32, and whether the two int8 builds' outputs are
bit-identical. All builds are then made the same way, each in a child
process with its tree first on the path, exported and loaded here. ``--cpu-time``
(one thread) times each call by the thread's CPU time, which other jobs on a
loaded machine do not inflate. ``--weight-bits 7`` (or 8) quantizes the int8
model with that weight width (``QuantConfig.weight_bits``); ``--weight-bits
auto`` quantizes each ``--mcpu`` as ``compress --board`` would for a board of
that CPU (7 bits for two-port AVX2 and AVX-512 without VNNI,
:mod:`edgekit.compress.weight_bits`), so each column is what that board ships;
without it the default ``QuantConfig()``, whose ``auto`` with no board is 8 bits.

``--profile N`` (with ``--threads 1``) adds each build's kernel CPU time on
one core by kind -- dense conv/matmul, depthwise, table lookups, pads,
other -- as the VM's instrumentation measures it with ``time.thread_time``,
on a second build of each made with ``exec_mode="bytecode"`` (the
instrumentation sees no call of a compiled ``main``; the timed builds are
what packages ship).
``--arithmetic-lookups`` builds the int8 model with its AVX2 table lookups
computed arithmetically in the producing kernels' epilogues where that is
exact (``backends/llvm/lookup.ARITHMETIC_MCPUS``), to measure that choice for
the ``--mcpu`` on this machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu import PROFILE_EXEC_MODE, tvm_kernel_profile  # noqa: E402
from quantization import CASES, cpu_description, runnable_target  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import build_cpu, set_num_threads  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.compress.weight_bits import choose_weight_bits  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.frontend.qdq_graph import float_model  # noqa: E402

logger = logging.getLogger("benchmarks.int8_target")


#: Kernel kinds of ``--profile``, by the first matching fragment of the kernel's name.
KINDS = (("depthwise", "depthwise"), ("lookup", "lookup"), ("pad", "pad"), ("conv2d", "conv / matmul"),
         ("matmul", "conv / matmul"))  # fmt: skip


def kernel_kinds(per_kernel: dict[str, float]) -> dict[str, tuple[float, int]]:
    """Milliseconds and kernel count per kind (``KINDS``; the VM's own builtins left out)."""
    out: dict[str, tuple[float, int]] = {}
    for symbol, ms in per_kernel.items():
        if symbol.startswith("vm."):
            continue
        kind = next((k for frag, k in KINDS if frag in symbol), "other")
        t, n = out.get(kind, (0.0, 0))
        out[kind] = (t + ms, n + 1)
    return out


def print_profile(name: str, vms: dict, runs: int) -> None:
    """Per-kind CPU time of each build's kernels on the calling thread (``time.thread_time``).

    ``vms``' executables must be bytecode builds (``exec_mode=PROFILE_EXEC_MODE``).
    """

    for tag, vm in vms.items():
        kinds = kernel_kinds(tvm_kernel_profile(vm, lambda vm=vm: vm.invoke_stateful("main"), runs, time.thread_time))
        total = sum(t for t, _n in kinds.values())
        parts = ", ".join(f"{k} {1e3 * t:.1f} ({n})" for k, (t, n) in sorted(kinds.items(), key=lambda kv: -kv[1][0]))
        print(f"{name} {tag}: {1e3 * total:.1f} us in kernels: {parts}", file=sys.stderr)


#: Run in a child process: ``tree model.onnx out_dir mcpu threads [exec_mode]`` builds the model
#: with ``tree`` first on the path and exports the library and its parameters. ``exec_mode``
#: ("bytecode" for profiles) goes to a tree's build_cpu that takes it: older trees build bytecode.
_BASELINE_BUILD = """
import inspect, sys
from pathlib import Path
tree, model, out, mcpu, threads = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
sys.path.insert(0, tree)
import numpy as np, tvm
from edgekit.compiler.backends.llvm.relax_build import build_cpu
from edgekit.compiler.importer import import_onnx
from edgekit.frontend.loader import load_model
mode = sys.argv[6] if len(sys.argv) > 6 else None
kw = {"exec_mode": mode} if mode and "exec_mode" in inspect.signature(build_cpu).parameters else {}
mod, weights = import_onnx(load_model(model))[:2]
built = build_cpu(mod, tvm.target.Target({"kind": "llvm", "mcpu": mcpu}), weights, num_threads=threads, **kw)
built.executable.export_library(str(out / "int8.so"))
np.savez(out / "params.npz", *[p.numpy() for p in built.params])
"""


def _baseline_vm(tree: str, model: Path, out: Path, mcpu: str, threads: int, exec_mode: str | None = None):
    """The int8 build of ``model`` by the source tree ``tree`` (a child process, exported), loaded here, and its parameters.

    ``exec_mode``: build_cpu's, where the tree's takes it (None: the tree's default).
    """
    import subprocess

    import tvm
    from tvm import relax

    out.mkdir(parents=True, exist_ok=True)
    root = str(Path(tree).resolve())
    cmd = [sys.executable, "-c", _BASELINE_BUILD, root, str(model), str(out), mcpu, str(threads),
           *([exec_mode] if exec_mode else [])]  # fmt: skip
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": root})
    params = np.load(out / "params.npz")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out / "int8.so")), tvm.cpu())
    return vm, [tvm.runtime.tensor(params[f"arr_{i}"]) for i in range(len(params.files))]


def _outputs(vm) -> list[np.ndarray]:
    vm.invoke_stateful("main")
    out = vm.get_outputs("main")
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


def target_weight_bits(mcpu: str) -> int:
    """The weight width ``QuantConfig(weight_bits="auto")`` gives a board whose code is ``-mcpu mcpu``."""
    import tvm

    board = SimpleNamespace(name=f"x86_64-{mcpu}", codegen="llvm", isa="x86_64",
                            tvm_target=lambda: tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))  # fmt: skip
    return choose_weight_bits(board).bits


def measure(name: str, mcpus: list[str], tmp: Path, rounds: int, runs: int, threads: int, profile: int = 0,
            baseline: str | None = None, clock: Callable[[], float] = time.perf_counter,
            weight_bits: int | str | None = None) -> dict[str, dict[str, float]]:  # fmt: skip
    """10th-percentile latency (ms), per ``mcpu``, of the int8 model, the fp32 model and the QDQ graph's fp32 build.

    ``weight_bits``: 7 or 8, ``"auto"`` (each ``mcpu``'s own, :func:`target_weight_bits`), or
    None (``QuantConfig()`` with no board: 8 bits).

    With ``baseline`` (a source tree) that tree's int8 build (``int8_before``)
    replaces the QDQ graph's, and ``same`` is 1.0 where its outputs equal the
    int8 build's. All builds of all ``mcpus`` are timed in the same
    interleaved rounds.
    """
    import tvm
    from tvm import relax

    case = CASES[name]()
    fp32 = tmp / f"{case.name}-fp32.onnx"
    onnx.save(case.fp32, str(fp32))
    bits_of = {m: (target_weight_bits(m) if weight_bits == "auto" else weight_bits) for m in mcpus}
    quantized: dict = {}  # weight bits -> (int8 model, its QDQ graph's fp32 model)
    for bits in dict.fromkeys(bits_of.values()):
        config = QuantConfig() if bits is None else QuantConfig(weight_bits=bits)
        tag = "" if bits is None else f"-w{bits}"
        int8 = quantize(str(fp32), config, calibration=case.calibration).save(tmp / f"{case.name}-int8{tag}.onnx")
        guard = tmp / f"{case.name}-qdq-fp32{tag}.onnx"
        onnx.save(float_model(onnx.load(str(int8))), str(guard))
        quantized[bits] = (int8, guard)
    feeds = {k: np.ascontiguousarray(v[:1]) for k, v in case.evaluation.items()}
    vms: dict = {}
    profiled: dict = {}  # bytecode builds of the same (--profile)
    for mcpu in mcpus:
        target = runnable_target(mcpu)
        int8, guard = quantized[bits_of[mcpu]]
        builds = (("int8", int8), ("fp32", fp32), ("qdq_fp32", guard)) if baseline is None else ()
        for tag, path in builds:
            mod, weights = import_onnx(load_model(str(path)))[:2]
            for into, mode in ((vms, None), *([(profiled, PROFILE_EXEC_MODE)] if profile else [])):
                built = build_cpu(mod, target, weights, num_threads=threads, exec_mode=mode)
                vm = relax.VirtualMachine(built.executable, tvm.cpu())
                vm.set_input("main", *[tvm.runtime.tensor(v) for v in feeds.values()], *built.params)
                into[(mcpu, tag)] = vm
        if baseline is not None:
            # Every build the same way (a child process, exported, loaded here): an in-process
            # build timed against a loaded one differed by -4 % (SqueezeNet) to +10 % (ResNet-50)
            # with the same kernels.
            for tag, tree, path in (("int8", str(REPO), int8), ("fp32", str(REPO), fp32),
                                    ("int8_before", baseline, int8)):  # fmt: skip
                for into, mode in ((vms, None), *([(profiled, PROFILE_EXEC_MODE)] if profile else [])):
                    where = tmp / f"{case.name}-{mcpu}-{tag}{'-' + mode if mode else ''}"
                    vm, params = _baseline_vm(tree, Path(path), where, mcpu, threads, mode)
                    vm.set_input("main", *[tvm.runtime.tensor(v) for v in feeds.values()], *params)
                    into[(mcpu, tag)] = vm
    # The runtime's thread pool runs the board's cores: the builds made in child processes
    # (--baseline) never set it here, and it stayed at every core of this machine (with
    # --cpu-time the calling thread's CPU time then counted its wait for the second thread).
    set_num_threads(threads)
    p10 = interleaved_p10(vms, rounds, runs, clock)
    out: dict[str, dict[str, float]] = {m: {t: v for (mm, t), v in p10.items() if mm == m} for m in mcpus}
    if baseline is not None:
        for m in mcpus:
            after, before = _outputs(vms[(m, "int8")]), _outputs(vms[(m, "int8_before")])
            out[m]["same"] = float(all(np.array_equal(a, b) for a, b in zip(after, before, strict=True)))
    if profile:
        print_profile(name, {f"{m} {t}": vm for (m, t), vm in profiled.items()}, profile)
    return out


def interleaved_p10(vms: dict, rounds: int, runs: int, clock: Callable[[], float] = time.perf_counter
                    ) -> dict[str, float]:  # fmt: skip
    """10th percentile (ms, by ``clock``) of each VM's ``main``: rounds of ``runs`` calls, order rotated each round.

    ``time.thread_time`` (one thread) leaves out the time a shared machine's
    other processes held the core, which the wall clock counts.
    """
    times: dict[str, list[float]] = {k: [] for k in vms}
    for r in range(rounds):
        for tag in list(vms)[r % len(vms):] + list(vms)[:r % len(vms)]:
            vm = vms[tag]
            for _ in range(3):
                vm.invoke_stateful("main")
            for _ in range(runs):
                t = clock()
                vm.invoke_stateful("main")
                times[tag].append((clock() - t) * 1e3)
    return {tag: float(np.percentile(v, 10)) for tag, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mcpu", required=True,
                        help="LLVM CPU name(s) to compile for, comma-separated (e.g. haswell,znver2)")
    parser.add_argument("--baseline", default=None, metavar="TREE",
                        help="a source tree whose int8 build of the same model is timed beside this tree's")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time each call by this thread's CPU time (use with --threads 1)")
    parser.add_argument("--models", default="ppocr-cls", help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--weight-bits", choices=("8", "7", "auto"), default=None,
                        help="quantize with this weight width, or 'auto': the width each --mcpu's board gets "
                             "(default: QuantConfig() with no board, 8 bits)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arithmetic-lookups", action="store_true",
                        help="compute AVX2 table lookups arithmetically in the producer's epilogue where exact "
                             "(backends/llvm/lookup_arith.py) instead of by the vpshufb kernel")  # fmt: skip
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print each build's kernel CPU time by kind (median of N inferences, microseconds, "
                             "kernel counts in brackets); meaningful with --threads 1")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.arithmetic_lookups:
        from edgekit.compiler.backends.llvm import lookup

        lookup.ARITHMETIC_MCPUS.add(args.mcpu)
    mcpus = args.mcpu.split(",")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-int8-target-") as tmp:
        for name in args.models.split(","):
            bits = args.weight_bits if args.weight_bits in (None, "auto") else int(args.weight_bits)
            lats = measure(name, mcpus, Path(tmp), args.rounds, args.runs, args.threads, args.profile, args.baseline,
                           clock, bits)  # fmt: skip
            for mcpu, lat in lats.items():
                code = f"{mcpu}, {target_weight_bits(mcpu)}-bit weights" if bits == "auto" else mcpu
                model = f"{name} | {code}" if len(mcpus) > 1 or args.baseline else name
                if args.baseline:
                    rows.append(f"| {model} | {lat['int8_before']:.3f} | {lat['int8']:.3f} | {lat['fp32']:.3f} "
                                f"| {lat['int8_before'] / lat['fp32']:.2f} | {lat['int8'] / lat['fp32']:.2f} "
                                f"| {lat['int8'] / lat['int8_before']:.3f} | {bool(lat['same'])} |")  # fmt: skip
                else:
                    rows.append(f"| {model} | {lat['int8']:.3f} | {lat['fp32']:.3f} | {lat['int8'] / lat['fp32']:.2f} "
                                f"| {lat['qdq_fp32']:.3f} | {lat['qdq_fp32'] / lat['fp32']:.2f} |")  # fmt: skip
                print(rows[-1], file=sys.stderr, flush=True)
    flags = (f"{f' --profile {args.profile}' if args.profile else ''}"
             f"{' --arithmetic-lookups' if args.arithmetic_lookups else ''}"
             f"{f' --baseline {args.baseline}' if args.baseline else ''}{' --cpu-time' if args.cpu_time else ''}"
             f"{f' --weight-bits {args.weight_bits}' if args.weight_bits else ''}")  # fmt: skip
    print(
        f"Command: `.venv/bin/python benchmarks/int8_target.py --mcpu {args.mcpu} --models {args.models} "
        f"--rounds {args.rounds} --runs {args.runs} --threads {args.threads}{flags}`; "
        f"{args.mcpu}-target code run on "
        f"{cpu_description()}; {args.threads} threads; 10th percentile of {args.rounds * args.runs} calls each"
        f"{' (CPU time)' if args.cpu_time else ''}; date: {date.today()}; load average {os.getloadavg()[0]:.1f} at the end.\n"
    )
    if args.baseline:
        print("| model | code for | int8 before ms | int8 ms | fp32 ms | before/fp32 | int8/fp32 | int8 after/before "
              "| outputs bit-identical |\n|---|---|---:|---:|---:|---:|---:|---:|---|")  # fmt: skip
    elif len(mcpus) > 1:
        print("| model | code for | int8 ms | fp32 ms | int8/fp32 | QDQ graph fp32 ms | QDQ fp32/fp32 |\n"
              "|---|---|---:|---:|---:|---:|---:|")  # fmt: skip
    else:
        print("| model | int8 ms | fp32 ms | int8/fp32 | QDQ graph fp32 ms | QDQ fp32/fp32 |\n|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

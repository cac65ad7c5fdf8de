"""Two source trees' int8 builds of the same models, timed side by side in one process.

For a change to the CPU kernels: build each model's int8 package (the
quantization of ``benchmarks/quantization.py``) once with tree A (e.g. a
``git archive HEAD`` snapshot) and once with tree B (the same snapshot with the
change), each build in its own process with that tree first on the path;
then load both in this process, check that their outputs are bit-identical,
and time them in interleaved rounds (order alternating), on one and on two
threads (``--cpu-time``: one thread, timed by its CPU time, for a loaded
machine). The figure is the 10th percentile of all calls.

Usage::

    git archive HEAD | tar -x -C /tmp/head
    .venv/bin/python benchmarks/tree_ab.py --a /tmp/head --b . --mcpu znver5 \\
        --models ppocr-det,ppocr-cls [--rounds 7] [--runs 10] [--cores 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: Run in a child process with the tree as ``sys.argv[1]``: builds and exports each model's int8 package.
#: ``sys.argv[6]``, if given, is build_cpu's ``exec_mode`` where the tree's takes it (older trees: bytecode).
_BUILD = """
import inspect, sys, tempfile
from pathlib import Path
tree, out, mcpu, models, cores = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4].split(","), int(sys.argv[5])
sys.path[:0] = [tree + "/benchmarks", tree]
import numpy as np, onnx, tvm
from quantization import CASES
from edgekit.compiler.backends.llvm.relax_build import build_cpu
from edgekit.compiler.importer import import_onnx
from edgekit.compress import QuantConfig, quantize
from edgekit.frontend.loader import load_model
for name in models:
    case = CASES[name]()
    tmp = Path(tempfile.mkdtemp())
    onnx.save(case.fp32, str(tmp / "fp32.onnx"))
    int8 = quantize(str(tmp / "fp32.onnx"), QuantConfig(), calibration=case.calibration).save(tmp / "int8.onnx")
    np.savez(out / f"{name}-feeds.npz", **{k: np.ascontiguousarray(v[:1]) for k, v in case.evaluation.items()})
    mod, weights = import_onnx(load_model(str(int8)))[:2]
    mode = sys.argv[6] if len(sys.argv) > 6 else None
    kw = {"exec_mode": mode} if mode and "exec_mode" in inspect.signature(build_cpu).parameters else {}
    built = build_cpu(mod, tvm.target.Target({"kind": "llvm", "mcpu": mcpu}), weights, num_threads=cores, **kw)
    built.executable.export_library(str(out / f"{name}.so"))
    np.savez(out / f"{name}-params.npz", *[p.numpy() for p in built.params])
"""


def _load(d: Path, name: str):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(d / f"{name}.so")), tvm.cpu())
    feeds, params = np.load(d / f"{name}-feeds.npz"), np.load(d / f"{name}-params.npz")
    vm.set_input("main", *[tvm.runtime.tensor(feeds[k]) for k in feeds.files],
                 *[tvm.runtime.tensor(params[f"arr_{i}"]) for i in range(len(params.files))])  # fmt: skip
    return vm


def _outputs(vm) -> list[np.ndarray]:
    vm.invoke_stateful("main")
    out = vm.get_outputs("main")
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


def tree_arguments(parser: argparse.ArgumentParser) -> None:
    """``--a``, ``--b``, ``--mcpu``, ``--models`` (also benchmarks/tree_ab_kernels.py's)."""
    parser.add_argument("--a", required=True, help="tree A (the baseline)")
    parser.add_argument("--b", required=True, help="tree B (the change)")
    parser.add_argument("--mcpu", required=True, help="LLVM CPU to compile for; this machine must run its code")
    parser.add_argument("--models", default="ppocr-cls", help="comma-separated names of benchmarks/quantization.py")
    parser.add_argument("--cores", type=int, default=1,
                        help="the board's cores both trees build for (build_cpu's num_threads: kernels are split for them)")


def build_trees(tmp: str, args: argparse.Namespace, exec_mode: str | None = None) -> dict[str, Path]:
    """Each tree's int8 packages of ``args.models`` for ``args.mcpu``, built in its own process: the folders by tag.

    ``exec_mode``: build_cpu's, where a tree's takes it ("bytecode" for the VM's instrumentation).
    """
    dirs = {"A": Path(tmp) / "a", "B": Path(tmp) / "b"}
    for tag, tree in (("A", args.a), ("B", args.b)):
        dirs[tag].mkdir()
        cmd = [sys.executable, "-c", _BUILD, str(Path(tree).resolve()), str(dirs[tag]), args.mcpu, args.models,
               str(args.cores), *([exec_mode] if exec_mode else [])]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=tmp)
    return dirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tree_arguments(parser)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread only, each call timed by this thread's CPU time (time.thread_time): "
                             "what other jobs on a loaded machine do not inflate")  # fmt: skip
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from int8_target import interleaved_p10
    from quantization import runnable_target

    from edgekit.compiler.backends.llvm.relax_build import set_num_threads

    runnable_target(args.mcpu)  # exits here rather than with SIGILL in a build's first call
    models = args.models.split(",")
    with tempfile.TemporaryDirectory(prefix="edgekit-tree-ab-") as tmp:
        dirs = build_trees(tmp, args)
        print(f"int8, {args.mcpu} code built for {args.cores} core(s); A = {args.a}, B = {args.b}; 10th percentile of "
              f"{args.rounds * args.runs} calls each, interleaved\n")  # fmt: skip
        print("| model | threads | A ms | B ms | B/A | outputs bit-identical | load |\n|---|---:|---:|---:|---:|---|---:|")
        for threads in (1,) if args.cpu_time else (1, 2):
            set_num_threads(threads)
            for name in models:
                vms = {tag: _load(d, name) for tag, d in dirs.items()}
                same = all(np.array_equal(x, y) for x, y in zip(_outputs(vms["A"]), _outputs(vms["B"]), strict=True))
                clock = time.thread_time if args.cpu_time else time.perf_counter
                p10 = interleaved_p10(vms, args.rounds, args.runs, clock)
                print(f"| {name} | {threads} | {p10['A']:.3f} | {p10['B']:.3f} | {p10['B'] / p10['A']:.3f} | {same} "
                      f"| {os.getloadavg()[0]:.1f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

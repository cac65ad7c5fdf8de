"""int8 latency of a structured-pruned model against the unpruned one, code for explicit x86 CPUs (#14 item 6).

``benchmarks/compression.py`` times the packages of the host board; this
script takes one model of ``benchmarks/quantization.py`` (default PP-OCR cls),
prunes it 30 % structured with each ``--round-to`` (the channel multiple
structured pruning keeps), quantizes the unpruned and the pruned models to
int8 (same calibration) and compiles each for every ``--mcpu``. It prints
how many kernel calls of each kind every build's ``main`` makes (pads,
lookups, conversions: a ragged channel count that costs a kernel of its own
shows here) and times all builds of one CPU in the same interleaved rounds
(one thread, the thread's CPU time, 10th percentile): the figure is pruned /
unpruned.

``--baseline TREE`` (a source tree, e.g. a ``git archive`` snapshot of the
commit before a change) builds every model with that tree too and times
both trees' builds side by side; it also says whether the two trees'
outputs are bit-identical. Every build is made the same way, in a child
process with its tree first on the path, exported and loaded here.
``--profile N`` adds this tree's kernel CPU time by kind per build
(``benchmarks/int8_target.py``'s, on bytecode builds of the same models).

Usage::

    .venv/bin/python benchmarks/pruned_int8.py --mcpu znver4,haswell [--models ppocr-cls] [--round-to 1,4]
        [--rounds 8] [--runs 20] [--baseline TREE] [--profile N]

Run it alone on the machine (it times).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu import PROFILE_EXEC_MODE  # noqa: E402
from int8_target import interleaved_p10, print_profile  # noqa: E402
from quantization import CASES, cpu_description  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import set_num_threads  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402

#: Run in a child process: ``tree model.onnx out_dir mcpu [exec_mode]`` builds the model (one thread) with
#: ``tree`` first on the path, exports the library and its parameters, and writes the kernels ``main`` calls.
_BUILD = """
import json, sys
from pathlib import Path
tree, model, out, mcpu = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
sys.path.insert(0, tree)
import numpy as np, tvm
from tvm import relax
from edgekit.compiler.backends.llvm.relax_build import build_cpu, prepare_cpu_module
from edgekit.compiler.importer import import_onnx
from edgekit.frontend.loader import load_model
target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
mod, weights = import_onnx(load_model(model))[:2]
kw = {"exec_mode": sys.argv[5]} if len(sys.argv) > 5 else {}
built = build_cpu(mod, target, weights, num_threads=1, **kw)
built.executable.export_library(str(out / "int8.so"))
np.savez(out / "params.npz", *[p.numpy() for p in built.params])
prepared, _ = prepare_cpu_module(mod, target)
calls = [v.args[0].name_hint for v in relax.analysis.get_var2val(prepared["main"]).values()
         if isinstance(v, relax.Call) and v.op.name == "relax.call_tir"]
(out / "kernels.json").write_text(json.dumps(calls))
"""

#: Kernel kinds counted, by the first pattern that matches a kernel's name.
KINDS = (("lookup-pad", r"^lookup_(pad|rows)"), ("lookup", r"^lookup"), ("pad", r"^pad"), ("fused pad", r"_pad\d*$"),
         ("conversion", r"^fused_cast\d+_add"), ("gate", r"^gate_multiply|^fused_cast\d+_subtract"),
         ("conv/matmul", r"conv2d|matmul"))  # fmt: skip


def kinds(calls: list[str]) -> dict[str, int]:
    """Kernel calls per kind (:data:`KINDS`; "other" for the rest)."""
    out: collections.Counter = collections.Counter()
    for name in calls:
        out[next((kind for kind, pattern in KINDS if re.search(pattern, name)), "other")] += 1
    return dict(out)


def int8_models(name: str, round_to: list[int], folder: Path) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """The model quantized unpruned and pruned 30 % with each ``round_to`` (name -> int8 ONNX path), and one input."""
    from edgekit.compress.passes import PassContext
    from edgekit.compress.payoff import run_staged
    from edgekit.compress.structured import StructuredConfig, StructuredPrunePass

    case = CASES[name]()
    variants = {"unpruned": case.fp32}
    for r in round_to:
        staged = run_staged(case.fp32, [StructuredPrunePass(StructuredConfig(ratio=0.3, round_to=r))],
                            PassContext(calibration=case.calibration))  # fmt: skip
        variants[f"pruned, round_to {r}"] = staged.model
    out = {}
    for i, (variant, fp32) in enumerate(variants.items()):
        src = folder / f"{name}-{i}.onnx"
        onnx.save(fp32, str(src))
        saved = quantize(str(src), QuantConfig(), calibration=case.calibration).save(folder / f"{name}-{i}-int8.onnx")
        out[variant] = Path(saved)
    return out, {k: np.ascontiguousarray(v[:1]) for k, v in case.evaluation.items()}


def build(tree: str, model: Path, out: Path, mcpu: str, feeds: dict[str, np.ndarray], exec_mode: str = "") -> tuple:
    """``tree``'s build of ``model`` for ``mcpu`` (a child process), loaded here with its input set,
    and the kernels its ``main`` calls."""
    import tvm
    from tvm import relax

    out.mkdir(parents=True, exist_ok=True)
    root = str(Path(tree).resolve())
    subprocess.run([sys.executable, "-c", _BUILD, root, str(model), str(out), mcpu, *([exec_mode] if exec_mode else [])],
                   check=True, env={**os.environ, "PYTHONPATH": root})  # fmt: skip
    params = np.load(out / "params.npz")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out / "int8.so")), tvm.cpu())
    vm.set_input("main", *[tvm.runtime.tensor(v) for v in feeds.values()],
                 *[tvm.runtime.tensor(params[f"arr_{i}"]) for i in range(len(params.files))])  # fmt: skip
    return vm, json.loads((out / "kernels.json").read_text())


def outputs(vm) -> list[np.ndarray]:
    vm.invoke_stateful("main")
    out = vm.get_outputs("main")
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mcpu", required=True, help="LLVM CPU name(s), comma-separated (their code must run here)")
    parser.add_argument("--models", default="ppocr-cls", help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--round-to", default="1,4", help="structured pruning's channel multiples, comma-separated")
    parser.add_argument("--baseline", default=None, metavar="TREE", help="a source tree built and timed beside this one")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print this tree's kernel CPU time by kind per build (median of N inferences, "
                             "microseconds; bytecode builds made for it)")  # fmt: skip
    args = parser.parse_args(argv)
    trees = {"this": str(REPO), **({"baseline": args.baseline} if args.baseline else {})}
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-pruned-int8-") as tmp:
        for name in args.models.split(","):
            paths, feeds = int8_models(name, [int(r) for r in args.round_to.split(",")], Path(tmp))
            for mcpu in args.mcpu.split(","):
                vms, calls = {}, {}
                for tree, root in trees.items():
                    for i, (variant, path) in enumerate(paths.items()):
                        where = Path(tmp) / f"{name}-{mcpu}-{tree}-{i}"
                        vms[(tree, variant)], calls[(tree, variant)] = build(root, path, where, mcpu, feeds)
                set_num_threads(1)
                if args.profile:
                    profiled = {f"{mcpu} {variant}": build(str(REPO), path, Path(tmp) / f"{name}-{mcpu}-p{i}", mcpu,
                                                           feeds, PROFILE_EXEC_MODE)[0]
                                for i, (variant, path) in enumerate(paths.items())}  # fmt: skip
                    print_profile(name, profiled, args.profile)
                p10 = interleaved_p10(vms, args.rounds, args.runs, time.thread_time)
                for (tree, variant), ms in p10.items():
                    same = ""
                    if tree == "this" and args.baseline:
                        pairs = zip(outputs(vms[(tree, variant)]), outputs(vms[("baseline", variant)]), strict=True)
                        same = f" | {all(np.array_equal(a, b) for a, b in pairs)}"
                    counted = ", ".join(f"{k} {n}" for k, n in sorted(kinds(calls[(tree, variant)]).items()))
                    rows.append(f"| {name} | {mcpu} | {tree} | {variant} | {ms:.4f} | {ms / p10[(tree, 'unpruned')]:.3f} "
                                f"| {len(calls[(tree, variant)])}: {counted}{same} |")  # fmt: skip
                    print(rows[-1], file=sys.stderr, flush=True)
    flags = (f"{f' --profile {args.profile}' if args.profile else ''}"
             f"{f' --baseline {args.baseline}' if args.baseline else ''}")  # fmt: skip
    print(f"Command: `.venv/bin/python benchmarks/pruned_int8.py --mcpu {args.mcpu} --models {args.models} "
          f"--round-to {args.round_to} --rounds {args.rounds} --runs {args.runs}{flags}`; code run on "
          f"{cpu_description()}; one thread, CPU time, 10th percentile of {args.rounds * args.runs} calls each; "
          f"date: {date.today()}; load average {os.getloadavg()[0]:.1f} at the end.\n")  # fmt: skip
    same = " | outputs bit-identical to baseline" if args.baseline else ""
    print(f"| model | code for | tree | int8 model | ms | / unpruned | kernel calls{same} |\n"
          f"|---|---|---|---|---:|---:|---|{'---|' if same else ''}")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

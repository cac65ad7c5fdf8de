"""Two source trees' fp32 *and* int8 builds of the same models, timed side by side in one process.

``benchmarks/tree_ab.py`` compares two trees' int8 builds; a change to the
default CPU schedules (:mod:`edgekit.compiler.backends.llvm.schedule`) moves
the fp32 builds too, and the int8/fp32 ratio that ``compile --int8-choice``
decides on. This script builds each model's fp32 and int8 (the quantization of
``benchmarks/quantization.py``) with tree A and with tree B, every build in a
child process with its tree first on the path, exported and loaded here
(``benchmarks/int8_target.py``'s ``--baseline`` method); checks that each
pair's outputs are bit-identical (fp32 outputs may differ in the last bits
where a schedule changes the order of a float sum: the largest difference is
printed) and times all four in interleaved rounds on one thread, by its CPU
time. The figure is the 10th percentile of all calls.

Usage::

    git archive HEAD | tar -x -C /tmp/head
    .venv/bin/python benchmarks/tree_ab_fp32.py --a /tmp/head --b . --mcpu haswell \\
        --models ppocr-cls,squeezenet [--rounds 8] [--runs 20]
"""

from __future__ import annotations

import argparse
import logging
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

from int8_target import _baseline_vm, _outputs, interleaved_p10  # noqa: E402
from quantization import CASES, cpu_description  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import set_num_threads  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402


def measure(name: str, a: str, b: str, mcpu: str, tmp: Path, rounds: int, runs: int) -> dict[str, float]:
    """p10 ms of ``{fp32,int8}_{A,B}`` for model ``name`` and each pair's largest output difference."""
    import tvm

    case = CASES[name]()
    fp32 = tmp / f"{name}-fp32.onnx"
    onnx.save(case.fp32, str(fp32))
    int8 = quantize(str(fp32), QuantConfig(), calibration=case.calibration).save(tmp / f"{name}-int8.onnx")
    feeds = {k: np.ascontiguousarray(v[:1]) for k, v in case.evaluation.items()}
    vms = {}
    for kind, path in (("fp32", fp32), ("int8", int8)):
        for tag, tree in (("A", a), ("B", b)):
            vm, params = _baseline_vm(tree, Path(path), tmp / f"{name}-{kind}-{tag}", mcpu, 1)
            vm.set_input("main", *[tvm.runtime.tensor(v) for v in feeds.values()], *params)
            vms[f"{kind}_{tag}"] = vm
    set_num_threads(1)
    out = interleaved_p10(vms, rounds, runs, time.thread_time)
    for kind in ("fp32", "int8"):
        pa, pb = _outputs(vms[f"{kind}_A"]), _outputs(vms[f"{kind}_B"])
        out[f"{kind}_diff"] = max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(pa, pb, strict=True))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="tree A (the baseline)")
    parser.add_argument("--b", required=True, help="tree B (the change)")
    parser.add_argument("--mcpu", required=True, help="LLVM CPU(s) to compile for, comma-separated")
    parser.add_argument("--models", default="ppocr-cls", help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-tree-ab-fp32-") as tmp:
        for mcpu in args.mcpu.split(","):
            for name in args.models.split(","):
                d = Path(tmp) / mcpu
                d.mkdir(exist_ok=True)
                r = measure(name, args.a, args.b, mcpu, d, args.rounds, args.runs)
                rows.append(f"| {name} | {mcpu} | {r['fp32_A']:.3f} | {r['fp32_B']:.3f} | {r['fp32_B'] / r['fp32_A']:.3f} "
                            f"| {r['fp32_diff']:.2g} | {r['int8_A']:.3f} | {r['int8_B']:.3f} "
                            f"| {r['int8_B'] / r['int8_A']:.3f} | {r['int8_diff']:.2g} "
                            f"| {r['int8_A'] / r['fp32_A']:.2f} | {r['int8_B'] / r['fp32_B']:.2f} |")  # fmt: skip
                print(rows[-1], file=sys.stderr, flush=True)
    print(f"Command: `.venv/bin/python benchmarks/tree_ab_fp32.py --a {args.a} --b {args.b} --mcpu {args.mcpu} "
          f"--models {args.models} --rounds {args.rounds} --runs {args.runs}`; code run on {cpu_description()}; "
          f"one thread, CPU time; 10th percentile of {args.rounds * args.runs} calls each; date: {date.today()}.\n")  # fmt: skip
    print("| model | code for | fp32 A ms | fp32 B ms | B/A | fp32 max diff | int8 A ms | int8 B ms | B/A "
          "| int8 max diff | int8/fp32 A | int8/fp32 B |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

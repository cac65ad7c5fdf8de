"""Two source trees' int8 builds, kernel by kernel: CPU time per inference on one thread, interleaved.

``benchmarks/tree_ab.py`` times whole inferences; a change that moves work
from one kernel into another (a copy merged into its producer) is a few
percent of a model and drowns in the load of a shared machine. This script
builds each tree's int8 package the same way (``tree_ab``'s build step, one
process per tree; ``exec_mode="bytecode"`` where a tree's ``build_cpu`` takes
it, since the instrumentation sees no call of a compiled ``main``), then, in one process on one thread, runs A and B in
alternating rounds with the VM's instrumentation and ``time.thread_time``
(other processes' load does not enter), and prints the 10th percentile per
inference of: all kernels, the kernels whose name matches ``--kernels``
(regular expressions, e.g. the copies), and each kernel of B whose name is a
kernel of A plus a suffix (``--suffix``: a producer that absorbed a copy),
next to that kernel of A.

Usage::

    git archive HEAD | tar -x -C /tmp/head
    .venv/bin/python benchmarks/tree_ab_kernels.py --a /tmp/head --b . --mcpu znver5 --models ppocr-det \\
        [--kernels 'pad_block|lookup_block'] [--suffix '_place_block\\d*'] [--rounds 10] [--runs 10]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tree_ab  # noqa: E402
from cpu import PROFILE_EXEC_MODE, check_instrumented  # noqa: E402


def _per_inference(vm, runs: int) -> list[dict[str, float]]:
    """Microseconds of CPU time of each kernel in each of ``runs`` inferences (the VM's builtins left out).

    The VM's executable must be a bytecode build (``PROFILE_EXEC_MODE``); a compiled one raises.
    """
    out: list[dict[str, float]] = []
    started: list[float] = []
    calls = [0]

    def instrument(_func, symbol, before, _ret, *_args):
        if before:
            calls[0] += 1
            started.append(time.thread_time())
        elif not str(symbol).startswith("vm."):
            out[-1][str(symbol)] += 1e6 * (time.thread_time() - started.pop())
        else:
            started.pop()
        return 0  # VMInstrumentReturnKind.kNoOp

    vm.set_instrument(instrument)
    try:
        for _ in range(runs):
            out.append(collections.defaultdict(float))
            vm.invoke_stateful("main")
    finally:
        vm.set_instrument(None)
    check_instrumented(calls[0])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tree_ab.tree_arguments(parser)
    parser.add_argument("--kernels", default="pad_block|lookup_block", help="regular expression: kernels to total")
    parser.add_argument("--suffix", default=r"_place_block\d*", help="regular expression: B's name = A's + this")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    from quantization import runnable_target

    from edgekit.compiler.backends.llvm.relax_build import set_num_threads

    runnable_target(args.mcpu)
    with tempfile.TemporaryDirectory(prefix="edgekit-tree-ab-kernels-") as tmp:
        dirs = tree_ab.build_trees(tmp, args, exec_mode=PROFILE_EXEC_MODE)  # instrumented: bytecode
        set_num_threads(1)
        print(f"int8, {args.mcpu} code, one thread; A = {args.a}, B = {args.b}; kernel CPU time per inference, "
              f"10th percentile of {args.rounds * args.runs} inferences each, interleaved\n")  # fmt: skip
        for name in args.models.split(","):
            vms = {tag: tree_ab._load(d, name) for tag, d in dirs.items()}
            same = all(np.array_equal(x, y) for x, y in zip(tree_ab._outputs(vms["A"]), tree_ab._outputs(vms["B"])))
            per: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
            for r in range(args.rounds):
                for tag in ("A", "B") if r % 2 == 0 else ("B", "A"):
                    per[tag] += _per_inference(vms[tag], args.runs)

            def p10(tag: str, keep) -> float:
                return float(np.percentile([sum(v for k, v in d.items() if keep(k)) for d in per[tag]], 10))

            print(f"{name} (outputs bit-identical: {same})")
            totals = (("all kernels", lambda k: True), (f"/{args.kernels}/", lambda k: re.search(args.kernels, k)))
            for label, keep in totals:
                a, b = p10("A", keep), p10("B", keep)
                print(f"  {label}: A {a:.1f} us, B {b:.1f} us, B - A {b - a:+.1f} us")
            for k in sorted(per["B"][0]):
                m = re.fullmatch(rf"(.*){args.suffix}", k)
                if m and m.group(1) in per["A"][0]:
                    a, b = p10("A", lambda x, n=m.group(1): x == n), p10("B", lambda x, n=k: x == n)
                    print(f"  {a:8.1f} -> {b:8.1f} us  {k[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

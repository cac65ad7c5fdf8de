"""Differential fuzzing of the compiler against onnxruntime (issue 16).

Each seeded random graph (:mod:`graphgen`: float32 for even seeds, QDQ int8
for odd ones) is compiled for every board and run once on its simulator
(``host`` runs in this process). Every (graph, board) case ends in one
outcome:

- ``match``: the outputs agree with onnxruntime's on the same model. Float32:
  max relative error (``edgekit.runtime.stats.max_relative_error``) within
  ``edgekit.runtime.agreement.agree_tolerance`` of the model's reduction
  length (1e-4 at least). int8: every output within :data:`INT8_STEPS`
  quantization steps of the *coarsest* activation scale in the graph. Integer
  kernels and onnxruntime's float reference may round a value that lies on a
  half step differently (an average pool whose window sum divides to x.5
  steps: edgekit's integer pool rounds it up, onnxruntime's float32 sum may
  land just below), and a later requantization to a finer scale shows that
  one step as several output steps (2.6 for a concat at a 2.6x finer scale,
  6.8 for ``x * relu(x)``); a miscompiled layer is off by tens to hundreds.
- ``refused``: compile raised a typed ``EdgekitError`` before anything ran.
- ``run-error``: a typed ``EdgekitError`` while running.
- ``mismatch``: outputs outside the tolerance, silently: a compiler bug.
- ``crash``: any other exception, or the worker process died.
- ``hang``: the case ran past ``--timeout`` (the worker is killed).

Cases run in a worker process (spawned, not forked: TVM's thread pool does
not survive a fork) so that a crash or a hang costs one case, not the run.

Long run::

    .venv/bin/python fuzz/differential.py --graphs 500 --json fuzz-500.json

The test suite runs a few seeds in-process (tests/sim/test_fuzz_differential.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphgen import FuzzGraph, random_graph  # noqa: E402

__all__ = ["BOARDS", "INT8_STEPS", "OUTCOMES", "run_case", "judge", "main"]

#: Boards every graph is compiled for (each runs on its simulator; host in-process).
BOARDS = ("host", "rv32-mcu-sim", "stm32h7", "pynq-z2")
#: int8 tolerance: quantization steps of the coarsest activation scale of the graph.
INT8_STEPS = 2
OUTCOMES = ("match", "refused", "run-error", "mismatch", "crash", "hang")


def graph_for(seed: int) -> FuzzGraph:
    """The graph of ``seed``: float32 for even seeds, int8 QDQ for odd ones."""
    return random_graph(seed, int8=bool(seed % 2))


def reference(graph: FuzzGraph) -> dict[str, np.ndarray]:
    """onnxruntime's outputs for the model as written (no graph rewrites, so
    QDQ pairs compute in float exactly as the model says)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(graph.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, graph.inputs)))


def _output_steps(graph: FuzzGraph) -> tuple[dict[str, float], float]:
    """Output name -> scale of the DequantizeLinear that produces it, and the
    coarsest activation scale (QuantizeLinear) in the graph."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in graph.model.graph.initializer}
    steps = {}
    for node in graph.model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[1] in inits:
            steps[node.output[0]] = float(np.max(inits[node.input[1]]))
    coarsest = max((float(np.max(inits[n.input[1]])) for n in graph.model.graph.node
                    if n.op_type == "QuantizeLinear" and n.input[1] in inits), default=0.0)  # fmt: skip
    return steps, coarsest


def judge(graph: FuzzGraph, outputs: dict[str, np.ndarray], ref: dict[str, np.ndarray],
          accumulation: int) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """``match`` or ``mismatch`` for one case, with the measured deviation."""
    from edgekit.runtime.agreement import agree_tolerance
    from edgekit.runtime.stats import max_relative_error

    detail: dict[str, Any] = {}
    ok = True
    steps, coarsest = _output_steps(graph) if graph.int8 else ({}, 0.0)
    for name, want in ref.items():
        got = outputs.get(name)
        if got is None or got.shape != want.shape:
            return "mismatch", {"output": name, "why": f"shape {None if got is None else got.shape} vs {want.shape}"}
        if not np.all(np.isfinite(got)):
            return "mismatch", {"output": name, "why": "non-finite values"}
        if graph.int8 and name in steps:
            dev = float(np.max(np.abs(got.astype(np.float64) - want)) / steps[name]) if got.size else 0.0
            tol = INT8_STEPS * max(1.0, coarsest / steps[name])
            detail[name] = {"steps": dev, "tolerance_steps": tol}
            ok &= dev <= tol + 1e-6
        else:
            err = max_relative_error(got, want)
            tol = agree_tolerance(accumulation)
            detail[name] = {"max_rel_error": err, "tolerance": tol}
            ok &= bool(err <= tol)
    return ("match" if ok else "mismatch"), detail


def run_case(seed: int, board: str, workdir: Path) -> dict[str, Any]:
    """Compiles and runs graph ``seed`` on ``board``; the outcome and details."""
    from edgekit.compiler.backend import CompileOptions
    from edgekit.compiler.backends.npu.section import NpuSection
    from edgekit.compiler.driver import compile_model
    from edgekit.package import open_package
    from edgekit.core.errors import EdgekitError
    from edgekit.core.profiles import load_profiles
    from edgekit.runtime.agreement import accumulation_length
    from edgekit.runtime.runner import open_runner

    started = time.monotonic()
    graph = graph_for(seed)
    case: dict[str, Any] = {"seed": seed, "board": board, "int8": graph.int8, "ops": graph.ops}
    pkg_path = workdir / f"fuzz-{seed}-{board}.ekpkg"
    try:
        # int8 graphs are checked as integer code: no layer moved to fp32 by timing.
        compile_model(graph.model, board, pkg_path, options=CompileOptions(int8_choice="int8"))
    except EdgekitError as exc:
        return {**case, "outcome": "refused", "error": type(exc).__name__, "message": str(exc)[:400],
                "seconds": time.monotonic() - started}  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - an untyped error is exactly what the fuzzer looks for
        return {**case, "outcome": "crash", "stage": "compile", "error": type(exc).__name__,
                "message": traceback.format_exc()[-1500:], "seconds": time.monotonic() - started}  # fmt: skip
    try:
        package = open_package(pkg_path)
        npu = NpuSection.of(package.manifest)
        if npu is not None:  # how much the accelerator itself ran (the rest runs on the board's CPU)
            case["npu_layers"] = npu.layers
        runner = open_runner(package, load_profiles().board(board), sim=True)
        try:
            outputs = runner.run(graph.inputs)
        finally:
            runner.close()
        outcome, detail = judge(graph, outputs, reference(graph), accumulation_length(package))
    except EdgekitError as exc:
        return {**case, "outcome": "run-error", "error": type(exc).__name__, "message": str(exc)[:400],
                "seconds": time.monotonic() - started}  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        return {**case, "outcome": "crash", "stage": "run", "error": type(exc).__name__,
                "message": traceback.format_exc()[-1500:], "seconds": time.monotonic() - started}  # fmt: skip
    finally:
        pkg_path.unlink(missing_ok=True)
    return {**case, "outcome": outcome, "detail": detail, "seconds": time.monotonic() - started}


def _worker(jobs: Any, results: Any, workdir: str) -> None:
    import logging

    logging.disable(logging.WARNING)  # the table is the output; TVM and compile chatter are not
    while True:
        job = jobs.recv()
        if job is None:
            return
        results.send(run_case(job[0], job[1], Path(workdir)))


class _Pool:
    """One spawned worker, replaced when it dies or overruns a case."""

    def __init__(self, workdir: str) -> None:
        self.ctx = mp.get_context("spawn")
        self.workdir = workdir
        self.proc: Any = None

    def _start(self) -> None:
        self.jobs, child_jobs = self.ctx.Pipe()
        self.results, child_results = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child_jobs, child_results, self.workdir), daemon=True)
        self.proc.start()

    def run(self, seed: int, board: str, timeout: float) -> dict[str, Any]:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        started = time.monotonic()
        self.jobs.send((seed, board))
        if self.results.poll(timeout):
            try:
                return self.results.recv()
            except EOFError:
                pass
        alive = self.proc.is_alive()
        self.proc.kill()
        self.proc.join(10)
        self.proc = None
        outcome = "hang" if alive else "crash"
        return {"seed": seed, "board": board, "outcome": outcome, "error": "worker " + ("timed out" if alive else "died"),
                "seconds": time.monotonic() - started}  # fmt: skip

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.jobs.send(None)
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()


def summarize(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Outcome counts per board and in total, and the refusal reasons."""
    per_board: dict[str, Counter] = {}
    for c in cases:
        per_board.setdefault(c["board"], Counter())[c["outcome"]] += 1
    total = Counter(c["outcome"] for c in cases)
    reasons = Counter(f"{c['board']}: {c.get('error', '')}: {str(c.get('message', '')).split(':')[0][:80]}"
                      for c in cases if c["outcome"] in ("refused", "run-error"))  # fmt: skip
    npu = [c for c in cases if "npu_layers" in c]
    return {"cases": len(cases), "graphs": len({c["seed"] for c in cases}), "total": dict(total),
            "per_board": {b: dict(v) for b, v in per_board.items()}, "reasons": dict(reasons.most_common(20)),
            "npu_cases_with_accelerator_layers": sum(1 for c in npu if c["npu_layers"]),
            "npu_cases": len(npu)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=20, help="how many seeds to run (default 20)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seeds", default="", help="comma-separated seeds to run instead (e.g. to re-check findings)")
    parser.add_argument("--boards", default=",".join(BOARDS), help="comma-separated board names")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one case may take (compile + run)")
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop starting new graphs after this long")
    parser.add_argument("--json", metavar="FILE", help="write every case and the summary here")
    args = parser.parse_args(argv)
    boards = [b for b in args.boards.split(",") if b]
    cases: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgekit-fuzz-") as tmp:
        pool = _Pool(tmp)
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x] or range(args.first_seed, args.first_seed + args.graphs)
            for seed in seeds:
                if args.max_minutes and time.monotonic() - started > args.max_minutes * 60:
                    print(f"stopped after {args.max_minutes} min", flush=True)
                    break
                for board in boards:
                    case = pool.run(seed, board, args.timeout)
                    cases.append(case)
                    print(f"seed {seed:4d} {'int8' if seed % 2 else 'fp32'} {board:13s} {case['outcome']:9s} "
                          f"{case.get('seconds', 0):6.1f} s {case.get('error', '')}", flush=True)  # fmt: skip
                if args.json:
                    Path(args.json).write_text(json.dumps({"summary": summarize(cases), "cases": cases}, indent=1,
                                                          default=float))  # fmt: skip
        finally:
            pool.close()
    summary = summarize(cases)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "cases": cases}, indent=1, default=float))
    bad = sum(summary["total"].get(k, 0) for k in ("mismatch", "crash", "hang"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

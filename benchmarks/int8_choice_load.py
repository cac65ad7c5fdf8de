"""The int8/fp32 choice on a loaded machine (issue #14, item 4).

Quantizes a model (``QuantConfig()``) and compiles it for the host with
``--int8-choice auto``, once idle and once with ``--hogs`` busy processes
(``python -c "while 1: pass"``) started when the choice begins (after the int8
build) and stopped when the compile ends, or after ``--max-load`` seconds.
Prints each compile's decision, whole-model times and the manifest's
``int8_choice.noise``. Run it under ``flock -x /tmp/edgekit-heavy.lock``: the
load is made on purpose, other timings must not share it.

Usage::

    .venv/bin/python benchmarks/int8_choice_load.py [--model ppocr-cls] [--hogs 2] [--budget 10]
        [--mcpu haswell] [--max-load 170]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from int8_choice import board_for  # noqa: E402
from quantization import CASES, cpu_description  # noqa: E402

from edgekit.compiler.backend import CompileOptions  # noqa: E402
from edgekit.compiler.backends.llvm.int8_choice import Int8Choice  # noqa: E402
from edgekit.compiler.driver import compile_model  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402


class Load:
    """Busy processes from the first ``int8-choice`` progress message until :meth:`stop` or ``max_s``."""

    def __init__(self, hogs: int, max_s: float) -> None:
        self.hogs, self.max_s = hogs, max_s
        self.procs: list[subprocess.Popen] = []
        self.started: float | None = None
        self.seconds = 0.0

    def progress(self, stage: str, message: str) -> None:
        if stage == "int8-choice" and self.hogs and self.started is None:
            self.started = time.perf_counter()
            self.procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(self.hogs)]
            threading.Timer(self.max_s, self.stop).start()

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        if self.procs and self.started is not None and not self.seconds:
            self.seconds = time.perf_counter() - self.started


def compile_once(model: Path, board: str, dirs: list[Path], out: Path, hogs: int, budget: float,
                 max_load: float) -> dict[str, object]:  # fmt: skip
    load = Load(hogs, max_load)
    t0 = time.perf_counter()
    try:
        result = compile_model(str(model), board, out, options=CompileOptions(int8_choice_budget_s=budget),
                               progress=load.progress, board_dirs=dirs)  # fmt: skip
    finally:
        load.stop()
    choice = Int8Choice.of(result.manifest)
    assert choice is not None
    return {"hogs": hogs, "load_s": round(load.seconds, 1), "compile_s": round(time.perf_counter() - t0, 1),
            "decision": choice.decision, "model_ms": choice.model_ms, "reason": choice.reason,
            "layers_timed": sum(c.int8_ms is not None for c in choice.layers), "noise": choice.noise.to_json()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ppocr-cls", choices=sorted(CASES))
    p.add_argument("--hogs", type=int, default=2, help="busy processes during the loaded compile")
    p.add_argument("--budget", type=float, default=10.0, help="--int8-choice-budget")
    p.add_argument("--mcpu", default="", help="compile for this x86 CPU instead of the host's (its code must run here)")
    p.add_argument("--max-load", type=float, default=170.0, help="stop the busy processes after this many seconds")
    args = p.parse_args(argv)
    print(f"# {cpu_description()}; {time.strftime('%Y-%m-%d')}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-int8-load-") as tmp:
        case = CASES[args.model]()
        fp32 = Path(tmp) / "fp32.onnx"
        onnx.save(case.fp32, str(fp32))
        int8 = quantize(str(fp32), QuantConfig(), calibration=case.calibration).save(Path(tmp) / "int8.onnx")
        board, dirs = board_for(args.mcpu, 0, Path(tmp) / "board")
        for hogs in (0, args.hogs):
            row = compile_once(Path(int8), board, dirs, Path(tmp) / f"m{hogs}.ekpkg", hogs, args.budget, args.max_load)
            print(json.dumps({"model": args.model, "board": board, **row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

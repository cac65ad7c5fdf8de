"""Flash, RAM and cycles of dense vs bitmask-sparse weights on a simulated MCU.

The example digits CNN is pruned with edgekit's own unstructured magnitude
pruning (global threshold, first and last layers left dense) at a few
sparsities, optionally quantized to int8, and compiled for the board twice:
``--weight-storage dense`` and ``--weight-storage sparse``. Both packages run
in the board's simulator on the same inputs; the outputs must be the same
bits (the decoder is lossless) and are compared with onnxruntime. Prints a
markdown table for BENCHMARKS.md.

Usage::

    .venv/bin/python benchmarks/weight_storage.py [--board rv32-mcu-sim] [--sparsity 0.5,0.6,0.7]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgekit.compiler.backend import CompileOptions
from edgekit.compiler.backends.aot_c.section import AotSection
from edgekit.compiler.driver import compile_model
from edgekit.package import open_package
from edgekit.compress import QuantConfig, quantize
from edgekit.compress.prune import PruneConfig, prune_unstructured
from edgekit.core.profiles import get_board
from edgekit.examples.digits import example_inputs_path, example_model_path, load_digits_data
from edgekit.runtime.mcu import McuRunner


def _run(pkg: Path, board_name: str, x: np.ndarray, runs: int) -> tuple[np.ndarray, int]:
    board = get_board(board_name)[0]
    with McuRunner(open_package(pkg), board, sim=True) as runner:
        out = np.concatenate([runner.run({"input": x[i : i + 1]})["logits"] for i in range(len(x))])
        cycles = runner.time_runs({"input": x[:1]}, runs=runs, warmup=1).cycles
    if len(set(cycles)) != 1:
        raise RuntimeError(f"cycle counts differ between runs: {cycles}")
    return out, int(cycles[0])


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="rv32-mcu-sim")
    ap.add_argument("--sparsity", default="0.5,0.6,0.7", help="comma-separated pruning targets")
    ap.add_argument("--samples", type=int, default=8, help="example inputs run on each package")
    ap.add_argument("--runs", type=int, default=2, help="timed runs per package (cycles are deterministic)")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    board = get_board(args.board)[0]
    x = np.load(example_inputs_path())["input"][: args.samples]
    calibration = {"input": load_digits_data().x_train[:128]}
    base = onnx.load(str(example_model_path()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="ek-ws-") as tmp:
        for sparsity in (float(s) for s in args.sparsity.split(",")):
            pruned = prune_unstructured(base, PruneConfig(sparsity=sparsity))
            for dtype in ("fp32", "int8"):
                model = pruned.model
                if dtype == "int8":
                    model = quantize(model, QuantConfig(), calibration=calibration).model
                res = {}
                for mode in ("dense", "sparse"):
                    pkg = Path(tmp) / f"{sparsity}-{dtype}-{mode}.ekpkg"
                    man = compile_model(model, args.board, pkg, options=CompileOptions(weight_storage=mode)).manifest
                    out, cycles = _run(pkg, args.board, x, args.runs)
                    res[mode] = (man, out, cycles)
                (dman, dout, dcyc), (sman, sout, scyc) = res["dense"], res["sparse"]
                want = _ort(model, x)
                err = float(np.abs(sout - want).max() / np.abs(want).max())
                dm, sm, storage = dman.memory or {}, sman.memory or {}, AotSection.of(sman).weight_storage
                rows.append([
                    f"{pruned.sparsity * 100:.0f} %", dtype,
                    f"{storage.sparse_tensors} / {len(storage.tensors)}",
                    f"{dm['weight_bytes']:,} → {sm['weight_bytes']:,} ({100 * (sm['weight_bytes'] / dm['weight_bytes'] - 1):+.0f} %)",
                    f"{dm['code_bytes']:,} → {sm['code_bytes']:,}",
                    f"{dm['weight_bytes'] + dm['code_bytes']:,} → {sm['weight_bytes'] + sm['code_bytes']:,}",
                    f"{dm['arena_bytes']:,} → {sm['arena_bytes']:,}",
                    f"{sm['decode_scratch_bytes']:,}",
                    f"{dcyc / 1e6:.3f} M → {scyc / 1e6:.3f} M ({100 * (scyc / dcyc - 1):+.1f} %)",
                    "yes" if sout.tobytes() == dout.tobytes() else "NO",
                    f"{err:.1e}",
                ])  # fmt: skip
                print(f"done {sparsity} {dtype} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    print(f"digits CNN on `{args.board}` ({board.clock_hz / 1e6:.0f} MHz, {board.memory.ram_bytes // 1024} KiB RAM), "
          f"{date.today().isoformat()}, {platform.machine()}, {args.samples} inputs, "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    print()
    print("| pruned | dtype | sparse tensors | weights B dense → stored | code B | flash B (weights + code) "
          "| arena B | decode scratch B | cycles / inference | same bits | max rel err vs onnxruntime |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the layer's accumulator bound saves in the MCU int8 kernels' rounding (issue #14).

The C kernels (``firmware_stubs/nn/ek_nn_s8.c``) round a channel with a
shift ``n > 32`` from the product's high word, half up (one SMMLA on
Cortex-M), wherever no product can be exactly half-way, and from both words,
half to even (three more instructions, and the generic requantization loop
instead of the depthwise row kernel) where one can
(``core.fixedpoint.ties_possible``). This script compiles each model twice
per board -- "before": ``ties_possible`` given an int32's bound, as the
kernels were chosen until 2026-12-06; "after": the layer's own bound
(``core.fixedpoint.dot_bound``, the one the integer lowering uses) as
committed -- and counts the executed instructions of one inference in the
board's unicorn simulator (``benchmarks/mcu.py``'s measurement: float I/O,
default compile options, the error against onnxruntime's QDQ graph) and the
kernel channels that take the two-word form.

Usage::

    .venv/bin/python benchmarks/mcu_rounding.py [--board stm32h7 --board rv32-mcu-sim]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcu import _measure, model_files  # noqa: E402

import edgekit.compiler.backends.aot_c.nn as nn  # noqa: E402


@contextlib.contextmanager
def _forms(int32_bound: bool, counts: dict[str, int]) -> Iterator[None]:
    """Counts the kernel channels of each form; with ``int32_bound``, chooses them as before."""
    shifts, ties = nn._kernel_shifts, nn.ties_possible

    def counted(mult: np.ndarray, shift: np.ndarray, acc_bound: np.ndarray | int) -> np.ndarray:
        out = shifts(mult, shift, acc_bound)
        counts["channels"] += out.size
        counts["words"] += int(np.sum(out > 96))
        return out

    nn._kernel_shifts = counted
    if int32_bound:
        nn.ties_possible = lambda m, n, bound=None: ties(m, n)
    try:
        yield
    finally:
        nn._kernel_shifts, nn.ties_possible = shifts, ties


def _err(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", action="append", default=None)
    args = parser.parse_args(argv)
    boards = args.board or ["stm32h7", "rv32-mcu-sim"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-mcu-rounding-") as tmp:
        out = Path(tmp)
        for name, _, int8 in model_files(out):
            for board in boards:
                row: dict = {"board": board, "model": name}
                for key, int32_bound in (("before", True), ("after", False)):
                    counts = {"channels": 0, "words": 0}
                    with _forms(int32_bound, counts):
                        row[key] = _measure(int8, board, out, f"{board}-{name}-{key}", row, key)
                    row[f"{key}_words"], row["channels"] = counts["words"], counts["channels"]
                rows.append(row)
    print(f"Command: `.venv/bin/python benchmarks/mcu_rounding.py {' '.join('--board ' + b for b in boards)}`; "
          f"date: {date.today()}; executed instructions of one int8 inference, unicorn simulator.\n")  # fmt: skip
    print("| board | model | two-word channels before / after (of all) | instructions before | after | after / before "
          "| max rel err vs onnxruntime before / after |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['board']} | {r['model']} | {r['before_words']} / {r['after_words']} (of {r['channels']}) | "
              f"{r['before']:,} | {r['after']:,} | {r['after'] / r['before']:.4f} | "
              f"{_err(r['before_err'])} / {_err(r['after_err'])} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

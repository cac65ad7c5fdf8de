"""Executed instructions per inference of raspberry-pi-4 (aarch64) packages: int8 vs fp32.

For the digits CNN and rapidocr's PP-OCR text-angle classifier, the Linux
board's static runner (the AOT C that ``edgekit compile --board
raspberry-pi-4`` builds with zig, ``-mcpu=cortex_a72``) of the int8 model
(``QuantConfig()``, int8 conv/depthwise/matmul on edgekit's C kernels,
firmware_stubs/nn/ek_nn_s8.c) and of the fp32 model is run once under
qemu-user and its executed instructions are counted from the
translation-block trace (benchmarks/requant_forms.py's method:
deterministic, the runner's start-up included). The int8 row also gives the
part spent in the C kernels (functions ``ek_nn_*``). These are qemu-user
instruction counts, not Cortex-A72 time.

To compare two trees, copy this script into a snapshot of the other tree
(``git archive HEAD | tar -x -C /tmp/snap``) and run it there too.

Usage::

    .venv/bin/python benchmarks/neon_int8.py [--models digits,ppocr-cls]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from requant_forms import QEMU, build_runner, executed, int8_model, model_case  # noqa: E402

from edgekit.frontend.loader import load_model  # noqa: E402

BOARD = "raspberry-pi-4"


def measure(name: str, tmp: Path) -> dict[str, int]:
    prepared = int8_model(name, tmp)
    work = tmp / "int8"
    work.mkdir()
    runner, kernels = build_runner(prepared, BOARD, True, work)
    int8 = executed(runner, "aarch64", prepared, kernels)
    fp32_path = tmp / f"{name}-fp32.onnx"
    fp32_path.write_bytes(model_case(name)[0].SerializeToString())
    fp32 = load_model(str(fp32_path))
    work = tmp / "fp32"
    work.mkdir()
    runner, kernels = build_runner(fp32, BOARD, True, work)
    return {"int8": int8["total"], "int8_c_kernels": int8["c_int8"], "fp32": executed(runner, "aarch64", fp32, kernels)["total"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,ppocr-cls")
    args = parser.parse_args(argv)
    if shutil.which(QEMU["aarch64"]) is None:
        print("needs qemu-aarch64: apt-get install qemu-user", file=sys.stderr)
        return 2
    print("| model | int8 executed (C int8 kernels' part) | fp32 executed | int8 / fp32 |")
    print("|---|---|---|---|")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="neon-int8-") as tmp:
            row = measure(name, Path(tmp))
        print(f"| {name} | {row['int8']:,} ({row['int8_c_kernels']:,}) | {row['fp32']:,} | "
              f"{row['int8'] / row['fp32']:.2f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

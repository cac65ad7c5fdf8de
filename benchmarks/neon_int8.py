"""Executed instructions per inference of Linux board packages: int8 vs fp32.

For the digits CNN and rapidocr's PP-OCR text-angle classifier, the Linux
board's static runner (the AOT C that ``edgekit compile --board BOARD``
builds with zig: ``-mcpu=cortex_a72`` for raspberry-pi-4, ``cortex_a76`` (SDOT
kernels) for raspberry-pi-5, ``sifive_u74`` for visionfive2, ``spacemit_x60+v-zicond``
(RVV kernels) for bpi-f3) of the int8 model (``QuantConfig()``, int8
conv/depthwise/matmul on edgekit's C kernels, firmware_stubs/nn/ek_nn_s8.c)
and of the fp32 model is run once under qemu-user and its executed
instructions are counted from the translation-block trace
(benchmarks/requant_forms.py's method: deterministic, the runner's start-up
included; qemu emulates the CPU the board profile's simulator names, e.g.
``-cpu cortex-a76``, ``-cpu rv64,v=true,vlen=256,vext_spec=v1.0``). The int8 row also gives the part spent in the C kernels
(functions ``ek_nn_*``); ``--functions N`` lists the N int8 functions that
execute most. ``--check`` also runs the int8 model with every int8 layer on
TVM's integer lowering (``int8_kernels=False``; for bpi-f3 visionfive2's, see
:data:`CHECK_BOARD`) and fails unless the outputs are bit-identical. These are qemu-user instruction counts, not board time.

To compare two trees, copy this script into a snapshot of the other tree
(``git archive HEAD | tar -x -C /tmp/snap``) and run it there too.

Usage::

    .venv/bin/python benchmarks/neon_int8.py [--board raspberry-pi-5] [--models digits,ppocr-cls] [--functions 12] [--check]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from requant_forms import QEMU, build_runner, executed_by_function, int8_model, model_case  # noqa: E402

from edgekit.compiler.backends.llvm.linux_cross import linux_arch  # noqa: E402
from edgekit.core.profiles import get_board  # noqa: E402
from edgekit.frontend.loader import PreparedModel, load_model  # noqa: E402

BOARDS = ("raspberry-pi-4", "raspberry-pi-5", "visionfive2", "bpi-f3")
#: ``--check``'s reference build where the board's own kernels-off build cannot run under
#: qemu-user: qemu 7.2 (Debian 12) aborts on the ``vfncvt.rtz`` that LLVM vectorizes TVM's float
#: -> int8 quantize into for RVV (``decode_save_opc: Assertion `ctx->insn_start != NULL'``), so
#: bpi-f3 is checked against visionfive2's (RV64GC) integer lowering: same int8 arithmetic, scalar code.
CHECK_BOARD = {"bpi-f3": "visionfive2"}


def _outputs(runner: Path, prepared: PreparedModel) -> list[bytes]:
    return [(runner.parent / f"out{i}.bin").read_bytes() for i in range(len(prepared.outputs))]


def measure(name: str, board: str, tmp: Path, check: bool = False) -> dict:
    """Executed instructions of the int8 (kernels on) and fp32 runners; with ``check``, the kernels-off comparison."""
    arch = linux_arch(get_board(board)[1])
    prepared = int8_model(name, tmp)
    row: dict = {}
    for int8_kernels in (True, False) if check else (True,):
        work = tmp / f"int8-{int8_kernels}"
        work.mkdir()
        runner, _kernels = build_runner(prepared, board if int8_kernels else CHECK_BOARD.get(board, board), int8_kernels, work)
        functions = executed_by_function(runner, arch, prepared)
        if int8_kernels:
            row["int8"], row["functions"], outs = sum(functions.values()), functions, _outputs(runner, prepared)
        elif _outputs(runner, prepared) != outs:
            raise RuntimeError(f"{name} on {board}: int8 outputs differ with the C kernels off")
    fp32_path = tmp / f"{name}-fp32.onnx"
    fp32_path.write_bytes(model_case(name)[0].SerializeToString())
    fp32 = load_model(str(fp32_path))
    work = tmp / "fp32"
    work.mkdir()
    runner, _kernels = build_runner(fp32, board, True, work)
    row["fp32"] = sum(executed_by_function(runner, arch, fp32).values())
    row["int8_c_kernels"] = sum(n for f, n in row["functions"].items() if f.startswith("ek_nn_"))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="raspberry-pi-4", choices=BOARDS)
    parser.add_argument("--models", default="digits,ppocr-cls")
    parser.add_argument("--functions", type=int, default=0, help="list the N int8 functions that execute most")
    parser.add_argument("--check", action="store_true", help="fail unless int8 outputs equal those with the C kernels off")
    args = parser.parse_args(argv)
    qemu = QEMU[linux_arch(get_board(args.board)[1])]
    machine = shlex.split(get_board(args.board)[0].simulator.machine)
    if "-cpu" in machine:  # the board's CPU model (cortex-a76: dot products) for every qemu run here
        os.environ["QEMU_CPU"] = machine[machine.index("-cpu") + 1]
    if shutil.which(qemu) is None:
        print(f"needs {qemu}: apt-get install qemu-user", file=sys.stderr)
        return 2
    rows = {}
    print(f"{args.board}:\n\n| model | int8 executed (C int8 kernels' part) | fp32 executed | int8 / fp32 |")
    print("|---|---|---|---|")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="board-int8-") as tmp:
            rows[name] = row = measure(name, args.board, Path(tmp), args.check)
        print(f"| {name} | {row['int8']:,} ({row['int8_c_kernels']:,}) | {row['fp32']:,} | "
              f"{row['int8'] / row['fp32']:.2f} |", flush=True)  # fmt: skip
    if args.check:
        print("\nint8 outputs bit-identical with the C kernels off on every model")
    for name, row in rows.items() if args.functions else ():
        print(f"\n{name} int8, executed by function:")
        for function, count in row["functions"].most_common(args.functions):
            print(f"  {count:>12,}  {function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

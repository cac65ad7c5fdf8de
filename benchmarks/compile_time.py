"""Wall time of ``edgekit compile`` for CPU boards, this tree against a baseline tree, side by side.

Usage::

    .venv/bin/python benchmarks/compile_time.py [--models ppocr-cls,squeezenet,resnet50]
        [--precisions fp32,int8] [--mcpu haswell] [--int8-choice int8] [--rounds 3]
        [--baseline TREE] [--check-same]

Each model (:data:`quantization.CASES`) is written as fp32 ONNX and quantized
with the default ``QuantConfig`` (cached in ``--workdir``); then every
(model, precision) is compiled for ``--board host`` (or, with ``--mcpu``, a
board of that CPU written to a temporary ``--boards-dir``) by
``python -m edgekit compile`` in a fresh process per compile, this tree and
the ``--baseline`` tree (a source folder, e.g. ``git archive`` of a commit)
alternating, ``--rounds`` times; the table gives the median wall time of each
and their ratio. ``--check-same`` also compares the two trees' packages
member by member (the compiled library, the weights): a speed-up of the
compiler must not change what it compiles. Take the machine's exclusive
heavy lock around the whole run (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

BOARD_TOML = """name = "host-{mcpu}"
description = "this machine, {mcpu} code (benchmarks/compile_time.py)"
target = "x86_64-{mcpu}"
clock_hz = 0
cores = 0

[memory]
ram = 0
flash = 0

[transport]
kind = "local"

[simulator]
kind = "native"
"""

TARGET_TOML = """name = "x86_64-{mcpu}"
description = "{mcpu} code (benchmarks/compile_time.py)"
codegen = "llvm"
isa = "x86_64"
vector_extensions = []

[tvm]
target = {{ kind = "llvm", mcpu = "{mcpu}" }}
"""


def prepare_models(names: list[str], workdir: Path) -> dict[str, Path]:
    """``{"<model>-fp32": path, "<model>-int8": path}``, written once into ``workdir``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    paths: dict[str, Path] = {}
    for name in names:
        fp32, int8 = workdir / f"{name}-fp32.onnx", workdir / f"{name}-int8.onnx"
        if not (fp32.exists() and int8.exists()):
            import onnx
            from quantization import CASES

            from edgekit.compress import QuantConfig, quantize

            case = CASES[name]()
            onnx.save(case.fp32, str(fp32))
            quantize(str(fp32), QuantConfig(), calibration=case.calibration).save(int8)
        paths[f"{name}-fp32"], paths[f"{name}-int8"] = fp32, int8
    return paths


def compile_once(tree: Path, model: Path, out: Path, board: str, boards_dir: Path | None, choice: str) -> float:
    """Seconds of one ``edgekit compile`` in a fresh process importing edgekit from ``tree``."""
    cmd = [sys.executable, "-m", "edgekit", "compile", str(model), "--board", board, "-o", str(out),
           "--int8-choice", choice]  # fmt: skip
    if boards_dir is not None:
        cmd += ["--boards-dir", str(boards_dir)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - start


def same_members(a: Path, b: Path) -> bool:
    """True when two packages hold the same bytes in every member but the manifest (which has timings)."""
    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        names = {n for n in za.namelist() + zb.namelist() if n != "manifest.json"}
        return all(n in za.namelist() and n in zb.namelist() and za.read(n) == zb.read(n) for n in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ppocr-cls,squeezenet,resnet50")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--mcpu", default=None, help="compile for this LLVM CPU instead of the host board's native")
    parser.add_argument("--int8-choice", default="int8", choices=("auto", "int8", "fp32"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default=None, metavar="TREE", help="source tree to compare with")
    parser.add_argument("--check-same", action="store_true", help="compare the packages of the two trees")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "edgekit-compile-time"))
    args = parser.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    models = prepare_models(args.models.split(","), workdir)
    trees = {"this tree": REPO, **({"baseline": Path(args.baseline)} if args.baseline else {})}
    board, boards_dir = "host", None
    if args.mcpu:
        boards_dir = workdir / f"boards-{args.mcpu}"
        boards_dir.mkdir(exist_ok=True)
        (boards_dir / f"host-{args.mcpu}.toml").write_text(BOARD_TOML.format(mcpu=args.mcpu))
        (boards_dir / f"x86_64-{args.mcpu}.toml").write_text(TARGET_TOML.format(mcpu=args.mcpu))
        board = f"host-{args.mcpu}"
    rows = []
    for key, path in models.items():
        if key.rsplit("-", 1)[1] not in args.precisions.split(","):
            continue
        times: dict[str, list[float]] = {t: [] for t in trees}
        outs = {t: workdir / f"{key}-{i}.ekpkg" for i, t in enumerate(trees)}
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for tree in order:
                times[tree].append(compile_once(trees[tree], path, outs[tree], board, boards_dir, args.int8_choice))
        med = {t: statistics.median(v) for t, v in times.items()}
        row = f"| {key} | " + " | ".join(f"{med[t]:.1f} ({', '.join(f'{x:.1f}' for x in times[t])})" for t in trees)
        if args.baseline:
            row += f" | {med['this tree'] / med['baseline']:.2f}"
            if args.check_same:
                row += f" | {'same' if same_members(outs['this tree'], outs['baseline']) else 'DIFFERENT'}"
        rows.append(row + " |")
        print(rows[-1], flush=True)
    head = "| model | " + " | ".join(f"{t} s (runs)" for t in trees)
    head += " | this/baseline" if args.baseline else ""
    head += " | packages" if args.baseline and args.check_same else ""
    print("\n" + head + " |")
    print("|" + "---|" * (head.count("|") - 1))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

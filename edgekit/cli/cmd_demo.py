"""``edgekit demo``: the main job end to end on the bundled example model.

It runs exactly the commands a user would type — inspect, compile, flash,
run, bench — so the demo exercises the same code paths and prints them for
copy-paste.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from edgekit.cli.render import add_json_flags, console, emit_result, err_console, json_to_stdout
from edgekit.core.errors import ConfigError

DEFAULT_BOARD = "rv32-mcu-sim"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="compile the bundled digits CNN for a board and benchmark it",
        description="Compile edgekit's bundled example model (a small CNN trained on scikit-learn's "
        "digits) for a board, run it on sample inputs and benchmark it against onnxruntime.",
        epilog="example: edgekit demo --board host --runs 100",
    )
    p.add_argument("--board", default=DEFAULT_BOARD, help=f"board profile (default: {DEFAULT_BOARD})")
    p.add_argument("--runs", type=int, default=None,
                   help="timed runs (default: bench's: 1 on a deterministic simulator, else 50)")
    p.add_argument("--out-dir", default=None, help="keep the package and outputs here (default: a temp folder)")
    add_json_flags(p, "the commands it ran and the bench report", file_after_json=True)
    p.set_defaults(func=run)


def _step(argv: list[str], echo: Console) -> int:
    from edgekit.cli.main import main

    # soft_wrap: a command wrapped at 80 columns cannot be pasted back.
    echo.print(f"$ edgekit {shlex.join(argv)}", style="bold cyan", soft_wrap=True, highlight=False, markup=False)
    return main(argv)


def run(args: argparse.Namespace) -> int:
    from edgekit.examples.digits import example_inputs_path, example_model_path

    model = example_model_path()
    inputs = example_inputs_path()
    if not model.exists():
        raise ConfigError(f"bundled example model {model} is missing", hint="Reinstall edgekit.")
    # With --json on stdout, the steps' tables go to stderr: stdout carries the JSON alone.
    to_stderr = json_to_stdout(args)
    with tempfile.TemporaryDirectory(prefix="edgekit-demo-") as tmp:
        out = Path(args.out_dir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        pkg = str(out / f"digits_cnn-{args.board}.ekpkg")
        bench_json = Path(tmp) / "bench.json"
        steps = [
            ["inspect", str(model), "--board", args.board],
            ["compile", str(model), "--board", args.board, "-o", pkg],
            ["flash", pkg],
            ["run", pkg, "--input", str(inputs), "-o", str(out / "outputs.npz")],
            ["bench", pkg, "--compare-ort"] + (["--runs", str(args.runs)] if args.runs else []),
        ]
        want_json = args.json is not None or bool(args.json_out)
        if want_json:
            steps[-1] += ["--json-out", str(bench_json)]
        with contextlib.redirect_stdout(sys.stderr) if to_stderr else contextlib.nullcontext():
            for argv in steps:
                rc = _step(argv, err_console if to_stderr else console)
                if rc != 0:
                    return rc
            if not args.out_dir:
                err_console.print("(the package and outputs were in a temporary folder, now removed: "
                                  "pass --out-dir DIR to keep them)", highlight=False)
        if want_json:
            document = {"board": args.board, "commands": [["edgekit", *a] for a in steps],
                        "package": pkg if args.out_dir else None,
                        "bench": json.loads(bench_json.read_text(encoding="utf-8"))}
            emit_result(args, document)
    return 0

"""``edgekit demo``: the main job end to end on the bundled example model.

It runs exactly the commands a user would type — compile, then bench — so
the demo exercises the same code paths and prints them for copy-paste.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path

from edgekit.cli.render import console
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
    p.add_argument("--runs", type=int, default=50, help="timed runs (default: 50)")
    p.add_argument("--out-dir", default=None, help="keep the package and outputs here (default: a temp folder)")
    p.add_argument("--json", default=None, metavar="R.json", help="also write the bench result as JSON")
    p.set_defaults(func=run)


def _step(argv: list[str]) -> int:
    from edgekit.cli.main import main

    console.print(f"[bold cyan]$ edgekit {shlex.join(argv)}[/]")
    return main(argv)


def run(args: argparse.Namespace) -> int:
    from edgekit.examples.digits import example_inputs_path, example_model_path

    model = example_model_path()
    inputs = example_inputs_path()
    if not model.exists():
        raise ConfigError(f"bundled example model {model} is missing", hint="Reinstall edgekit.")
    with tempfile.TemporaryDirectory(prefix="edgekit-demo-") as tmp:
        out = Path(args.out_dir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        pkg = str(out / f"digits_cnn-{args.board}.ekpkg")
        steps = [
            ["inspect", str(model), "--board", args.board],
            ["compile", str(model), "--board", args.board, "-o", pkg],
            ["run", pkg, "--input", str(inputs), "-o", str(out / "outputs.npz")],
            ["bench", pkg, "--runs", str(args.runs), "--compare-ort"] + (["--json", args.json] if args.json else []),
        ]
        for argv in steps:
            rc = _step(argv)
            if rc != 0:
                return rc
    return 0

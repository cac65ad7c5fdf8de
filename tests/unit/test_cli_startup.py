"""``edgekit --help`` and ``edgekit boards`` start without the heavy libraries
(issue #17; the wall-clock figures come from benchmarks/startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgekit.cli.main import COMMANDS, build_parser, main

HEAVY = ("onnx", "onnxruntime", "tvm", "matplotlib", "onnxslim")


def _imports_after(argv: list[str]) -> tuple[set[str], str]:
    code = (
        "import sys, io, contextlib\n"
        "from edgekit.cli.main import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        rc = main({argv!r})\n"
        "    except SystemExit as exc:\n"
        "        rc = exc.code\n"
        "sys.stderr.write(out.getvalue())\n"
        "print(rc, ','.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    rc, modules = done.stdout.split()
    assert rc == "0", done.stderr
    return set(modules.split(",")), done.stderr


@pytest.mark.parametrize("argv", [["--help"], ["boards", "--json"], ["boards"]])
def test_listing_commands_import_no_heavy_library(argv: list[str]) -> None:
    modules, output = _imports_after(argv)
    assert not modules & set(HEAVY), f"edgekit {' '.join(argv)} imported {sorted(modules & set(HEAVY))}"
    if argv == ["boards", "--json"]:
        assert {"host", "rv32-mcu-sim"} <= {b["name"] for b in json.loads(output)["boards"]}
    if argv == ["--help"]:
        for name, summary in COMMANDS.items():
            assert name in output and summary.split(" (")[0] in output


def test_command_summaries_match_their_modules() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    assert {a.dest: a.help for a in sub._choices_actions} == COMMANDS


def test_options_before_the_command_still_find_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "boards", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["boards"]
    with pytest.raises(SystemExit) as exc:
        main(["bords"])
    assert exc.value.code == 2
    assert "invalid choice: 'bords'" in capsys.readouterr().err

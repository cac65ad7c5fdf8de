"""``edgekit completion bash`` completes commands, options and board names in bash."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekit.cli import cmd_completion
from edgekit.cli.main import build_parser


def _complete(script: Path, *words: str) -> list[str]:
    cmd = (f"source {script}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
           f"COMP_CWORD={len(words) - 1}; _edgekit; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion(tmp_path: Path) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "completion" not in sub.choices:  # until the command is listed in COMMANDS
        cmd_completion.add_parser(sub)
    script = tmp_path / "edgekit.bash"
    script.write_text(cmd_completion.completion_script("bash", parser))
    assert _complete(script, "edgekit", "be") == ["bench"]
    assert "--baseline" in _complete(script, "edgekit", "bench", "m.ekpkg", "--ba")
    assert "rv32-mcu-sim" in _complete(script, "edgekit", "compile", "m.onnx", "--board", "rv")
    assert _complete(script, "edgekit", "completion", "") == ["bash", "zsh"]
    assert cmd_completion.completion_script("zsh", parser).startswith("#compdef edgekit")

"""Every option of every command is documented in README.md or docs/*.md,
not only in --help (compile's --opt-level and --allow-unsupported, and
compress's pruning flags, were named nowhere else)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgekit.cli.main import build_parser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
#: Spelled out by every command's --help and the README's usage notes.
COMMON = {"--help", "--debug", "--quiet"}


def test_every_command_option_is_in_the_docs() -> None:
    docs = (ROOT / "README.md").read_text(encoding="utf-8") + "".join(
        p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in sub.choices.items():
        for action in parser._actions:
            long = [o for o in action.option_strings if o.startswith("--") and o not in COMMON]
            short = [o for o in action.option_strings if not o.startswith("--")]
            # "-o OUT" in the examples documents --output.
            if long and not any(o in docs for o in long) and not any(f" {o} " in docs for o in short):
                missing.append(f"edgekit {name} {long[0]}")
    assert not missing, "options named only in --help: " + ", ".join(missing)

"""The compile report says what int8 bought on the board: the whole-model
times of the int8 (or mixed) build against the fp32 build of the same graph."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

from edgekit.cli.cmd_compile import _int8_choice_rows
from edgekit.compiler.backends.llvm.int8_choice import Int8Choice

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("decision", "times", "words"), [
    ("int8", {"int8": 0.164, "fp32": 0.289}, "(int8 1.76x faster than fp32)"),
    ("mixed", {"int8": 0.015, "mixed": 0.013, "fp32": 0.016}, "(mixed 1.23x faster than fp32)"),
    ("fp32", {"int8": 0.42, "fp32": 0.30}, "(int8 1.40x slower than fp32, so fp32 kept)"),
    ("int8", {}, None),
])  # fmt: skip
def test_compile_report_says_what_int8_bought(decision: str, times: dict, words: str | None) -> None:
    table = Table()
    table.add_column("what")
    table.add_column("value")
    _int8_choice_rows(table, Int8Choice("auto", "measured" if times else "unknown", decision, "why", model_ms=times))
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(table)
    text = out.getvalue()
    if words is None:
        assert "faster than fp32" not in text and "whole model" not in text
    else:
        assert words in text


def test_an_unmeasured_board_says_how_to_measure_int8_there() -> None:
    table = Table()
    table.add_column("what")
    table.add_column("value")
    _int8_choice_rows(table, Int8Choice("auto", "unknown", "int8", "kept int8: not measured"))
    out = io.StringIO()
    Console(file=out, width=300, color_system=None).print(table)
    assert "compile the fp32 model for it too" in out.getvalue() and "--port" in out.getvalue()

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
    assert "compile the model with --int8-choice fp32 too" in out.getvalue() and "--port" in out.getvalue()


def test_a_whole_model_in_fp32_is_one_line_and_counts_only_timed_layers() -> None:
    from edgekit.compiler.backends.llvm.int8_choice import LayerCost

    guard = "whole model in fp32 (whole-model guard)"
    layers = [LayerCost("conv1", "Conv", 0.026, 0.082, "measured", kept="fp32", reason=guard),
              LayerCost("conv2", "Conv", None, None, "measured", kept="fp32", reason=guard),
              LayerCost("add1", "Add", None, None, "measured", kept="fp32", reason=guard)]  # fmt: skip
    choice = Int8Choice("auto", "measured", "fp32", "whole-model guard", layers=layers,
                        model_ms={"int8": 0.48, "fp32": 0.376}, candidates=3, not_timed=1, elementwise=1)  # fmt: skip
    table = Table()
    table.add_column("what")
    table.add_column("value")
    _int8_choice_rows(table, choice)
    out = io.StringIO()
    Console(file=out, width=300, color_system=None).print(table)
    text = out.getvalue()
    assert "1 of 3 quantized layers timed alone, 1 not timed (budget), 1 elementwise (not timed alone)" in text
    assert "stay int8" not in text and "all 3 quantized layers in fp32" in text and "fp32 conv1" not in text
    assert "(int8 1.28x slower than fp32, so fp32 kept)" in text


def test_chains_left_in_float_are_listed_with_why() -> None:
    from types import SimpleNamespace

    from edgekit.cli.cmd_compile import _float_chain_rows

    uint8 = "input is uint8, only int8 activations are lowered"
    lowering = {"rewritten": [], "kept_float": [{"kind": "add", "name": n, "shape": [1], "detail": uint8}
                                                for n in ("conv1", "conv2", "conv3", "fc1", "logits")]}  # fmt: skip
    table = Table()
    table.add_column("what")
    table.add_column("value")
    _float_chain_rows(table, SimpleNamespace(section=lambda name: lowering if name == "integer_lowering" else {}))
    out = io.StringIO()
    Console(file=out, width=300, color_system=None).print(table)
    text = out.getvalue()
    assert f"5 of 5 quantized chains (conv1, conv2, conv3, fc1 and 1 more): {uint8}" in text
    assert "edgekit compress --quantize int8" in text
    empty = Table()
    _float_chain_rows(empty, SimpleNamespace(section=lambda name: {}))
    assert empty.row_count == 0


def test_layers_the_choice_put_in_fp32_are_not_listed_as_left_in_float() -> None:
    from types import SimpleNamespace

    from edgekit.cli.cmd_compile import _float_chain_rows
    from edgekit.compiler.backends.llvm.int8_choice import LayerCost

    kept = [{"kind": "conv2d", "name": n, "shape": [1], "detail": "nn.conv2d has no integer lowering"}
            for n in ("conv2", "conv3")]  # fmt: skip
    manifest = SimpleNamespace(section=lambda name: {"rewritten": [{}], "kept_float": kept})
    mixed = Int8Choice("auto", "measured", "mixed", "1 layer", layers=[
        LayerCost("conv2", "Conv", 0.02, 0.01, "measured", kept="fp32", reason="fp32 faster")])
    for choice, shown in ((Int8Choice("auto", "measured", "fp32", "guard"), False), (mixed, True)):
        table = Table()
        table.add_column("what")
        table.add_column("value")
        _float_chain_rows(table, manifest, choice)  # type: ignore[arg-type]
        out = io.StringIO()
        Console(file=out, width=300, color_system=None).print(table)
        assert ("1 of 3 quantized chains (conv3)" in out.getvalue()) is shown, out.getvalue()
        assert "(conv2" not in out.getvalue()

"""``--int8-choice fp32`` and the whole-model times' digits (issue #14 item 4, new-user run).

A user who benches both precisions on a board edgekit cannot time here
compiles the int8 model twice, ``--int8-choice int8`` and ``fp32``, instead
of keeping the fp32 model around; the fp32 package is the graph the
whole-model guard compiles (:func:`edgekit.frontend.qdq_graph.float_model`).
The digits CNN keeps these tests to seconds.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from rich.console import Console
from rich.table import Table

from edgekit.cli.cmd_compile import _int8_choice_rows
from edgekit.cli.main import main
from edgekit.compiler.backend import BuildResult, CompileOptions, build_with_choice
from edgekit.compiler.backends.llvm.int8_choice import Int8Choice, choose, ms_texts
from edgekit.compiler.driver import compile_model
from edgekit.compress import QuantConfig, quantize
from edgekit.core.errors import ConfigError
from edgekit.core.profiles import load_profiles
from edgekit.examples.digits import example_inputs_path, example_model_path
from edgekit.frontend.legalize import legalize_prepared
from edgekit.frontend.loader import load_model
from edgekit.frontend.qdq_graph import QDQ_OPS, float_model, named_nodes, quantized_nodes
from edgekit.runtime.runner import run_package


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("digits-fp32-choice")
    x = np.load(example_inputs_path())["input"]
    int8 = quantize(str(example_model_path()), QuantConfig(), calibration={"input": x}).save(d / "digits-int8.onnx")
    return {"fp32": Path(example_model_path()), "int8": Path(int8)}


def _x() -> np.ndarray:
    return np.load(example_inputs_path())["input"][:8]


def _ort(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": s[None]})[0] for s in x])


def _package_model(pkg: Path) -> onnx.ModelProto:
    with zipfile.ZipFile(pkg) as z:
        return onnx.load_from_string(z.read("model.onnx"))


def _guard_graph(int8: Path) -> onnx.ModelProto:
    """The fp32 build of the same graph, as the whole-model guard makes it."""
    prepared = load_model(str(int8))
    legalize_prepared(prepared)
    return float_model(named_nodes(prepared.model))


def test_fp32_compiles_the_fp32_build_of_the_same_graph(digits, tmp_path, capsys):
    pkg = tmp_path / "fp32.ekpkg"
    assert main(["compile", str(digits["int8"]), "--board", "host", "-o", str(pkg), "--int8-choice", "fp32",
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    choice = out["int8_choice"]
    assert out["options"]["int8_choice"] == "fp32"
    assert (choice["mode"], choice["source"], choice["decision"]) == ("fp32", "off", "fp32")
    names = quantized_nodes(named_nodes(load_model(str(digits["int8"])).model))
    assert choice["candidates"] == len(names) >= 5  # 3 convs, 2 Gemms at least
    assert [c["kept"] for c in choice["fp32_layers"]] == ["fp32"] * choice["candidates"]
    assert choice["model_ms"] == {} and choice["extra_seconds"] == 0  # nothing built in int8, nothing timed
    compiled = _package_model(pkg)
    assert not any(n.op_type in QDQ_OPS for n in compiled.graph.node)
    assert [n.op_type for n in compiled.graph.node] == [n.op_type for n in _guard_graph(digits["int8"]).graph.node]
    # It computes the fp32 graph (compiled vs onnxruntime on it), which is closer to
    # the fp32 model than the QDQ graph is: the int8 rounding is gone.
    x = _x()
    name = compiled.graph.output[0].name
    got = np.concatenate([o[name] for o in run_package(pkg, {"input": x})[0]])
    want = _ort(compiled, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    ref = _ort(digits["fp32"], x)
    assert np.abs(got - ref).max() < np.abs(_ort(digits["int8"], x) - ref).max()


def test_the_report_says_the_whole_model_is_fp32_as_asked(digits, tmp_path):
    result = compile_model(str(digits["int8"]), "host", tmp_path / "fp32.ekpkg", options=CompileOptions(int8_choice="fp32"))
    table = Table()
    table.add_column("what")
    table.add_column("value")
    _int8_choice_rows(table, Int8Choice.of(result.manifest))
    out = io.StringIO()
    Console(file=out, width=300, color_system=None).print(table)
    text = out.getvalue()
    assert "fp32 (off): --int8-choice fp32: every quantized layer in fp32, nothing measured" in text
    assert "quantized layers in fp32, as asked" in text and "whole-model guard" not in text


def test_fp32_for_a_board_that_cannot_run_here(digits, tmp_path):
    pkg = tmp_path / "pi.ekpkg"
    result = compile_model(str(digits["int8"]), "raspberry-pi-4", pkg, options=CompileOptions(int8_choice="fp32"))
    choice = Int8Choice.of(result.manifest)
    assert (choice.mode, choice.decision, choice.source) == ("fp32", "fp32", "off")
    assert choice.in_words() == "compiled in fp32 (--int8-choice fp32)"
    assert not any(n.op_type in QDQ_OPS for n in _package_model(pkg).graph.node)


@pytest.mark.parametrize("board", ["stm32h7", "kv260"])
def test_a_backend_without_the_choice_refuses_fp32_for_an_int8_model(digits, tmp_path, board, capsys):
    assert main(["compile", str(digits["int8"]), "--board", board, "-o", str(tmp_path / "p.ekpkg"),
                 "--int8-choice", "fp32"]) == 2  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert "--int8-choice fp32 is for CPU boards (codegen llvm)" in err and f"board '{board}'" in err
    assert "Compile the fp32 model for this board instead" in err


def test_a_float_model_is_not_refused_where_there_is_nothing_to_choose():
    class Plain:
        def build(self, prepared, board, target, options, progress):
            return BuildResult({}, "test")

    options = CompileOptions(int8_choice="fp32")
    board, target = SimpleNamespace(name="b"), SimpleNamespace(codegen="aot-c")
    fp32 = SimpleNamespace(model=onnx.load(str(example_model_path())))
    assert build_with_choice(Plain(), fp32, board, target, options, lambda s, m: None).choice is None
    int8 = SimpleNamespace(model=quantize(str(example_model_path()), QuantConfig(),
                                          calibration={"input": _x()}).model)  # fmt: skip
    with pytest.raises(ConfigError, match="codegen aot-c"):
        build_with_choice(Plain(), int8, board, target, options, lambda s, m: None)


# --------------------------------------------------------------------------- #
# Times that differ read differently
# --------------------------------------------------------------------------- #


def test_times_that_differ_read_differently():
    assert ms_texts([0.0091234, 0.0090871]) == ["9.123 µs", "9.087 µs"]
    assert ms_texts([0.0091231, 0.0091234]) == ["9.1231 µs", "9.1234 µs"]  # one more digit where 4 tie
    assert ms_texts([0.162, 1.2468, 12.3456]) == ["162.0 µs", "1.247 ms", "12.35 ms"]
    assert ms_texts([0.009, 0.009]) == ["9.000 µs", "9.000 µs"]


def test_the_guards_reason_tells_a_9_us_models_builds_apart(digits):
    class Cost:
        source, timing = "modeled", "injected by the test"

        def layer_times(self, probe):
            return 1.0, 2.0

        def model_times(self, builds, prepared):
            return {"int8": 0.0094, "fp32": 0.0091}  # both "0.009 ms" at three decimals

    host = load_profiles().board("host")
    _, _, choice = choose(load_model(str(digits["int8"])), host, load_profiles().target_of(host), CompileOptions(),
                          lambda p, prog: BuildResult({}, "test"), lambda s, m: None, cost=Cost())  # fmt: skip
    assert choice.decision == "fp32"
    assert "the fp32 build (9.100 µs) is faster than the int8 build (9.400 µs)" in choice.reason
    assert Int8Choice.from_json(choice.to_json()).model_ms == {"int8": 0.0094, "fp32": 0.0091}

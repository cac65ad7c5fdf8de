"""The int8/fp32 choice on a loaded machine (issue #14, item 4): load from other
processes must not put layers or the model in fp32, and the report says the
timing was noisy. The layers and builds are timed by the real measuring code
(``measure_interleaved``) on a fake machine whose load inflates a variant's
turn 10x (tests/build/_loaded_machine.py); nothing is built or timed for real.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
from rich.console import Console
from rich.table import Table
from _int8_checks import quantized
from _loaded_machine import LoadedCost, LoadedMachine
from test_int8_choice import _fp32_model

from edgekit.cli.cmd_compile import _int8_choice_rows
from edgekit.compiler.backend import BuildResult, CompileOptions
from edgekit.compiler.backends.llvm.int8_choice import NOISE_ADVICE, Int8Choice, choose
from edgekit.core.profiles import load_profiles
from edgekit.frontend.loader import load_model

#: Quiet times: every layer is faster in int8, and so is the whole model.
LAYERS_INT8 = {"conv1": (1.0, 1.3), "conv2": (2.0, 2.6), "dw3": (0.5, 0.6), "fc": (0.3, 0.4)}
MODEL_INT8 = {"int8": 4.0, "mixed": 4.5, "fp32": 5.0}


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> Path:
    cal = {"x": np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32)}
    return Path(quantized(tmp_path_factory.mktemp("noise"), _fp32_model(), cal))


def _choose(model: Path, cost: LoadedCost) -> tuple[Int8Choice, list[onnx.ModelProto]]:
    prepared = load_model(str(model))
    built: list[onnx.ModelProto] = []

    def build(p, progress):
        built.append(p.model)
        return BuildResult({}, "test")

    host = load_profiles().board("host")
    _, _, choice = choose(prepared, host, load_profiles().target_of(host), CompileOptions(), build,
                          lambda s, m: None, cost=cost)  # fmt: skip
    return Int8Choice.from_json(choice.to_json()), built  # what the manifest keeps


def _report(choice: Int8Choice) -> str:
    """The compile report's int8-choice rows, as text."""
    table = Table()
    table.add_column("what")
    table.add_column("value")
    _int8_choice_rows(table, choice)
    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(table)
    return " ".join(out.getvalue().split())


def test_quiet_timings_keep_int8(int8_model):
    choice, built = _choose(int8_model, LoadedCost(LoadedMachine({}, load_until=0), LAYERS_INT8, MODEL_INT8))
    assert choice.decision == "int8" and not choice.fp32_layers and len(built) == 2
    assert choice.noise.status == "steady" and choice.noise.in_words() == ""
    assert "timing" not in _report(choice)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bursts_on_int8_that_pass_give_the_quiet_choice_and_are_reported(int8_model, seed):
    # Every int8 turn 10x slower for the first 3 fake seconds, then at random
    # (p 0.3) for as long as the compile runs: measured as it was before (5
    # rounds, a low percentile), the first layers timed say fp32 is faster.
    machine = LoadedMachine({}, load_until=3.0, hit=("int8",), seed=seed)
    cost = LoadedCost(machine, LAYERS_INT8, MODEL_INT8)
    choice, built = _choose(int8_model, cost)
    assert choice.decision == "int8" and not choice.fp32_layers
    assert len(built) == 2  # no mixed build on account of the load
    for layer in choice.layers:  # the quiet times were recorded
        assert layer.int8_ms == pytest.approx(LAYERS_INT8[layer.node][0], rel=0.02), layer
    assert choice.model_ms["int8"] == pytest.approx(4.0, rel=0.02)
    assert choice.noise.status == "disturbed" and choice.noise.disturbed_rounds >= 5
    assert choice.noise.spread > 9 and "timing disturbed:" in _report(choice)


def test_load_that_never_passes_keeps_int8_and_says_what_to_do(int8_model):
    # Nine of ten turns of every variant slowed 10x for the whole compile: too
    # few rounds are clean, and the layers' and builds' low percentiles say
    # whatever the load did.
    machine = LoadedMachine({}, p=0.9, seed=4)
    cost = LoadedCost(machine, LAYERS_INT8, MODEL_INT8)
    choice, built = _choose(int8_model, cost)
    assert choice.decision == "int8" and not choice.fp32_layers and len(built) == 2
    assert choice.noise.status == "noisy" and choice.noise.unreliable >= 1
    assert choice.noise.advice == NOISE_ADVICE and "--int8-choice int8" in choice.noise.advice
    assert "unreliable" in choice.reason and "idle machine" in choice.noise.advice
    for layer in choice.layers:
        assert layer.kept == "int8"
    report = _report(choice)
    assert "timing noisy:" in report and "rounds disturbed by load" in report
    assert "recompile on an idle machine, or choose with --int8-choice int8 or --int8-choice fp32" in report


def test_a_pool_slowdown_that_favours_fp32_in_every_round_is_checked_on_one_thread(int8_model):
    # Load slows every int8 turn of the two-thread builds 10x: fp32 wins every
    # round. On one thread int8 is the faster (the load was the pool's, not int8's).
    machine = LoadedMachine({}, hit=("int8",))
    cost = LoadedCost(machine, LAYERS_INT8, MODEL_INT8, one_thread={"int8": 7.0, "fp32": 9.0, "mixed": 8.0})
    choice, _ = _choose(int8_model, cost)
    assert choice.decision == "int8" and choice.noise.status == "noisy" and choice.noise.one_thread_checks >= 1


def test_fp32_faster_in_every_round_and_on_one_thread_keeps_the_guard_under_load(int8_model):
    # The int8 model really is slower (fp32 2.0 against int8 4.0); load slows
    # every fp32 turn 1.5x, so no round is clean and fp32 still wins every
    # one, on one thread too.
    machine = LoadedMachine({}, factor=1.5, hit=("fp32",))
    cost = LoadedCost(machine, {}, {"int8": 4.0, "fp32": 2.0}, one_thread={"int8": 7.0, "fp32": 3.5})
    choice, _ = _choose(int8_model, cost)
    assert choice.noise.status == "noisy"
    assert choice.decision == "fp32" and "or more of" in choice.reason


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_genuinely_faster_fp32_build_wins_under_bursts_that_hit_both(int8_model, seed):
    # fp32 1.33x faster (AVX2 code of PP-OCR cls was 1.28x); two busy processes:
    # every round contended, one turn in ten of either build 10x slower, so
    # int8 wins a few rounds by luck. fp32 still wins most, on one thread too.
    machine = LoadedMachine({}, p=0.1, seed=seed, contended=True)
    cost = LoadedCost(machine, {}, {"int8": 4.0, "fp32": 3.0}, one_thread={"int8": 7.0, "fp32": 5.2})
    choice, _ = _choose(int8_model, cost)
    assert choice.noise.status == "noisy"
    assert choice.decision == "fp32", choice.reason


def test_quiet_timings_still_keep_a_slower_int8_layer_in_fp32(int8_model):
    # The guard is not switched off: a layer genuinely slower in int8 goes to
    # fp32 where the mixed build is measured faster, on a machine without load.
    layers = {**LAYERS_INT8, "conv2": (3.0, 1.0)}
    cost = LoadedCost(LoadedMachine({}, load_until=0), layers, {"int8": 4.0, "mixed": 3.0, "fp32": 5.0})
    choice, built = _choose(int8_model, cost)
    assert choice.decision == "mixed" and [c.node for c in choice.fp32_layers] == ["conv2"]
    assert len(built) == 3 and choice.noise.status == "steady"


def test_a_package_from_before_the_noise_field_loads():
    old = {"mode": "auto", "source": "measured", "decision": "int8", "reason": "int8 1 ms, fp32 2 ms",
           "fp32_layers": [], "timed_layers": [], "model_ms": {"int8": 1.0, "fp32": 2.0}, "candidates": 4,
           "not_timed": 0, "elementwise": 0, "extra_seconds": 3.0, "timing": "TVM time_evaluator"}  # fmt: skip
    choice = Int8Choice.from_json(old)
    assert choice.noise.status == "" and choice.noise.in_words() == ""
    assert Int8Choice.from_json(choice.to_json()) == choice


def test_a_mixed_build_far_faster_than_its_layers_explain_is_not_taken(int8_model):
    # conv2 saves 0.2 ms alone; the mixed build "saves" 1.0 of the int8 build's
    # 2.0 ms (the loaded YOLOX compile measured mixed 24 ms against int8 228 ms).
    layers = {**LAYERS_INT8, "conv2": (3.0, 2.8)}
    cost = LoadedCost(LoadedMachine({}, load_until=0), layers, {"int8": 2.0, "mixed": 1.0, "fp32": 2.5})
    choice, built = _choose(int8_model, cost)
    assert len(built) == 3 and choice.decision == "int8" and not choice.fp32_layers
    assert "taken for load, not speed" in choice.reason

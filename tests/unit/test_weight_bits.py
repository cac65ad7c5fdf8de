"""``QuantConfig.weight_bits``: 7-bit weights where the target board's CPU is x86 with AVX2 (or AVX512BW) and no VNNI."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.cli.main import build_parser
from edgekit.cli.cmd_compress import _quant_request
from edgekit.compress import QuantConfig, quantize
from edgekit.compress.weight_bits import choose_weight_bits
from edgekit.core.cpu_features import TEST_FLAGS_ENV
from edgekit.core.errors import ConfigError
from edgekit.core.profiles import Target, get_board, load_profiles

#: Linux flags of an AVX2 CPU without VNNI and of one with AVX512-VNNI (tests/build/_host_cpu.py has the same sets),
#: and of a Skylake-SP (AVX512BW, no VNNI).
AVX2_FLAGS = "sse sse2 pni ssse3 sse4_1 sse4_2 popcnt avx avx2 fma f16c bmi1 bmi2 abm movbe pclmulqdq aes"
VNNI_FLAGS = AVX2_FLAGS + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
SKYLAKE_SP_FLAGS = AVX2_FLAGS + " avx512f avx512dq avx512cd avx512bw avx512vl"


def _x86(mcpu: str) -> Target:
    return Target(name=f"x86-{mcpu}", codegen="llvm", isa="x86_64", tvm={"kind": "llvm", "mcpu": mcpu})


@pytest.mark.parametrize(
    ("mcpu", "bits"),
    [
        ("haswell", 8),  # AVX2, no VNNI, but one vector multiply port: vpmaddubsw buys no products per cycle
        ("znver2", 8),  # the Zen 2 EPYC of this project's CI: one multiply port as well
        ("broadwell", 8),
        ("skylake", 7),  # client Skylake: AVX2 only, two multiply ports
        ("znver3", 7),
        ("skylake-avx512", 7),  # AVX512BW without VNNI: vpmaddubsw zmm (U8S8_512) where 7 bits make it exact
        ("cannonlake", 7),  # AVX512BW + VBMI, no VNNI
        ("cascadelake", 8),  # AVX512-VNNI: vpdpbusd adds in 32 bits
        ("icelake-server", 8),  # AVX512-VNNI
        ("alderlake", 8),  # AVX-VNNI without AVX-512
        ("znver4", 8),
        ("x86-64", 8),  # no AVX2: no dot-product kernels at all
    ],
)
def test_auto_follows_the_target_cpu_not_this_machine(mcpu: str, bits: int) -> None:
    choice = choose_weight_bits(_x86(mcpu))
    assert choice.bits == bits, choice.reason
    assert mcpu in choice.reason


@pytest.mark.parametrize("board", ["raspberry-pi-4", "visionfive2", "stm32h7", "rv32-mcu-sim", "kv260", "rtx-4090"])
def test_auto_keeps_8_bits_off_x86(board: str) -> None:
    assert choose_weight_bits(get_board(board)[1]).bits == 8


def test_no_board_and_explicit_widths() -> None:
    assert choose_weight_bits(None).bits == 8
    assert choose_weight_bits(_x86("skylake"), 8).bits == 8
    assert choose_weight_bits(_x86("haswell"), 7).bits == 7
    assert choose_weight_bits(_x86("icelake-server"), 7).bits == 7
    assert "asked for" in choose_weight_bits(_x86("skylake"), 8).reason
    assert "one vector multiply port" in choose_weight_bits(_x86("znver2")).reason
    assert "vpmaddubsw zmm" in choose_weight_bits(_x86("skylake-avx512")).reason


def _simulate_host(monkeypatch: pytest.MonkeyPatch, flags: str) -> None:
    """This machine as a CPU with ``flags``; the host's ``-mcpu`` stays this machine's name
    (znver2 on a Zen 2 CI host), so the one-port rule, tested above by name, is set aside."""
    monkeypatch.setenv(TEST_FLAGS_ENV, flags)
    monkeypatch.setattr("edgekit.compress.weight_bits.ONE_MULTIPLY_PORT", frozenset())


@pytest.mark.parametrize(("flags", "bits"), [(AVX2_FLAGS, 7), (VNNI_FLAGS, 8), (SKYLAKE_SP_FLAGS, 7)])
def test_the_host_board_follows_its_cpu(monkeypatch: pytest.MonkeyPatch, flags: str, bits: int) -> None:
    _simulate_host(monkeypatch, flags)
    assert choose_weight_bits(load_profiles().target_of("host")).bits == bits


def test_config_validates_weight_bits() -> None:
    for bad in (6, 16, True, "7"):
        with pytest.raises(ConfigError, match="weight_bits must be one of auto, 8, 7") as info:
            QuantConfig(weight_bits=bad)
        assert "auto" in info.value.hint
    assert QuantConfig(weight_bits=7).ort_kwargs()["reduce_range"] is True
    assert QuantConfig().ort_kwargs()["reduce_range"] is False  # auto with no board: 8 bits


def test_cli_flag_reaches_the_config() -> None:
    parser = build_parser()
    base = ["compress", "m.onnx", "-o", "o.onnx", "--quantize", "int8", "--calibration", "c.npz"]
    assert _quant_request(parser.parse_args([*base, "--weight-bits", "7"])).config["weight_bits"] == 7
    assert _quant_request(parser.parse_args([*base, "--weight-bits", "auto"])).config["weight_bits"] == "auto"
    assert "weight_bits" not in _quant_request(parser.parse_args(base)).config


def _conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 6, 6])], [w],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("flags", "bits", "top"), [(AVX2_FLAGS, 7, 64), (VNNI_FLAGS, 8, 127)])
def test_quantize_for_the_host_writes_and_reports_the_width(monkeypatch: pytest.MonkeyPatch, flags: str, bits: int,
                                                            top: int) -> None:  # fmt: skip
    _simulate_host(monkeypatch, flags)
    cal = {"x": np.random.default_rng(1).standard_normal((8, 8, 6, 6)).astype(np.float32)}
    result = quantize(_conv_model(), None, calibration=cal, board="host")
    (w,) = [numpy_helper.to_array(t) for t in result.model.graph.initializer if len(t.dims) == 4]
    assert int(np.abs(w.astype(np.int32)).max()) == top  # per channel: the largest weight of a channel maps to it
    assert result.report.config["weight_bits"] == bits
    assert ("without VNNI" in result.report.config["weight_bits_reason"]) == (bits == 7)


def test_recipe_quantize_step_takes_the_key_and_the_board(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.compress.passes import PassContext
    from edgekit.compress.recipe import QuantizeStep

    _simulate_host(monkeypatch, AVX2_FLAGS)
    cal = {"x": np.random.default_rng(1).standard_normal((8, 8, 6, 6)).astype(np.float32)}
    host = load_profiles().board("host")
    for params, board, top in (({}, host, 64), ({"weight_bits": 8}, host, 127), ({}, None, 127)):
        result = QuantizeStep(params).run(_conv_model(), PassContext(calibration=cal, board=board))
        (w,) = [numpy_helper.to_array(t) for t in result.model.graph.initializer if len(t.dims) == 4]
        assert int(np.abs(w.astype(np.int32)).max()) == top, (params, board)

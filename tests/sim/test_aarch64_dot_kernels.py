"""edgekit's SDOT int8 conv/matmul kernels on raspberry-pi-5 (Cortex-A76: NEON
with the dot-product extension) — firmware_stubs/nn/ek_nn_s8.c's EK_NN_SDOT
inner kernels, chosen at compile time by the target's ``-mcpu=cortex_a76``.

The board's static runner runs under ``qemu-aarch64 -cpu cortex-a76`` with
the C kernels and without them (every layer on TVM's integer lowering):
bit-exact, within one step of onnxruntime's QDQ graph, on layer shapes with
ragged channel counts and K not a multiple of 4, a MobileNetV3 block, and
the quantized digits CNN and PP-OCR text-angle classifier (the latter two
through ``edgekit compile`` / ``run`` / ``bench --sim``). The shipped
objects are disassembled: ``sdot`` in the raspberry-pi-5 conv/matmul
kernels, none anywhere in the raspberry-pi-4 (Cortex-A72) ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekit.cli.main import main
from edgekit.compiler.backend import CompileOptions
from edgekit.compiler.driver import compile_model
from edgekit.compress.config import QuantConfig
from edgekit.compress.quantize import quantize
from edgekit.core.profiles import get_board
from edgekit.runtime.runner import run_package

from test_aarch64_int8_kernels import (EXTRA_LAYERS, LAYERS as NEON_LAYERS, _shipped_object, aarch64_disassembly,
                                       aarch64_mnemonics, check_block, check_extra_layer, check_layer, dw_rows_expected,
                                       fused_tiles_expected, needs_objdump, needs_qemu, needs_zig)
from test_mcu_int8_blocks import _output_step, block_int8  # noqa: F401
from test_mcu_int8_kernels import _functions, _qdq_layer

BOARD = "raspberry-pi-5"

# The aarch64 NEON layer set, plus SDOT's own edges: K not a multiple of 4 in the table
# gather and in the 1x1 transposing gather (a last group of 1-3 rows), channel counts that
# leave 1-3 channels of a 4-block (zero weights pad them), 8 + 4 blocks, a pixel tail.
LAYERS = {
    **{n: NEON_LAYERS[n] for n in ("conv3x3_pad_odd", "conv3x3_stride2", "conv1x1", "fc", "conv3x3_odd_k_12ch",
                                   "conv3x3_k1152", "fc_k1100", "depthwise_s2", "depthwise_s1_wide",
                                   "depthwise_5x5_s1_19", "depthwise_5x5_s1_short", "depthwise_3x3_s1_12",
                                   "depthwise_5x5_s1_40")},
    "conv1x1_k5_oc13": ("conv", 5, 13, 7, 1, 0, 1),  # K = 5: one full group of 4 and a row alone; 8 + 4 + 1 channels
    "conv1x1_k7_oc6": ("conv", 7, 6, 5, 1, 0, 1),  # K = 7; 4 + 2 channels; 25 pixels = 4 blocks of 6 + 1
    "conv3x3_k18_oc9": ("conv", 2, 9, 8, 3, 1, 1),  # K = 18 (2 past a multiple of 4), 8 + 1 channels
    "fc_k30_oc13": ("fc", 30, 13, 0, 0, 0, 1),  # a lone pixel: the 4x1 kernel's odd group count, K % 4 = 2
    # SDOT 5x5 rows: 16 outputs per step (19 and 40: an overlapping last step), rows of 8-15 two steps of 8
    "depthwise_5x5_s1_12": ("dw", 3, 3, 12, 5, 2, 1),  # two steps of 8, at 0 and 4
}


@pytest.fixture(autouse=True)
def _a76(monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu-user runs every binary of these tests as a Cortex-A76 (as the board's simulator does)."""
    monkeypatch.setenv("QEMU_CPU", "cortex-a76")


@needs_zig
@needs_qemu
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_sdot_kernels_bit_exact_with_the_integer_lowering_under_qemu(name: str, tmp_path: Path) -> None:
    model = _qdq_layer(*LAYERS[name], seed=len(name))
    ran = check_layer(model, BOARD, "qemu-aarch64", tmp_path)
    # the tiles of 4 or 8 channels requantize in registers, a last 1-3 channels through ek_nn_requant
    assert ("ek_nn_sdot_4xn_rq" in ran or "ek_nn_sdot_8xn_rq" in ran) == fused_tiles_expected(model), ran
    # depthwise rows requantized in registers: 5x5 on SDOT (int8 plane), 3x3 on SMLAL (int16 plane)
    five = [i for i in model.graph.initializer if i.name == "wq"][0].dims[-1] == 5
    assert ("ek_nn_sdot_dw5_row" in ran) == (dw_rows_expected(model) and five), ran
    assert ("ek_nn_dw_row_rq" in ran) == (dw_rows_expected(model) and not five), ran


@needs_zig
@needs_qemu
@pytest.mark.parametrize("name", sorted(EXTRA_LAYERS))
def test_sdot_tiles_requantize_in_registers_only_where_every_channel_can(name: str, tmp_path: Path) -> None:
    check_extra_layer(name, BOARD, tmp_path, {"ek_nn_sdot_8xn_rq", "ek_nn_sdot_4xn_rq"})


@needs_zig
@needs_qemu
def test_sdot_kernels_bit_exact_on_a_mobilenetv3_block_under_qemu(block_int8: tuple[Path, onnx.ModelProto],
                                                                  tmp_path: Path) -> None:
    check_block(block_int8, BOARD, "qemu-aarch64", tmp_path)


@needs_zig
@needs_objdump
def test_pi5_conv_kernels_use_sdot_and_pi4_ones_do_not(tmp_path: Path) -> None:
    (tmp_path / "a76").mkdir()
    (tmp_path / "a72").mkdir()
    a76 = _shipped_object(BOARD, tmp_path / "a76")
    kernels = sorted(n for n in _functions(a76) if n.startswith(("ek_nn_sdot_", "ek_nn_dot_")))
    assert kernels == ["ek_nn_sdot_4x1", "ek_nn_sdot_4xn", "ek_nn_sdot_4xn_rq", "ek_nn_sdot_8xn",
                       "ek_nn_sdot_8xn_rq", "ek_nn_sdot_dw5_row"]  # no NEON smlal kernel left
    for name in kernels:
        ops = aarch64_mnemonics(a76, name)
        assert "sdot" in ops, f"{name}: no sdot"
        assert not [op for op in ops if op.startswith(("smlal", "fmla", "fmadd", "scvtf", "bl"))], (name, ops)
        if name.endswith("_rq"):  # requantized from the accumulator registers, narrowed there
            assert {"sqdmulh", "srshl", "sqxtn", "tbl"} <= set(ops), (name, ops)
    dw5 = _shipped_object(BOARD, tmp_path / "a76", "depthwise_5x5_s1_19")
    ops = aarch64_mnemonics(dw5, "ek_nn_sdot_dw5_row")
    assert {"sdot", "tbl", "sqdmulh"} <= set(ops) and "smlal" not in ops, ops
    # every SDOT by element (v.4b[i]): no DUP of a weight lane into a register of its own
    text = aarch64_disassembly(dw5, "ek_nn_sdot_dw5_row")
    sdots = re.findall(r"\tsdot\t(.*)", text)
    assert sdots and all(re.search(r"\.4b\[[0-3]\]$", s.strip()) for s in sdots), sdots
    assert not re.search(r"\tdup\tv\d+\.4s, v\d+\.s\[", text), "a weight lane DUP in ek_nn_sdot_dw5_row"
    a72 = _shipped_object("raspberry-pi-4", tmp_path / "a72")
    ops = aarch64_mnemonics(a72)
    assert "smlal" in ops and "sdot" not in ops and "udot" not in ops


def _pkg_outputs(pkg: Path, x: dict[str, np.ndarray]) -> np.ndarray:
    outs, _samples, _info = run_package(pkg, x, sim=True)
    return np.concatenate([next(iter(o.values())) for o in outs])


def _ort_qdq(model: Path, name: str, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph as written
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {name: s[None]})[0] for s in x])


@pytest.fixture(scope="module")
def ppocr_int8(ppocr_cls_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    from edgekit.frontend.loader import load_model
    from edgekit.frontend.logits import end_at_logits

    shape = (1, 3, 48, 192)
    rng = np.random.default_rng(11)
    pm = load_model(ppocr_cls_path, {"x": shape})
    end_at_logits(pm.model)
    path = tmp_path_factory.mktemp("ppocr-sdot") / "ppocr-cls-int8.onnx"
    calib = {"x": rng.uniform(-1, 1, (4, *shape[1:])).astype(np.float32)}
    quantize(pm.model, QuantConfig(), calibration=calib).save(path)
    return path, {"x": rng.uniform(-1, 1, (2, *shape[1:])).astype(np.float32)}


@needs_zig
@needs_qemu
def test_ppocr_cls_int8_on_pi5_bit_exact_and_within_one_step_of_onnxruntime(ppocr_int8, tmp_path: Path) -> None:
    path, x = ppocr_int8
    outs = {}
    for on in (True, False):
        pkg = tmp_path / f"cls-{on}.ekpkg"
        compile_model(path, BOARD, pkg, options=CompileOptions(mcu_int8_kernels=on))
        outs[on] = _pkg_outputs(pkg, x)
    np.testing.assert_array_equal(outs[True], outs[False])
    want = _ort_qdq(path, "x", x["x"])
    step = _output_step(onnx.load(path))
    assert np.abs(outs[True] - want).max() <= 1.01 * step
    assert np.abs(want).max() > 4 * step


@needs_zig
@needs_qemu
def test_compile_run_bench_digits_int8_for_pi5_under_qemu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``edgekit compile --board raspberry-pi-5`` of the int8 digits CNN, then ``run`` and ``bench --sim``
    (qemu-aarch64 -cpu cortex-a76 from the board profile): SDOT kernels, within one output step of
    onnxruntime's QDQ graph, bit-exact with the kernels off."""
    from edgekit.examples import example_inputs_path, example_model_path

    assert get_board(BOARD)[0].simulator.machine == "qemu-aarch64 -cpu cortex-a76"
    data = np.load(example_inputs_path())["input"]
    int8 = Path(quantize(str(example_model_path()), QuantConfig(), calibration={"input": data[:64]})
                .save(tmp_path / "digits-int8.onnx"))  # fmt: skip
    inputs = tmp_path / "in.npz"
    np.savez(inputs, input=data[:8])
    pkg, out = tmp_path / "digits.ekpkg", tmp_path / "out.npz"
    assert main(["compile", str(int8), "--board", BOARD, "-o", str(pkg)]) == 0
    assert main(["run", str(pkg), "--sim", "--input", str(inputs), "-o", str(out)]) == 0
    got = np.load(out)["logits"]
    want = _ort_qdq(int8, "input", data[:8])
    assert np.abs(got - want).max() <= 1.01 * _output_step(onnx.load(int8))
    off = tmp_path / "digits-off.ekpkg"
    compile_model(int8, BOARD, off, options=CompileOptions(mcu_int8_kernels=False))
    np.testing.assert_array_equal(got, _pkg_outputs(off, {"input": data[:8]}))
    capsys.readouterr()
    assert main(["bench", str(pkg), "--sim", "--runs", "2", "--warmup", "1", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["board"] == BOARD and report["simulated"] is True and report["latency_ms"]["min"] > 0
    assert "qemu-aarch64" in report["runner"]["device"]

"""One memory planner for ``inspect`` and ``compile`` (issue 16 items 3 and 6, issue 17 item 2).

Models are built here; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.api.compile import compile_model as api_compile_model
from edgekit.api.fit_advice import int8_advice, with_int8_advice
from edgekit.cli.main import main
from edgekit.compiler.backends.aot_c import pipeline as aot
from edgekit.compiler.backends.aot_c.memory import MemoryPlan, arena_limit, best_split, check_plan_fits
from edgekit.compiler.backends.aot_c.plan import Buffer
from edgekit.compiler.backend import CompileOptions
from edgekit.compiler.driver import compile_model
from edgekit.core.errors import ConfigError, DoesNotFitError
from edgekit.core.profiles import load_profiles
from edgekit.frontend.loader import load_model


def _conv_chain(path: Path, size: int = 32, channels: int = 8, act: str = "Relu", out_channels: int = 2) -> Path:
    """x -> Conv -> act -> Conv -> act: the ONNX walk counts each conv output
    and its activation as two live buffers; compile fuses them into one kernel."""
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    inits = [w("w1", channels, 3, 3, 3), w("b1", channels), w("w2", out_channels, channels, 3, 3), w("b2", out_channels)]
    extra = {}
    if act == "PRelu":
        inits += [w("a1", channels, 1, 1), w("a2", out_channels, 1, 1)]
        extra = {"r1": ["a1"], "r2": ["a2"]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node(act, ["c1", *extra.get("r1", [])], ["r1"], name="r1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node(act, ["c2", *extra.get("r2", [])], ["y"], name="r2"),
    ]
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, size, size])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _tiny_board_dir(tmp_path: Path, ram: str) -> Path:
    """rv32-mcu-sim's profile under another name, with less RAM (its firmware,
    rv32-sim, reserves 16 KiB of it for the stack)."""
    src = load_profiles().board("rv32-mcu-sim").source
    text = Path(src).read_text(encoding="utf-8") if Path(src).is_file() else None
    if text is None:  # the profile lives inside the package: read it through importlib.resources
        from edgekit.core.resources import data_dir

        text = (data_dir("board_configs") / "rv32-mcu-sim.toml").read_text(encoding="utf-8")
    folder = tmp_path / "boards"
    folder.mkdir()
    text = text.replace('name = "rv32-mcu-sim"', 'name = "tiny-mcu"').replace('ram = "512 KiB"', f'ram = "{ram}"')
    assert 'name = "tiny-mcu"' in text and f'ram = "{ram}"' in text and 'firmware = "rv32-sim"' in text
    (folder / "tiny-mcu.toml").write_text(text, encoding="utf-8")
    return folder


def _no_build(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Makes the kernel build and the firmware link record that they were called."""
    called: list[str] = []

    def build_kernels(*args, **kwargs):
        called.append("build_kernels")
        raise AssertionError("the kernel build ran")

    monkeypatch.setattr(aot, "build_kernels", build_kernels)
    return called


# --------------------------------------------------------------------------- item 3: one answer


def test_inspect_reports_the_arena_compile_plans(tmp_path, capsys):
    model = _conv_chain(tmp_path / "chain.onnx")
    assert main(["inspect", str(model), "--board", "rv32-mcu-sim", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    plan = data["memory_plan"]
    # The ONNX walk holds conv and activation outputs at once; the fused plan does not.
    assert data["peak_activation_bytes"] > plan["arena_bytes"]
    assert data["fits"]["needed_ram"] == plan["arena_bytes"]
    assert "greedy by size" in data["fits"]["planner"]
    assert any("workspaces are not counted" in a for a in plan["assumptions"])
    largest = plan["live_at_peak"][0]
    assert largest["shape"] == [1, 8, 32, 32] and largest["onnx_layers"] == ["Conv 'c1'", "Relu 'r1'"]

    memory = compile_model(model, "rv32-mcu-sim", tmp_path / "chain.ekpkg").manifest.memory or {}
    assert memory["workspace_bytes"] == 0
    assert memory["arena_bytes"] == plan["arena_bytes"]
    assert memory["weight_bytes"] == plan["weight_bytes"] == data["fits"]["needed_flash"]


def test_inspect_table_names_the_planner(tmp_path, capsys):
    model = _conv_chain(tmp_path / "chain.onnx")
    assert main(["inspect", str(model), "--board", "rv32-mcu-sim"]) == 0
    out = capsys.readouterr().out
    assert "RAM (planned arena)" in out and "peak activations, unfused graph" in out
    assert "planner:" in out and "assumes:" in out
    assert "largest tensors alive at kernel" in out


# --------------------------------------------------------------------------- item 6: refuse before building


def test_compile_refuses_ram_before_the_build(tmp_path, monkeypatch):
    called = _no_build(monkeypatch)
    boards = _tiny_board_dir(tmp_path, "32 KiB")
    model = _conv_chain(tmp_path / "chain.onnx", size=32, channels=8)  # 32 KiB per activation
    with pytest.raises(DoesNotFitError) as info:
        compile_model(model, "tiny-mcu", tmp_path / "x.ekpkg", board_dirs=[boards])
    err = info.value
    assert called == []
    assert err.fields["before_build"] is True and err.fields["ram_bytes"] == 16 * 1024
    assert f"arena {err.fields['arena_bytes']} B" in err.message
    assert "16384 B (16.0 KiB) of RAM for the arena (RAM 32768 B (32.0 KiB) less the firmware's 16384 B stack)" in err.message
    assert not (tmp_path / "x.ekpkg").exists()


def test_compile_refuses_a_weights_slot_overflow_before_the_build(tmp_path, monkeypatch):
    called = _no_build(monkeypatch)
    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.standard_normal((300, 1024)).astype(np.float32), "w")  # 1.2 MB
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 300])], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(DoesNotFitError, match="do not fit a weights slot") as info:
        compile_model(load_model(model), "rv32-mcu-sim", tmp_path / "x.ekpkg",
                      options=CompileOptions(weight_storage="dense"))  # fmt: skip
    assert called == []
    assert info.value.fields["weight_bytes"] >= 300 * 1024 * 4 > info.value.fields["slot_bytes_at_most"]


# --------------------------------------------------------------------------- issue 17 item 2: true advice


def test_refusal_names_the_largest_tensors_and_planned_options(tmp_path, monkeypatch):
    _no_build(monkeypatch)
    boards = _tiny_board_dir(tmp_path, "32 KiB")
    model = _conv_chain(tmp_path / "chain.onnx", size=32, channels=8)
    with pytest.raises(DoesNotFitError) as info:  # the api: the compiler plans no int8 option (it runs no quantizer)
        api_compile_model(model, "tiny-mcu", tmp_path / "x.ekpkg", board_dirs=[boards])
    err = info.value
    assert "1x8x32x32 float32, 32768 B (32.0 KiB), written by fused_conv2d" in err.message
    assert "(ONNX Conv 'c1', Relu 'r1')" in err.message
    advice = {a["option"]: a for a in err.fields["advice"]}
    arena = err.fields["arena_bytes"]
    # int8 was planned, not assumed: its arena is a real plan of the quantized model.
    int8 = advice["int8"]
    assert int8["arena_bytes"] is not None and int8["helps"] == (int8["arena_bytes"] < arena)
    assert ("--quantize int8" in int8["text"]) == int8["helps"]
    assert f"{int8['arena_bytes']} B" in int8["text"] and int8["text"] in err.hint
    # Half the height and width: a fully convolutional model accepts it and needs a quarter.
    half = advice["input"]
    assert "--input-shape x=1x3x16x16" in half["text"] and half["helps"]
    assert half["arena_bytes"] <= arena // 2
    assert advice["split"]["helps"] is False  # the peak is one kernel's own input and output
    assert [a["option"] for a in err.fields["advice"]] == ["int8", "input", "split"]
    assert err.hint == " ".join(a["text"] for a in err.fields["advice"])


def test_inspect_advises_when_the_arena_exceeds_the_ram_left_by_the_stack(tmp_path, capsys):
    # 44 KiB of arena: less than the board's 48 KiB of RAM, more than the 32 KiB its firmware leaves.
    boards = _tiny_board_dir(tmp_path, "48 KiB")
    model = _conv_chain(tmp_path / "chain.onnx", size=32, channels=8)
    assert main(["inspect", str(model), "--board", "tiny-mcu", "--boards-dir", str(boards), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["memory_plan"]
    assert plan["ram_for_arena_bytes"] == 32 * 1024 < plan["arena_bytes"] <= 48 * 1024
    assert [a["option"] for a in plan["advice"]] == ["int8", "input", "split"]


def test_the_compiler_alone_plans_input_and_split_and_leaves_int8_to_the_api(tmp_path, monkeypatch):
    _no_build(monkeypatch)
    boards = _tiny_board_dir(tmp_path, "32 KiB")
    model = _conv_chain(tmp_path / "chain.onnx", size=32, channels=8)
    with pytest.raises(DoesNotFitError) as info:
        compile_model(model, "tiny-mcu", tmp_path / "x.ekpkg", board_dirs=[boards])
    err = info.value
    assert [a["option"] for a in err.fields["advice"]] == ["input", "split"]
    shrink = err.fields["shrink"]  # what the api needs to plan the int8 option
    assert shrink.board.name == "tiny-mcu" and shrink.plan.arena_bytes >= err.fields["arena_bytes"]
    added = with_int8_advice(err)
    assert [a["option"] for a in added.fields["advice"]] == ["int8", "input", "split"]
    assert added.message == err.message and added.hint.endswith(err.hint) and added.fields["shrink"] is None


def test_a_board_whose_ram_the_stack_takes_is_a_config_error_not_unlimited(tmp_path, monkeypatch, capsys):
    _no_build(monkeypatch)
    boards = _tiny_board_dir(tmp_path, "16 KiB")  # all of it the rv32-sim firmware's stack
    board = load_profiles([boards]).board("tiny-mcu")
    with pytest.raises(ConfigError) as info:
        arena_limit(board)
    err = info.value
    assert str(boards / "tiny-mcu.toml") in err.message and "16384 B of RAM, no more than the 16384 B stack" in err.message
    assert "STACK_BYTES" in err.hint and err.fields["stack_bytes"] == err.fields["ram_bytes"] == 16384
    model = _conv_chain(tmp_path / "chain.onnx", size=8, channels=2)  # a few KiB: "not limited" would pass it
    with pytest.raises(ConfigError, match="no RAM is left for the model's arena"):
        compile_model(model, "tiny-mcu", tmp_path / "x.ekpkg", board_dirs=[boards])
    assert main(["inspect", str(model), "--board", "tiny-mcu", "--boards-dir", str(boards)]) == 2
    assert "no RAM is left for the model's arena" in capsys.readouterr().err


def _plan(arena: int, buffers: tuple[Buffer, ...] = (), calls: int = 1) -> MemoryPlan:
    return MemoryPlan(board="b", arena_bytes=arena, arena_bytes_without_reuse=arena, dense_arena_bytes=arena,
                      weight_bytes=0, dense_weight_bytes=0, weight_storage="dense", kernel_calls=calls, peak_step=0,
                      peak_kernel="k", live_at_peak=(), buffers=buffers, kernels=("k",) * calls)  # fmt: skip


def test_int8_is_not_advised_when_the_plan_says_it_does_not_shrink(tmp_path):
    board = load_profiles().board("rv32-mcu-sim")
    prepared = load_model(_conv_chain(tmp_path / "chain.onnx"))
    same = _plan(10**6)
    int8 = int8_advice(same, board, None, lambda other: same, prepared)
    assert not int8.helps and "would not help" in int8.text and "--quantize" not in int8.text


def test_best_split_hands_an_early_output_to_the_host():
    # t5 is a model output written by kernel 0: the whole-model plan keeps it
    # to the end for the host; split after kernel 0 or 1, part A hands it over.
    buffers = (Buffer("t0", 100, -1, 0), Buffer("t5", 5000, 0, 3), Buffer("t1", 1000, 0, 1), Buffer("t2", 1000, 1, 2),
               Buffer("t3", 1000, 2, 3))  # fmt: skip
    whole = 5000 + 1000 + 1000
    plan = MemoryPlan(**{**_plan(whole, buffers, calls=3).__dict__, "last_use": {"t0": 0, "t5": 0, "t1": 1, "t2": 2,
                                                                                   "t3": 2}})  # fmt: skip
    s, a, b = best_split(plan)
    assert s in (0, 1) and max(a, b) < whole and min(a, b) <= 2048
    assert best_split(_plan(100, (Buffer("t0", 100, -1, 0),), calls=1)) is None


@pytest.mark.parametrize("name, available", [("rv32-mcu-sim", 512 * 1024 - 16 * 1024), ("stm32h7", 512 * 1024 - 16 * 1024)])
def test_check_plan_fits_passes_what_the_firmware_ram_holds(name, available):
    # stm32h7 has 1 MiB of SRAM in banks; its firmware links into the 512 KiB
    # AXI bank. Both scripts reserve a 16 KiB stack.
    board = load_profiles().board(name)
    assert arena_limit(board)[0] == available
    check_plan_fits(_plan(available), board)
    with pytest.raises(DoesNotFitError, match=f"arena {available + 64} B .* > {available} B .* of RAM for the arena"):
        check_plan_fits(_plan(available + 64), board)

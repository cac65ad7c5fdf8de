"""AOT backend pieces: arena planner, graph walk, fit checks, toolchain flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler.backends.aot_c.pipeline import build, check_fits
from edgekit.compiler.backends.aot_c.emit import dl_dtype
from edgekit.compiler.backends.aot_c.graph import extract_graph
from edgekit.compiler.backends.aot_c.layout import arena_buffers, pack_weights
from edgekit.compiler.backends.aot_c.lower import import_model, lower_for_aot
from edgekit.compiler.backends.aot_c.plan import Buffer, find_overlaps, plan_arena
from edgekit.compiler.backend import CompileOptions
from edgekit.compiler.firmware import cc_flags, firmware_spec
from edgekit.api.fit_advice import with_int8_advice
from edgekit.core.errors import ConfigError, CompileError, DoesNotFitError
from edgekit.core.profiles import get_board
from edgekit.frontend.loader import load_model

# --------------------------------------------------------------------------- planner

buffers_st = st.lists(
    st.tuples(st.integers(0, 5000), st.integers(-1, 12), st.integers(0, 6)),
    min_size=1,
    max_size=25,
).map(lambda rows: [Buffer(f"b{i}", size, first, first + span) for i, (size, first, span) in enumerate(rows)])


@settings(max_examples=150, deadline=None)
@given(buffers_st, st.sampled_from([16, 64]))
def test_plan_never_overlaps_live_buffers(buffers: list[Buffer], alignment: int) -> None:
    plan = plan_arena(buffers, alignment)
    assert find_overlaps(buffers, plan) == []
    # Never worse than no reuse (up to alignment padding), never better than
    # the bytes alive at the busiest step.
    assert plan.arena_bytes <= sum(-(-b.size // alignment) * alignment for b in buffers)
    steps = range(min(b.first for b in buffers), max(b.last for b in buffers) + 1)
    peak = max(sum(b.size for b in buffers if b.first <= s <= b.last) for s in steps)
    assert plan.arena_bytes >= peak


def test_chain_reuses_memory() -> None:
    # t_i is written by call i and read by call i+1: only two are ever alive.
    chain = [Buffer(f"t{i}", 1000 * (i % 3 + 1), i, i + 1) for i in range(8)]
    plan = plan_arena(chain, 64)
    assert find_overlaps(chain, plan) == []
    assert plan.arena_bytes < plan.total_bytes
    assert plan.arena_bytes <= 2 * 3008 + 64


def test_in_place_buffer_shares_the_offset_and_frees_the_rest() -> None:
    # A float input quantized in place: q (1/4 of x) starts at x's offset;
    # once x is dead, y may use the bytes of x past q.
    x, q = Buffer("x", 4000, -1, 0), Buffer("q", 1000, 0, 1, within="x")
    y, z = Buffer("y", 2500, 1, 2), Buffer("z", 700, -1, 3)
    plan = plan_arena([y, q, z, x], 64)
    assert plan.offsets["q"] == plan.offsets["x"]
    assert find_overlaps([x, q, y, z], plan) == []
    assert plan.arena_bytes <= 4000 + 700 + 2 * 64  # y fits in x's tail
    # Without the relation the same lifetimes need more bytes.
    assert plan_arena([x, Buffer("q", 1000, 0, 1), y, z], 64).arena_bytes > plan.arena_bytes


def test_find_overlaps_detects_a_bad_plan() -> None:
    a, b = Buffer("a", 100, 0, 2), Buffer("b", 100, 1, 3)
    plan = plan_arena([a, b], 64)
    bad = type(plan)(offsets={"a": 0, "b": 64}, arena_bytes=256, alignment=64, total_bytes=200)
    assert find_overlaps([a, b], plan) == []
    assert find_overlaps([a, b], bad) == [("a", "b")]


def test_plan_rejects_duplicate_names() -> None:
    with pytest.raises(CompileError, match="named twice: x"):
        plan_arena([Buffer("x", 1, 0, 0), Buffer("x", 2, 1, 1)])


# --------------------------------------------------------------------------- graph


def _model(size: int = 8, channels: int = 4, pool: bool = False):
    """conv/relu/flatten, or with ``pool`` conv/relu/global-avg-pool/flatten/gemm."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
    ]
    if pool:
        nodes += [
            helper.make_node("GlobalAveragePool", ["r"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("MatMul", ["f", "m"], ["y"]),
        ]
        out_shape = [1, 3]
    else:
        nodes += [helper.make_node("Flatten", ["r"], ["y"])]
        out_shape = [1, channels * size * size]
    inits = [
        numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((channels,)).astype(np.float32), "b"),
    ]
    if pool:
        inits.append(numpy_helper.from_array(rng.standard_normal((channels, 3)).astype(np.float32), "m"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def test_graph_walk_finds_calls_views_and_weights() -> None:
    import tvm

    prepared = _model(pool=True)
    graph = extract_graph(lower_for_aot(import_model(prepared), tvm.target.Target({"kind": "llvm"})))
    assert [graph.tensors[i].kind for i in graph.inputs] == ["input"]
    (out,) = graph.outputs
    assert graph.tensors[out].kind == "arena" and graph.tensors[out].shape == (1, 3)
    assert [len(c.args) for c in graph.calls] == [4, 2, 3] and len(graph.weights()) == 3
    # The conv writes what the pooling reads.
    assert graph.calls[0].args[-1] == graph.calls[1].args[0]
    # The Flatten between pooling and matmul is a view of the pooled tensor, not a copy kernel.
    flat = graph.tensors[graph.calls[2].args[0]]
    assert flat.kind == "view" and flat.shape == (1, 4) and graph.root(flat.index) == graph.calls[1].args[-1]
    buffers = {b.name: b for b in arena_buffers(graph, {})}
    n = len(graph.calls)
    # The input's bytes are free once the conv has read them (the host writes inputs before every run).
    assert (buffers[f"t{graph.inputs[0]}"].first, buffers[f"t{graph.inputs[0]}"].last) == (-1, 0)
    assert buffers[f"t{out}"].last == n
    # The pooled tensor lives until the matmul has read it through its view.
    assert buffers[f"t{graph.root(flat.index)}"].last == 2
    blob, offsets = pack_weights(graph)
    assert all(off % 64 == 0 for off in offsets.values())
    w = graph.weights()[0]
    assert blob[offsets[w.index] : offsets[w.index] + w.nbytes] == w.value.astype("<f4").tobytes()


# --------------------------------------------------------------------------- fit checks


def test_too_big_model_for_rv32_names_the_numbers() -> None:
    board, target = get_board("rv32-mcu-sim")
    prepared = _model(size=128, channels=16)  # input 192 KiB + output 1 MiB > 512 KiB RAM
    with pytest.raises(DoesNotFitError) as info:
        build(prepared, board, target, CompileOptions(), lambda stage, msg: None)
    err = info.value
    assert "rv32-mcu-sim" in err.message and "RAM 524288 B" in err.message
    assert f"arena {err.fields['arena_bytes']} B" in err.message
    assert err.fields["arena_bytes"] >= (3 + 16) * 128 * 128 * 4
    assert "quantize" in with_int8_advice(err).hint.lower()  # the api adds the int8 option (it runs the quantizer)


def test_check_fits_flash_message() -> None:
    board, _ = get_board("stm32h7")
    with pytest.raises(DoesNotFitError, match=r"weights 2000000 B \+ code 200000 B = 2200000 B > flash 2097152 B"):
        check_fits(board, arena_bytes=1000, weight_bytes=2_000_000, code_bytes=200_000)
    check_fits(board, arena_bytes=1000, weight_bytes=1000, code_bytes=1000)


# --------------------------------------------------------------------------- emitter and toolchain


def test_dl_dtype_codes() -> None:
    assert dl_dtype("float32") == (2, 32, 1)
    assert dl_dtype("int8") == (0, 8, 1)
    assert dl_dtype("uint8") == (1, 8, 1)
    assert dl_dtype("bool") == (6, 8, 1)
    with pytest.raises(CompileError, match="float32x4"):
        dl_dtype("float32x4")


def test_cc_flags_follow_the_tvm_target() -> None:
    _, rv = get_board("rv32-mcu-sim")
    assert cc_flags(rv) == ["-target", "riscv32-freestanding-none", "-mcpu=generic_rv32+m+f", "-mabi=ilp32f"]
    _, m7 = get_board("stm32h7")
    # zig's cortex_m7 has no FPU unless asked (LLVM's, which builds the kernels, has one)
    assert cc_flags(m7) == ["-target", "thumb-freestanding-eabihf", "-mcpu=cortex_m7+fp_armv8d16"]


def test_firmware_spec_follows_the_port_the_board_names(tmp_path: Path) -> None:
    board, _ = get_board("stm32h7")
    spec = firmware_spec(board)
    assert board.firmware == "stm32h7" and spec is not None
    assert spec.linker_script is not None and spec.linker_script.name == "link.ld"
    assert spec.linker_script.parent.name == "stm32h7" and spec.ram_bytes == 0x80000 and spec.stack_bytes > 0
    assert firmware_spec("host") is None  # no firmware port: nothing to link
    # A ports.toml that names a missing file fails naming the file and key.
    (tmp_path / "ports.toml").write_text('[ports.stm32h7]\nsources = ["nope.c"]\n')
    with pytest.raises(ConfigError, match="ports.toml: key 'ports.stm32h7.sources' names missing file 'nope.c'"):
        firmware_spec(board, tmp_path)
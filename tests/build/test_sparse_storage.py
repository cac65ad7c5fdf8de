"""Bitmask-sparse weight storage: the codec, the size rule, the layout and the options."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.cli.main import main
from edgekit.compiler.backends.aot_c.pipeline import choose_storage, check_fits, compile_aot
from edgekit.compiler.backends.aot_c.layout import BITMASK, DECODE_ENTRY_BYTES, DENSE, sparse_pays
from edgekit.compiler.backends.aot_c.plan import find_overlaps
from edgekit.compiler.backend import CompileOptions, refuse_weight_storage
from edgekit.compress.prune import sparse_storage_bytes
from edgekit.core.errors import ConfigError, DoesNotFitError, InputError
from edgekit.core.profiles import get_board
from edgekit.core.sparse import bitmask_bytes, decode_bitmask, encode_bitmask, mask_bytes, values_offset
from edgekit.frontend.loader import load_model

# --------------------------------------------------------------------------- codec


def _sparse(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, zeros: float) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        a = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        a[a == 0] = 1
    a[rng.random(shape) < zeros] = 0
    return a


CASES = {
    "fp32 60% zeros": ((16, 8, 3, 3), "float32", 0.6),
    "fp32 all zeros": ((5, 7), "float32", 1.0),
    "fp32 no zeros": ((33,), "float32", 0.0),
    "int8 70% zeros": ((10, 13), "int8", 0.7),
    "int8 no zeros, 1 element": ((1,), "int8", 0.0),
    "int8 all zeros, 7 elements": ((7,), "int8", 1.0),
    "int32 bias 50% zeros": ((9,), "int32", 0.5),
    "int64 50% zeros": ((3, 5), "int64", 0.5),
    "fp16 50% zeros": ((2, 11), "float16", 0.5),
    "uint8 9 elements": ((9,), "uint8", 0.3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_is_bit_exact(case: str) -> None:
    shape, dtype, zeros = CASES[case]
    a = _sparse(np.random.default_rng(len(case)), shape, dtype, zeros)
    data = encode_bitmask(a)
    assert len(data) == bitmask_bytes(a)
    nnz = int(np.count_nonzero(a))
    assert len(data) == values_offset(a.size, a.itemsize) + nnz * a.itemsize
    assert values_offset(a.size, a.itemsize) % a.itemsize == 0  # values aligned to their size
    assert values_offset(a.size, a.itemsize) - mask_bytes(a.size) < a.itemsize
    back = decode_bitmask(data, a.size, a.dtype)
    assert back.dtype == a.dtype and back.tobytes() == a.tobytes()


def test_layout_of_the_encoding() -> None:
    a = np.array([0, 3, 0, 0, 0, 0, 0, 0, 5, 0], np.float32)
    data = encode_bitmask(a)
    # mask: element 1 -> byte 0 bit 1; element 8 -> byte 1 bit 0; padded to 4 bytes
    assert data[:4] == bytes([0b10, 0b1, 0, 0])
    assert data[4:] == np.array([3, 5], "<f4").tobytes()


def test_negative_zero_and_nan_are_values() -> None:
    a = np.array([0.0, -0.0, np.nan, 0.0, 1.0], np.float32)
    data = encode_bitmask(a)
    assert len(data) == 1 + 3 + 3 * 4  # -0.0, NaN and 1.0 are not all-zero bytes
    assert decode_bitmask(data, a.size, a.dtype).tobytes() == a.tobytes()


def test_empty_tensor() -> None:
    a = np.zeros((0, 4), np.float32)
    assert encode_bitmask(a) == b"" and bitmask_bytes(a) == 0
    assert decode_bitmask(b"", 0, "float32").size == 0


def test_decode_rejects_wrong_lengths() -> None:
    a = np.array([1, 0, 2, 0, 0, 3, 0, 0, 4], np.int8)
    data = encode_bitmask(a)
    with pytest.raises(InputError, match="truncated"):
        decode_bitmask(data[:1], a.size, a.dtype)
    with pytest.raises(InputError, match="with 4 non-zeros"):
        decode_bitmask(data[:-1], a.size, a.dtype)
    with pytest.raises(InputError, match="with 4 non-zeros"):
        decode_bitmask(data + b"\0", a.size, a.dtype)


def test_pruning_estimate_is_the_same_rule() -> None:
    rng = np.random.default_rng(0)
    for dtype in ("float32", "int8", "float16"):
        a = _sparse(rng, (37, 5), dtype, 0.55)
        assert sparse_storage_bytes(a) == bitmask_bytes(a) == len(encode_bitmask(a))


# --------------------------------------------------------------------------- layout


def _model(zeros: float, seed: int = 0):
    """conv(3->16) -> relu -> conv(16->16) -> flatten -> gemm(16*8*8 -> 10), weights with ``zeros`` zeroed."""
    rng = np.random.default_rng(seed)

    def w(name: str, shape: list[int], z: float) -> TensorProto:
        return numpy_helper.from_array(_sparse(rng, tuple(shape), "float32", z), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    inits = [w("w1", [16, 3, 3, 3], zeros), w("b1", [16], 0.0), w("w2", [16, 16, 3, 3], zeros), w("b2", [16], 0.0),
             w("w3", [10, 16 * 8 * 8], zeros), w("b3", [10], 0.0)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)  # fmt: skip
    return load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


@pytest.fixture(scope="module")
def pruned_artifacts():
    import tvm

    return compile_aot(_model(0.6), tvm.target.Target({"kind": "llvm"}), sparse_weights=True)


def test_sparse_only_where_flash_gets_smaller(pruned_artifacts) -> None:
    layout = pruned_artifacts.layout
    by_enc = {w.name: w.encoding for w in layout.storage}
    assert sorted(enc for enc in by_enc.values()) == [BITMASK] * 3 + [DENSE] * 3  # 3 weights, 3 dense biases
    for w in layout.storage:
        if w.encoding == BITMASK:
            assert w.stored_bytes < w.dense_bytes
            assert w.offset % 64 == 0 and w.index in layout.decoded
        else:
            assert w.stored_bytes == w.dense_bytes
    assert layout.weight_bytes < layout.dense_weight_bytes
    # The blob holds exactly the encodings at their offsets.
    graph = pruned_artifacts.graph
    for w in layout.sparse_weights():
        t = graph.tensors[w.index]
        chunk = layout.weights_blob[w.offset : w.offset + w.stored_bytes]
        assert decode_bitmask(chunk, t.value.size, t.value.dtype).tobytes() == t.value.tobytes()


def test_decode_buffers_are_planned_short_lived(pruned_artifacts) -> None:
    layout = pruned_artifacts.layout
    graph = pruned_artifacts.graph
    assert find_overlaps(layout.buffers, layout.plan) == []
    bufs = {b.name: b for b in layout.buffers}
    for w in layout.sparse_weights():
        b = bufs[f"t{w.index}"]
        steps = [s for s, c in enumerate(graph.calls) if w.index in (graph.root(a) for a in c.args)]
        assert (b.first, b.last) == (steps[0], steps[-1]) == (w.decode_step, steps[-1])
        assert layout.plan.offsets[b.name] == layout.decoded[w.index]
    # Each weight is read by one call: the scratch is the largest one, not the sum.
    sizes = [w.dense_bytes for w in layout.sparse_weights()]
    assert layout.decode_scratch_bytes == max(sizes) < sum(sizes)
    assert layout.arena_bytes >= layout.dense_arena_bytes
    assert layout.arena_bytes <= layout.dense_arena_bytes + layout.decode_scratch_bytes + 64


def test_decoder_and_table_are_in_model_c(pruned_artifacts) -> None:
    c = pruned_artifacts.model_c
    assert "ek_unpack_bitmask" in c and "static const ek_decode_t ek_decodes[3]" in c
    assert "malloc" not in c and "no library emits C decoders" in c
    assert "#define EK_MODEL_DENSE_WEIGHT_BYTES" in pruned_artifacts.model_h


def test_unpruned_weights_stay_dense() -> None:
    import tvm

    art = compile_aot(_model(0.0), tvm.target.Target({"kind": "llvm"}), sparse_weights=True)
    assert not art.layout.decoded and all(w.encoding == DENSE for w in art.layout.storage)
    assert art.layout.weight_bytes == art.layout.dense_weight_bytes and art.layout.decode_scratch_bytes == 0
    assert "ek_decode" not in art.model_c


def test_sparse_pays_counts_the_aligned_slot(pruned_artifacts) -> None:
    graph = pruned_artifacts.graph
    bias = next(t for t in graph.weights() if t.value.size == 16)
    bias = replace(bias, value=bias.value.copy())
    bias.value.reshape(-1)[:8] = 0.0
    # 36 B sparse against 64 B dense, but both take one 64 B slot of the blob: no gain, stays dense
    assert bitmask_bytes(bias.value) == 36 and not sparse_pays(bias)
    t = next(t for t in graph.weights() if t.value.size == 16 * 16 * 9)
    t = replace(t, value=np.ones(t.value.shape, np.float32))
    # dense 9216 B; sparse 288 + 4 * (2304 - k) B must drop to the 9152 B slot: k >= 88 zeros
    t.value.reshape(-1)[:87] = 0.0
    assert not sparse_pays(t)
    t.value.reshape(-1)[:88] = 0.0
    assert sparse_pays(t)
    assert DECODE_ENTRY_BYTES == 16


# --------------------------------------------------------------------------- RAM rule


def _board_with_ram(ram: int):
    board, _ = get_board("rv32-mcu-sim")
    return replace(board, memory=replace(board.memory, ram_bytes=ram))


def test_auto_falls_back_to_dense_when_ram_does_not_fit(pruned_artifacts, caplog) -> None:
    layout = pruned_artifacts.layout
    board = _board_with_ram(layout.dense_arena_bytes)  # dense fits exactly, sparse does not
    with caplog.at_level("INFO", logger="edgekit.compiler.backends.aot_c.pipeline"):
        art, note = choose_storage(pruned_artifacts, board, "auto")
    assert not art.layout.decoded and art.layout.arena_bytes == layout.dense_arena_bytes
    assert "more than the" in note and "RAM" in note
    assert "storing every weight dense" in caplog.text
    assert "ek_decode" not in art.model_c


def test_auto_keeps_sparse_when_ram_fits(pruned_artifacts) -> None:
    art, note = choose_storage(pruned_artifacts, _board_with_ram(pruned_artifacts.layout.arena_bytes), "auto")
    assert art is pruned_artifacts and note == ""


def test_sparse_mode_raises_when_ram_does_not_fit(pruned_artifacts) -> None:
    layout = pruned_artifacts.layout
    with pytest.raises(DoesNotFitError) as info:
        choose_storage(pruned_artifacts, _board_with_ram(layout.dense_arena_bytes), "sparse")
    err = info.value
    assert f"arena is {layout.arena_bytes} B" in err.message and "--weight-storage auto" in err.hint
    assert err.fields["decode_scratch_bytes"] == layout.decode_scratch_bytes


def test_check_fits_names_the_decode_scratch() -> None:
    board = _board_with_ram(10_000)
    want = r"arena 12000 B \(incl\. 4000 B of decoded sparse weights\) > RAM 10000 B"
    with pytest.raises(DoesNotFitError, match=want):
        check_fits(board, arena_bytes=12_000, weight_bytes=10, code_bytes=10, decode_scratch_bytes=4000)


# --------------------------------------------------------------------------- options and CLI


def test_weight_storage_option_is_validated() -> None:
    assert CompileOptions().weight_storage == "auto"
    assert CompileOptions(weight_storage="sparse").to_json()["weight_storage"] == "sparse"
    with pytest.raises(ConfigError, match="weight_storage must be one of auto, dense, sparse"):
        CompileOptions(weight_storage="rle")


def test_sparse_is_refused_for_non_mcu_codegens() -> None:
    refuse_weight_storage(CompileOptions(weight_storage="sparse"), "aot-c", "rv32-mcu-sim")
    for mode in ("auto", "dense"):
        refuse_weight_storage(CompileOptions(weight_storage=mode), "llvm", "host")
    with pytest.raises(ConfigError, match="codegen llvm") as info:
        refuse_weight_storage(CompileOptions(weight_storage="sparse"), "llvm", "host")
    assert "rv32-mcu-sim" in info.value.hint


def test_cli_refuses_sparse_for_host(tmp_path, capsys) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(_model(0.6).serialize())
    rc = main(["compile", str(model), "--board", "host", "-o", str(tmp_path / "m.ekpkg"), "--weight-storage", "sparse"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "weight storage 'sparse' is for microcontroller boards" in err
    assert not (tmp_path / "m.ekpkg").exists()

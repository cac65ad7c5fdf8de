"""AOT C output against onnxruntime: on the host, linked for MCUs, and run on rv32 in unicorn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.compiler import firmware
from edgekit.compiler.backends.aot_c.pipeline import PASSES, build, compile_aot
from edgekit.compiler.backends.aot_c.host import run_on_host
from edgekit.compiler.backends.aot_c.section import AotSection
from edgekit.compiler.backend import CompileOptions
from edgekit.core.profiles import get_board
from edgekit.frontend.loader import load_model

HERE = Path(__file__).resolve().parent
STARTUP = HERE / "aot_min" / "start.c"
LINK_TEMPLATE = HERE / "aot_min" / "link.ld.in"
RTOL = 1e-4

needs_zig = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang not installed (pip install ziglang)")


def _w(rng: np.random.Generator, name: str, shape: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def chain_cnn() -> onnx.ModelProto:
    """conv/relu/maxpool/conv/relu/global-avg-pool/flatten/gemm."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    inits = [_w(rng, "w1", [8, 3, 3, 3]), _w(rng, "b1", [8]), _w(rng, "w2", [16, 8, 3, 3]), _w(rng, "b2", [16]),
             _w(rng, "w3", [10, 16]), _w(rng, "b3", [10])]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def residual_concat_cnn() -> onnx.ModelProto:
    """A residual add, a two-branch concat, avg-pool, gemm and softmax; two outputs."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["res"]),
        helper.make_node("Relu", ["res"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["e1"]),
        helper.make_node("Conv", ["r2", "w4", "b4"], ["e3"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["e1", "e3"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["ap"], ["f"]),
        helper.make_node("Gemm", ["f", "w5", "b5"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    inits = [_w(rng, "w1", [8, 2, 3, 3]), _w(rng, "b1", [8]), _w(rng, "w2", [8, 8, 3, 3]), _w(rng, "b2", [8]),
             _w(rng, "w3", [4, 8, 1, 1]), _w(rng, "b3", [4]), _w(rng, "w4", [4, 8, 3, 3]), _w(rng, "b4", [4]),
             _w(rng, "w5", [6, 8 * 4 * 4]), _w(rng, "b5", [6])]
    graph = helper.make_graph(
        nodes, "residual_concat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 6]),
         helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


MODELS = {"chain": chain_cnn, "residual_concat": residual_concat_cnn}


def _feeds(prepared, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal(s.shape).astype(s.dtype) for s in prepared.inputs}


def _reference(prepared, feeds) -> list[np.ndarray]:
    sess = ort.InferenceSession(prepared.serialize(), providers=["CPUExecutionProvider"])
    return sess.run([s.name for s in prepared.outputs], feeds)


def _assert_close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        rel = np.abs(g - w).max() / max(np.abs(w).max(), 1e-12)
        assert rel <= RTOL, f"relative max error {rel:.3g} > {RTOL}"


def _host_target():
    import tvm

    return tvm.target.Target({"kind": "llvm"})


@pytest.mark.parametrize("name", sorted(MODELS))
def test_host_build_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    prepared = load_model(MODELS[name]())
    art = compile_aot(prepared, _host_target())
    feeds = _feeds(prepared)
    got = run_on_host(art.members(), prepared.inputs, prepared.outputs, feeds, workdir=tmp_path)
    _assert_close(got, _reference(prepared, feeds))
    # Reuse happened: the arena is smaller than every tensor side by side.
    assert art.layout.arena_bytes < art.layout.plan.total_bytes


def test_descriptors_pass_tvm_argument_checks(tmp_path: Path) -> None:
    """With TVM's packed-API asserts kept, every DLTensor model.c builds is checked
    (dtype, ndim, shape, strides, alignment); a wrong one would fail the run."""
    prepared = load_model(residual_concat_cnn())
    art = compile_aot(prepared, _host_target(), disable_asserts=False)
    feeds = _feeds(prepared, seed=3)
    got = run_on_host(art.members(), prepared.inputs, prepared.outputs, feeds, workdir=tmp_path)
    _assert_close(got, _reference(prepared, feeds))


def test_workspace_allocator_matches_onnxruntime(tmp_path: Path) -> None:
    """Unscheduled kernels take their temporaries from TVMBackendAllocWorkspace,
    which model.c serves from planned arena slices."""
    prepared = load_model(chain_cnn())
    art = compile_aot(prepared, _host_target(), schedule=False)
    assert max(b for _, b in art.layout.workspace) > 0
    feeds = _feeds(prepared, seed=4)
    got = run_on_host(art.members(), prepared.inputs, prepared.outputs, feeds, workdir=tmp_path)
    _assert_close(got, _reference(prepared, feeds))


def _link_test_image(result, board, target, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for member, data in result.members.items():
        (out / Path(member).name).write_bytes(data)
    script = (
        LINK_TEMPLATE.read_text()
        .replace("@FLASH@", str(board.memory.flash_bytes))
        .replace("@RAM@", str(board.memory.ram_bytes))
        .replace("@WEIGHTS@", str(result.memory["weight_bytes"]))
    )
    (out / "link.ld").write_text(script)
    return firmware.link_image(
        firmware.find_toolchain(cross=True),
        [STARTUP, out / "model.c", out / "kernels.o"],
        out / "image.elf",
        firmware.cc_flags(target),
        linker_script=out / "link.ld",
        include_dirs=[out],
    )


@needs_zig
@pytest.mark.parametrize("board_name", ["rv32-mcu-sim", "stm32h7"])
def test_mcu_build_links(board_name: str, tmp_path: Path) -> None:
    board, target = get_board(board_name)
    prepared = load_model(residual_concat_cnn())
    stages: list[str] = []
    result = build(prepared, board, target, CompileOptions(), lambda stage, msg: stages.append(stage))
    assert result.runtime == "aot-c"
    # The named pass list is what ran: every step, in its order (both boards link a firmware image).
    assert list(dict.fromkeys(stages)) == [p.name for p in PASSES]
    assert {"model/model.c", "model/model.h", "model/kernels.o", "weights.bin"} <= set(result.members)
    mem = result.memory
    assert mem["code_bytes"] > 0 and mem["weight_bytes"] == len(result.members["weights.bin"])
    elf = _link_test_image(result, board, target, tmp_path)
    # The image holds at least the model's code, and its RAM at least the arena.
    assert firmware.flash_bytes([elf]) >= 0.5 * mem["code_bytes"]
    assert firmware.ram_bytes([elf]) >= mem["arena_bytes"]


@needs_zig
@pytest.mark.skipif(importlib.util.find_spec("unicorn") is None, reason="unicorn not installed")
def test_rv32_image_matches_onnxruntime_in_unicorn(tmp_path: Path) -> None:
    """The rv32imf image, run instruction by instruction, computes what onnxruntime does."""
    from elftools.elf.elffile import ELFFile
    from unicorn import UC_ARCH_RISCV, UC_MODE_RISCV32, Uc
    from unicorn.riscv_const import UC_RISCV_REG_PC

    board, target = get_board("rv32-mcu-sim")
    prepared = load_model(residual_concat_cnn())
    result = build(prepared, board, target, CompileOptions(), lambda stage, msg: None)
    elf_path = _link_test_image(result, board, target, tmp_path)
    with open(elf_path, "rb") as fh:
        elf = ELFFile(fh)
        syms = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}
        uc = Uc(UC_ARCH_RISCV, UC_MODE_RISCV32)
        uc.mem_map(0, board.memory.flash_bytes)
        uc.mem_map(0x20000000, board.memory.ram_bytes)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]:
                uc.mem_write(seg["p_paddr"], seg.data())
        entry = elf.header.e_entry
    uc.mem_write(syms["__weights_start"], result.members["weights.bin"])
    # Run the startup (it clears .bss) up to the model, then place the input.
    uc.emu_start(entry, syms["ek_model_run"], count=1_000_000)
    feeds = _feeds(prepared, seed=5)
    aot = AotSection.from_json(result.extra_manifest[AotSection.KEY])
    for spec, off in zip(prepared.inputs, aot.input_offsets):
        uc.mem_write(syms["ek_arena"] + off, feeds[spec.name].tobytes())
    uc.emu_start(uc.reg_read(UC_RISCV_REG_PC), syms["ek_test_done"], count=50_000_000)
    rc = int.from_bytes(uc.mem_read(syms["ek_test_result"], 4), "little", signed=True)
    assert rc == 0
    got = [
        np.frombuffer(bytes(uc.mem_read(syms["ek_arena"] + off, s.nbytes)), dtype=s.dtype).reshape(s.shape)
        for s, off in zip(prepared.outputs, aot.output_offsets)
    ]
    _assert_close(got, _reference(prepared, feeds))


def test_light_squeezenet_matches_onnxruntime(light_models_dir: Path, tmp_path: Path) -> None:
    """A real architecture (fire modules: 26 convs, 8 concats); the wheel's weights are
    placeholders (the last conv's are a constant fill), so after loading (which folds
    them into initializers) they are replaced by random He-scaled ones."""
    prepared = load_model(light_models_dir / "light_squeezenet.onnx")
    rng = np.random.default_rng(7)
    for init in prepared.model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32:
            continue
        fan_in = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
        new = rng.standard_normal(arr.shape) * (np.sqrt(2.0 / fan_in) if arr.ndim > 1 else 0.05)
        init.CopyFrom(numpy_helper.from_array(new.astype(np.float32), init.name))
    art = compile_aot(prepared, _host_target())
    feeds = _feeds(prepared, seed=8)
    got = run_on_host(art.members(), prepared.inputs, prepared.outputs, feeds, workdir=tmp_path)
    want = _reference(prepared, feeds)
    assert float(want[0].std()) > 1e-5  # the outputs are not a constant
    _assert_close(got, want)
    assert art.layout.arena_bytes < art.layout.plan.total_bytes / 2


@needs_zig
@pytest.mark.skipif(importlib.util.find_spec("unicorn") is None, reason="unicorn not installed")
@pytest.mark.parametrize("board_name", ["rv32-mcu-sim", "stm32h7"])
def test_sigmoid_links_without_libm_and_matches_onnxruntime(board_name: str, tmp_path: Path) -> None:
    """SiLU (x * Sigmoid(x)): TOPI's sigmoid called expf, which the bare-metal image lacks (it failed to link)."""
    from edgekit.compiler.driver import compile_model
    from edgekit.runtime.runner import run_package

    shape = [1, 8, 4, 4]
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])], "silu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path, pkg = tmp_path / "silu.onnx", tmp_path / "silu.ekpkg"
    onnx.save(model, path)
    compile_model(str(path), board_name, str(pkg))
    x = (np.random.default_rng(0).standard_normal(shape) * 6).astype(np.float32)
    results, _, _ = run_package(str(pkg), {"x": x[None]}, sim=True)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = results[0]["y"]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= RTOL * np.abs(want).max()

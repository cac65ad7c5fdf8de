"""Bitmask-sparse weights in aot-c packages: the C decoder, the host build and
the simulated MCUs, against dense storage and onnxruntime."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekit.cli.main import main
from edgekit.compiler.backends.aot_c.pipeline import compile_aot
from edgekit.compiler.backends.aot_c.emit import _DECODER
from edgekit.compiler.backends.aot_c.host import run_on_host
from edgekit.compiler.backends.aot_c.section import AotSection, WeightStorage
from edgekit.compiler.backend import CompileOptions
from edgekit.compiler.driver import compile_model
from edgekit.compiler.firmware import compile_c, find_toolchain, link_image
from edgekit.package import Manifest, open_package
from edgekit.compress import QuantConfig, quantize
from edgekit.compress.prune import PruneConfig, prune_unstructured
from edgekit.core.profiles import get_board
from edgekit.core.sparse import encode_bitmask
from edgekit.examples.digits import example_inputs_path, example_model_path, load_digits_data
from edgekit.frontend.loader import load_model
from edgekit.runtime.mcu import McuRunner

pytest.importorskip("unicorn")
needs_zig = pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="ziglang not installed")

#: Relative max error against onnxruntime, as in tests/sim/test_aot_c.py.
RTOL = 1e-4
#: Samples of the example inputs run on each simulated board.
SAMPLES = 4
SPARSITY = 0.6


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


@pytest.fixture(scope="module")
def pruned_digits() -> onnx.ModelProto:
    """The example digits CNN, 60 % of its weights zeroed by edgekit's own magnitude pruning."""
    result = prune_unstructured(onnx.load(str(example_model_path())), PruneConfig(sparsity=SPARSITY))
    assert result.modified and result.sparsity == pytest.approx(SPARSITY, abs=0.01)
    return result.model


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.load(example_inputs_path())["input"][:SAMPLES]


# --------------------------------------------------------------------------- the C decoder itself

_HARNESS = r"""#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
uint8_t ek_arena[1 << 16] __attribute__((aligned(64)));
typedef struct { uint32_t src, dst, count; uint16_t esize, step; } ek_decode_t;
@DECODER@
int main(int argc, char **argv) {
  static uint8_t enc[1 << 16] __attribute__((aligned(64)));
  ek_decode_t d = {0u, 64u, (uint32_t)strtoul(argv[2], 0, 10), (uint16_t)strtoul(argv[3], 0, 10), 0u};
  FILE *f = fopen(argv[1], "rb");
  size_t n = fread(enc, 1, sizeof enc, f);
  fclose(f);
  (void)n;
  memset(ek_arena, 0xA5, sizeof ek_arena); /* the decoder must write every byte, zeros included */
  ek_decode(&d, enc);
  f = fopen(argv[4], "wb");
  fwrite(ek_arena + 64, 1, (size_t)d.count * d.esize, f);
  fwrite(ek_arena + 64 + (size_t)d.count * d.esize, 1, 8, f); /* and nothing after the tensor */
  fclose(f);
  return 0;
}
"""


@needs_zig
def test_c_decoder_matches_the_python_codec(tmp_path: Path) -> None:
    cases = "".join(f"  case {n}u: ek_unpack_bitmask(dst, src, d->count, {n}u); break;\n" for n in (1, 2, 4))
    (tmp_path / "h.c").write_text(_HARNESS.replace("@DECODER@", _DECODER.replace("{cases}", cases)))
    toolchain = find_toolchain(cross=False)
    objs = compile_c(toolchain, [tmp_path / "h.c"], tmp_path / "obj", ["-Wall", "-Werror"], [tmp_path])
    exe = link_image(toolchain, objs, tmp_path / "h", [], freestanding=False)
    rng = np.random.default_rng(0)
    checked = 0
    for dtype in ("int8", "int16", "float32", "int32", "float64"):
        for count in (1, 7, 8, 9, 63, 64, 100, 1001):
            for zeros in (0.0, 0.5, 0.9, 1.0):
                a = rng.standard_normal(count) * 100
                a = a.astype(dtype)
                a[a == 0] = 1
                a[rng.random(count) < zeros] = 0
                (tmp_path / "enc.bin").write_bytes(encode_bitmask(a))
                subprocess.run([str(exe), str(tmp_path / "enc.bin"), str(count), str(a.itemsize),
                                str(tmp_path / "out.bin")], check=True, timeout=30)  # fmt: skip
                out = (tmp_path / "out.bin").read_bytes()
                assert out[: a.nbytes] == a.tobytes(), (dtype, count, zeros)
                assert out[a.nbytes :] == b"\xa5" * 8, (dtype, count, zeros)
                checked += 1
    assert checked == 5 * 8 * 4


# --------------------------------------------------------------------------- host build


def test_host_build_sparse_is_bit_identical_to_dense(pruned_digits: onnx.ModelProto, inputs: np.ndarray,
                                                     tmp_path: Path) -> None:  # fmt: skip
    import tvm

    prepared = load_model(pruned_digits)
    feeds = {prepared.inputs[0].name: inputs[:1]}
    got = {}
    for sparse in (False, True):
        art = compile_aot(prepared, tvm.target.Target({"kind": "llvm"}), sparse_weights=sparse)
        assert bool(art.layout.decoded) is sparse
        workdir = tmp_path / str(sparse)
        got[sparse] = run_on_host(art.members(), prepared.inputs, prepared.outputs, feeds, workdir=workdir)
        if sparse:
            assert art.layout.weight_bytes < 0.6 * art.layout.dense_weight_bytes
    assert got[True][0].tobytes() == got[False][0].tobytes()
    want = ort.InferenceSession(prepared.serialize(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert _rel_err(got[True][0], want) <= RTOL


# --------------------------------------------------------------------------- simulated MCUs


def _run_on_sim(pkg: Path, board_name: str, x: np.ndarray) -> tuple[np.ndarray, int]:
    board = get_board(board_name)[0]
    with McuRunner(open_package(pkg), board, sim=True) as runner:
        out = np.concatenate([runner.run({"input": x[i : i + 1]})["logits"] for i in range(len(x))])
        cycles = runner.time_runs({"input": x[:1]}, runs=1, warmup=0).cycles[0]
    return out, int(cycles)


def _storage(manifest: Manifest) -> WeightStorage:
    """The package's ``aot.weight_storage``."""
    aot = AotSection.of(manifest)
    assert aot is not None and aot.weight_storage is not None
    return aot.weight_storage


@needs_zig
@pytest.mark.parametrize("board_name", ["rv32-mcu-sim", "stm32h7"])
def test_pruned_digits_sparse_on_simulated_mcu(pruned_digits: onnx.ModelProto, inputs: np.ndarray, board_name: str,
                                               tmp_path: Path) -> None:  # fmt: skip
    manifests, outs, cycles = {}, {}, {}
    for mode in ("dense", "sparse"):
        pkg = tmp_path / f"{mode}.ekpkg"
        manifests[mode] = compile_model(pruned_digits, board_name, pkg, options=CompileOptions(weight_storage=mode)).manifest
        outs[mode], cycles[mode] = _run_on_sim(pkg, board_name, inputs)
    dense, sparse = manifests["dense"], manifests["sparse"]

    # Lossless: the decoded weights are the dense ones, so the outputs are the same bits.
    assert outs["sparse"].tobytes() == outs["dense"].tobytes()
    want = ort.InferenceSession(pruned_digits.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": inputs})[0]  # fmt: skip
    assert _rel_err(outs["sparse"], want) <= RTOL

    # The manifest records both sizes; flash got smaller, RAM paid the decode buffers.
    mem, storage, dense_mem = sparse.memory or {}, _storage(sparse), dense.memory or {}
    assert mem["weight_bytes"] == storage.stored_bytes == sparse.files["weights.bin"].size
    assert mem["dense_weight_bytes"] == storage.dense_bytes == dense_mem["weight_bytes"]
    assert mem["weight_bytes"] < 0.6 * mem["dense_weight_bytes"]
    assert storage.mode == "sparse" and storage.sparse_tensors >= 3
    encodings = {t.name: t.encoding for t in storage.tensors}
    assert set(encodings.values()) == {"dense", "bitmask"}
    assert mem["decode_scratch_bytes"] == storage.decode_scratch_bytes > 0
    assert storage.arena_bytes_dense == dense_mem["arena_bytes"] <= mem["arena_bytes"]
    assert dense_mem["decode_scratch_bytes"] == 0 and _storage(dense).sparse_tensors == 0
    assert (sparse.options or {})["weight_storage"] == "sparse"
    # Decoding costs cycles: it is extra work before the kernels, recorded here, not hidden.
    assert cycles["sparse"] > cycles["dense"]
    print(f"{board_name}: weights {mem['dense_weight_bytes']} -> {mem['weight_bytes']} B, code "
          f"{dense_mem['code_bytes']} -> {mem['code_bytes']} B, arena {dense_mem['arena_bytes']} -> "
          f"{mem['arena_bytes']} B (scratch {mem['decode_scratch_bytes']} B), cycles {cycles['dense']} -> "
          f"{cycles['sparse']}")  # fmt: skip


@needs_zig
def test_pruned_int8_digits_auto_is_sparse_and_bit_identical(pruned_digits: onnx.ModelProto, inputs: np.ndarray,
                                                             tmp_path: Path) -> None:  # fmt: skip
    data = load_digits_data()
    model = tmp_path / "pruned_int8.onnx"
    quantize(pruned_digits, QuantConfig(), calibration={"input": data.x_train[:128]}).save(model)
    manifests, outs = {}, {}
    for mode in ("dense", "auto"):
        pkg = tmp_path / f"{mode}.ekpkg"
        manifests[mode] = compile_model(model, "rv32-mcu-sim", pkg, options=CompileOptions(weight_storage=mode)).manifest
        outs[mode], _ = _run_on_sim(pkg, "rv32-mcu-sim", inputs)
    assert outs["auto"].tobytes() == outs["dense"].tobytes()
    storage = _storage(manifests["auto"])
    sparse = [t for t in storage.tensors if t.encoding == "bitmask"]
    # The pruned int8 weights; the int32 parameter blocks of the int8 C
    # kernels stay dense (decoding them on every run cost more RAM than the
    # flash they saved).
    assert sparse and {t.dtype for t in sparse} == {"int8"}
    assert storage.stored_bytes < storage.dense_bytes == (manifests["dense"].memory or {})["weight_bytes"]


@needs_zig
def test_unpruned_model_under_auto_stays_dense(tmp_path: Path) -> None:
    manifest = compile_model(example_model_path(), "rv32-mcu-sim", tmp_path / "d.ekpkg").manifest
    storage, mem = _storage(manifest), manifest.memory or {}
    assert (manifest.options or {})["weight_storage"] == "auto" and storage.mode == "auto"
    assert storage.sparse_tensors == 0 and {t.encoding for t in storage.tensors} == {"dense"}
    assert storage.stored_bytes == storage.dense_bytes == mem["weight_bytes"]
    assert mem["decode_scratch_bytes"] == 0
    assert "too few zeros" in storage.note


@needs_zig
def test_cli_compile_sparse_prints_both_sizes(pruned_digits: onnx.ModelProto, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    model = tmp_path / "pruned.onnx"
    onnx.save(pruned_digits, model)
    argv = ["compile", str(model), "--board", "rv32-mcu-sim", "--weight-storage", "sparse"]
    assert main([*argv, "-o", str(tmp_path / "a.ekpkg"), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["memory"]["weight_bytes"] < manifest["memory"]["dense_weight_bytes"]
    assert manifest["aot"]["weight_storage"]["mode"] == "sparse"
    assert main([*argv, "-o", str(tmp_path / "b.ekpkg")]) == 0
    out = capsys.readouterr().out
    assert "bitmask-sparse" in out and "dense;" in out and "decode scratch" in out


@needs_zig
def test_auto_falls_back_to_dense_when_sparse_firmware_overflows_ram(ppocr_cls_path: Path, tmp_path: Path) -> None:
    # PP-OCR cls pruned 50% on rv32-mcu-sim (512 KiB RAM), at a width where
    # the sparse arena (515,136 B) passes the arena check, but the firmware's
    # own .data/.bss and stack push it over RAM at link time. auto must then
    # store the weights dense and link, not fail (found by benchmarks/compression.py).
    shape = {"x": (1, 3, 48, 256)}
    result = prune_unstructured(load_model(str(ppocr_cls_path), shape).model, PruneConfig(sparsity=0.5))
    assert result.modified
    pruned = result.model
    model = tmp_path / "cls_pruned.onnx"
    onnx.save(pruned, model)
    manifest = compile_model(model, "rv32-mcu-sim", tmp_path / "cls.ekpkg", input_shapes=shape).manifest
    storage, mem = _storage(manifest), manifest.memory or {}
    assert storage.sparse_tensors == 0 and "did not link" in storage.note
    assert mem["weight_bytes"] == mem["dense_weight_bytes"]
    assert "firmware/firmware.elf" in open_package(tmp_path / "cls.ekpkg")

"""Table lookups that write the padded operand of a ragged channel count themselves (issue #14 item 6).

Structured pruning with ``round_to 1`` leaves channel counts that the
dot-product kernels pad: a 1x1 conv on ``vpdpbusd`` reads its input channels
4 at a time (6 -> 8, 23 -> 24), a depthwise conv reads its input padded
spatially and to whole channel steps. Where the padded tensor is a table
lookup's (hard-swish, hard-sigmoid) and the pad its one reader, the lookup
writes the padded tensor: on AVX512-VBMI targets (``znver4``) the channel pad
of the conv's uint8 operand, several pixels per 64-byte step
(``lookup.lookup_rows_vbmi_func``). PP-OCR cls pruned 30 % with ``round_to 1``
had a pad kernel of its own after such a lookup (1.39 us for the 24x96x6 -> 8
one on one Zen 4 core, against 0.29 for the lookup; the row kernel 0.40). AVX2
and AVX512BW targets keep the lookup and the pad apart under 32 channels (their
per-pixel lookup-pad, ``lookup.lookup_pad_avx2_func``, measured slower there).
Checked for ``znver4``, ``haswell`` and ``cascadelake`` explicitly, whatever
CPU runs the test: the kernels ``main`` calls (no pad after a znver4 lookup,
no VBMI kernel elsewhere), the kernel exact against numpy on every int8
value, and the model bit-identical to the build with a separate pad and
within 1 LSB of onnxruntime's QDQ graph where this CPU runs the code.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

tvm = pytest.importorskip("tvm")

import edgekit.compiler.backends.llvm.pad as cpu_pad  # noqa: E402
from edgekit.compiler.backends.llvm.lookup import (  # noqa: E402
    lookup_rows_vbmi_func,
)
from _host_cpu import runs_here  # noqa: E402
from _int8_checks import (  # noqa: E402
    assert_within_one_lsb_of_onnxruntime,
    hard_swish_block,
    kernel_calls,
    quantized,
    run_built,
)

ZNVER4 = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})
HASWELL = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
CASCADELAKE = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"})


def _model(c: int) -> onnx.ModelProto:
    """The lookup tests' hard-swish block with ``c`` channels (weights seeded by ``c``): a lookup
    before a padded depthwise input and one before a 1x1 conv's input."""
    return hard_swish_block(seed=c, gated=False, channels=c)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[int, str]:
    """The QDQ models with 6 channels (a 1x1 conv reads 8) and 23 (24)."""
    cal = {"x": (np.random.default_rng(3).standard_normal((16, 8, 12, 16)) * 2).astype(np.float32)}
    return {c: quantized(tmp_path_factory.mktemp(f"ragged_lookup{c}"), _model(c), cal) for c in (6, 23)}


def _every_value(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """int8 values of ``shape``, all 256 of them among the first (where there is room), the rest random."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    values = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, max(0, n - 256))])
    return rng.permutation(values)[:n].astype(np.int8).reshape(shape)


def _build(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> tvm.runtime.Module:
    return tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target)


# --------------------------------------------------------------------------- #
# AVX512-VBMI: the channel pad of a 1x1 conv's uint8 operand
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("c, cp", [(6, 8), (23, 24)])
def test_vbmi_lookup_writes_the_padded_conv_operand(models, c, cp):
    """znver4: the hard-swish before the 1x1 conv is one ``lookup_rows_vbmi`` kernel writing the conv's
    uint8 operand with ``cp`` channels; no ``pad_rows`` kernel reads a lookup (there was one)."""
    calls = kernel_calls(models[c], ZNVER4)
    producers = {}
    for name, _ins, out in calls:
        producers[out] = name
    rows = [(ins, out) for name, ins, out in calls if name.startswith("lookup_rows_vbmi")]
    assert rows == [([(1, 12, 16, c, "int8"), (256, "int8")], (1, 12, 16, cp, "uint8"))], calls
    for name, ins, _out in calls:
        if name.startswith("pad_rows"):
            assert not any(producers.get(i, "").startswith("lookup") for i in ins), calls


@pytest.mark.parametrize("shape, cp, fill, dtype", [((1, 24, 96, 6), 8, 128, "uint8"), ((1, 3, 5, 23), 24, 0, "int8"),
                                                    ((2, 7, 3, 34), 36, 200, "uint8"), ((1, 1, 1, 62), 64, -3, "int8"),
                                                    ((1, 1, 1, 1), 4, 7, "int8")])  # fmt: skip
def test_vbmi_rows_kernel_is_exact(shape, cp, fill, dtype):
    """Every int8 value through the lookup, the pad channels ``fill``; the last step overlaps the one before
    (2304 pixels of 8 channels are whole steps, 105 of 24 are not); uint8 with the flipped table."""
    table = np.random.default_rng(cp).integers(-128, 128, 256).astype(np.int8)
    x = _every_value(shape, sum(shape))
    operand = table if dtype == "int8" else table ^ np.int8(-128)
    lib = _build(lookup_rows_vbmi_func(shape, cp, fill, dtype), ZNVER4)
    asm = lib.inspect_source("asm")
    assert "vpermi2b" in asm or "vpermt2b" in asm, "two byte permutes look up"
    if shape[-1] * 2 <= 64 and shape[0] * shape[1] * shape[2] > 1:
        assert re.search(r"^\s+vpermb\s", asm, re.M), "one byte shuffle spreads several pixels to their rows"
    if not runs_here(ZNVER4):
        pytest.skip("this CPU cannot run znver4 code")
    out = tvm.runtime.tensor(np.zeros((*shape[:-1], cp), dtype))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(operand), out)
    want = np.full((*shape[:-1], cp), fill, dtype)
    looked = table[x.astype(np.int64) + 128]
    want[..., : shape[-1]] = looked if dtype == "int8" else looked.view(np.uint8) ^ np.uint8(128)
    np.testing.assert_array_equal(out.numpy(), want)


# --------------------------------------------------------------------------- #
# Targets without VBMI keep the lookup and the pad apart
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("target", [HASWELL, CASCADELAKE], ids=lambda t: str(t.attrs["mcpu"]))
def test_targets_without_vbmi_keep_their_lookups(models, target):
    """The row kernel is VBMI code (``vpermb``, ``vpermi2b``): chosen by the target's features. AVX2 and
    AVX512BW targets keep their lookup kernels; under 32 channels their lookup-pad is not taken either
    (a pixel's 23 channels as one 32-value step measured slower than the flat lookup and the row copy)."""
    for c in (6, 23):
        names = [name for name, _ins, _out in kernel_calls(models[c], target)]
        assert not [n for n in names if n.startswith("lookup_rows_vbmi")], names
        assert [n for n in names if n.startswith("lookup_avx2")], names


# --------------------------------------------------------------------------- #
# The models: bit-identical to a separate pad, within 1 LSB of onnxruntime
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("mcpu", ["znver4", "haswell"])
@pytest.mark.parametrize("c", [6, 23])
def test_model_is_exact(models, monkeypatch, mcpu, c):
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    if not runs_here(target):
        pytest.skip(f"this CPU cannot run {mcpu} code")
    feeds = [{"x": (np.random.default_rng(s).standard_normal((1, 8, 12, 16)) * 2).astype(np.float32)} for s in (0, 1)]
    got = run_built(models[c], target, [f["x"] for f in feeds])
    for f, y in zip(feeds, got):
        assert_within_one_lsb_of_onnxruntime(models[c], f, y)
    # The same model with the lookups and pads as separate kernels (the code before the merge).
    monkeypatch.setattr(cpu_pad, "_lookup_rows", lambda *args: None)
    separate = run_built(models[c], target, [f["x"] for f in feeds])
    for a, b in zip(got, separate):
        np.testing.assert_array_equal(a, b)

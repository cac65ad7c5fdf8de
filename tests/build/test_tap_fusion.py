"""Asymmetric-weight taps inside their conv's kernel (edgekit.compiler.backends.llvm.tap_fusion).

The taps of per-tensor asymmetric weights (integer/weight_taps.py) are
slices of a conv's input added in its epilogue. Checked here, for ``znver4``
(AVX512-VNNI) and ``haswell`` (AVX2) code whatever CPU runs the test: no tap
slice is a kernel of its own (the asymmetric build has the symmetric build's
kernels, one for one), and each conv kernel reads its taps in the write-back
(no loop of its own over a tap tensor); where this CPU runs the code, outputs
are bit-identical with the build whose taps are separate kernels and within one
step of onnxruntime's QDQ graph.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from _host_cpu import skip_unless_runs_here
from _int8_checks import assert_within_one_lsb_of_onnxruntime, kernel_calls, normal_feeds, run_built
from test_asymmetric_taps import models  # noqa: F401  (the fixture: the test CNN, asymmetric and symmetric)

import edgekit.compiler.backends.llvm.tap_fusion as tap_fusion
from edgekit.compiler.backends.llvm.relax_build import build_cpu
from edgekit.compiler.importer import import_onnx
from edgekit.frontend.loader import load_model

MCPUS = ["znver4", "haswell"]
_LINEAR = re.compile(r"conv2d|matmul|depthwise")


def _target(mcpu: str) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu})


def _without_tap_fusion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tap_fusion, "with_tap_fusion", lambda passes: passes)
    monkeypatch.setattr(tap_fusion, "inline_tap_chains", lambda sch, acc: None)


@pytest.mark.parametrize("mcpu", MCPUS)
def test_tap_slices_are_no_kernels_of_their_own(models: dict[str, str], mcpu: str) -> None:  # noqa: F811
    asym, sym = kernel_calls(models["asym"], _target(mcpu)), kernel_calls(models["sym"], _target(mcpu))
    apart = [name for name, _ins, _out in asym if "strided_slice" in name and not _LINEAR.search(name)]
    assert apart == [], apart
    assert len(asym) == len(sym), ([c[0] for c in asym], [c[0] for c in sym])
    # every linear kernel reads its taps: the asymmetric kernels take more inputs than the symmetric ones
    linear = [(name, ins) for name, ins, _out in asym if _LINEAR.search(name)]
    assert sum("strided_slice" in name for name, _ in linear) == len(linear), [n for n, _ in linear]


def _scheduled_linear_kernels(model: str, mcpu: str) -> dict[str, object]:
    mod, weights = import_onnx(load_model(model))[:2]
    lowered = build_cpu(mod, _target(mcpu), weights).lowered
    return {gv.name_hint: lowered[gv] for gv in lowered.get_global_vars()
            if _LINEAR.search(gv.name_hint) and isinstance(lowered[gv], tvm.tirx.PrimFunc)}  # fmt: skip


def _tap_buffers(func: object) -> list[str]:
    """The intermediate tensors of a tap chain a scheduled kernel allocates (a loop over each)."""
    pattern = r"(T_(?:strided_slice|transpose|multiply|pad)\w*) = T\.(?:sblock_)?alloc_buffer"
    return re.findall(pattern, func.script())


@pytest.mark.parametrize("mcpu", MCPUS)
def test_taps_are_read_in_the_write_back(models: dict[str, str], mcpu: str,  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The tap chain (slice, widening, transpose, product) is inlined into each linear kernel's
    write-back: no tensor of its own, which a loop of the kernel would write and the epilogue read."""
    kernels = _scheduled_linear_kernels(models["asym"], mcpu)
    assert len(kernels) == 4 and {n: _tap_buffers(f) for n, f in kernels.items() if _tap_buffers(f)} == {}
    monkeypatch.setattr(tap_fusion, "inline_tap_chains", lambda sch, acc: None)
    apart = _scheduled_linear_kernels(models["asym"], mcpu)
    assert all(_tap_buffers(f) for f in apart.values()), {n: _tap_buffers(f) for n, f in apart.items()}


@pytest.mark.parametrize("mcpu", MCPUS)
def test_fused_taps_are_exact(models: dict[str, str], mcpu: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    skip_unless_runs_here(_target(mcpu))
    xs = [f["x"] for f in normal_feeds((1, 3, 12, 12), 4, 11)]
    fused = run_built(models["asym"], _target(mcpu), xs)
    _without_tap_fusion(monkeypatch)
    apart = run_built(models["asym"], _target(mcpu), xs)
    for x, got, want in zip(xs, fused, apart):
        np.testing.assert_array_equal(got, want)
        assert_within_one_lsb_of_onnxruntime(models["asym-qdq"], {"x": x}, got)

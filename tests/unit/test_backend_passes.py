"""Each backend's named pass list (``PASSES``) points at real code and prints."""

from __future__ import annotations

import importlib

import pytest

from edgekit.compiler.backend import BACKENDS, Pass, backend_passes, format_passes
from edgekit.compiler.backends.llvm import CROSS_PASSES
from edgekit.core.errors import CompileError

BUILT_IN = ["aot-c", "cuda", "llvm", "npu"]  # the backends with a folder under compiler/backends/
TVM_IMPORTING = {"aot-c", "cuda", "llvm", "llvm-cross"}  # the NPU backend reads the QDQ model itself


def _resolve(function: str) -> object:
    module, _, name = function.partition(":")
    obj: object = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(("codegen", "passes"), [*((c, backend_passes(c)) for c in BUILT_IN), ("llvm-cross", CROSS_PASSES)],
                         ids=[*BUILT_IN, "llvm-cross"])
def test_every_pass_names_a_function_that_exists(codegen: str, passes: tuple[Pass, ...]) -> None:
    assert passes
    if codegen in TVM_IMPORTING:
        assert passes[0].name == "check"  # the whole-model operator scan comes first
    names = [p.name for p in passes]
    assert len(names) == len(set(names)), names
    for p in passes:
        assert callable(_resolve(p.function)), p.function
        assert p.summary and p.describe().startswith(p.name)


def test_the_registry_points_at_the_backend_packages() -> None:
    for codegen in BUILT_IN:
        entry = BACKENDS.get(codegen)
        assert entry == "edgekit.compiler.backends." + codegen.replace("-", "_")
        module = importlib.import_module(entry)
        assert callable(module.build) and module.PASSES == backend_passes(codegen)


def test_format_passes_numbers_each_step_with_its_condition() -> None:
    text = format_passes(backend_passes("llvm")).splitlines()
    assert text[0].startswith(" 1. check") and len(text) == len(backend_passes("llvm"))
    assert any("tune" in line and "(when tune_trials > 0)" in line for line in text)


def test_unknown_codegen_lists_the_candidates() -> None:
    with pytest.raises(CompileError, match="aot-c"):
        backend_passes("metal")

"""Which shipped record set applies to a target (edgekit/tuning_records/<ISA class>)."""

from __future__ import annotations

import pytest

tvm = pytest.importorskip("tvm")

from edgekit.compiler.backends.llvm import tuning  # noqa: E402


def test_isa_class():
    assert tuning.isa_class(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})) == tuning.X86_AVX2
    assert tuning.isa_class(tvm.target.Target({"kind": "llvm", "mcpu": "znver2"})) == tuning.X86_AVX2
    assert tuning.isa_class(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})) is None
    assert tuning.isa_class(tvm.target.Target({"kind": "llvm", "mcpu": "nehalem"})) is None  # no AVX2
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"})
    assert tuning.isa_class(arm) is None


def test_no_shipped_set_means_no_database(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "SHIPPED_RECORDS", tmp_path)
    assert tuning.shipped_database(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})) is None


def test_shipped_records_readme_explains_the_set():
    readme = (tuning.SHIPPED_RECORDS / "README.md").read_text()
    assert "benchmarks/ship_records.py" in readme and "benchmarks/cpu.py" in readme

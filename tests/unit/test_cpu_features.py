"""Which code this machine can run: a target's extensions from LLVM, this CPU's from Linux (core.cpu_features)."""

from __future__ import annotations

import pytest

tvm = pytest.importorskip("tvm")

from edgekit.compiler.backends.llvm.intrin import I16_256, dot_isa  # noqa: E402
from edgekit.core import cpu_features  # noqa: E402
from edgekit.core.profiles import load_profiles  # noqa: E402

#: Haswell's extensions as Linux spells them (sse3 is "pni", lzcnt "abm", bmi "bmi1").
HASWELL_FLAGS = "sse sse2 pni ssse3 sse4_1 sse4_2 popcnt avx avx2 fma f16c bmi1 bmi2 abm movbe pclmulqdq"


def _t(mcpu: str, **attrs) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu, **attrs})


@pytest.fixture
def haswell_host(monkeypatch):
    monkeypatch.setenv(cpu_features.TEST_FLAGS_ENV, HASWELL_FLAGS)
    if cpu_features.host_arch() != "x86_64":
        pytest.skip("x86 feature checks")


def test_linux_spellings_are_read_as_llvm_names(monkeypatch):
    flags = "pni,bmi1 abm sha_ni pclmulqdq sse4_2 avx512_vnni avx_vnni amx_int8"
    monkeypatch.setenv(cpu_features.TEST_FLAGS_ENV, flags)
    assert cpu_features.host_features() == {"sse3", "bmi", "lzcnt", "sha", "pclmul", "sse42", "avx512vnni", "avxvnni",
                                            "amxint8"}  # fmt: skip


def test_a_targets_extensions_come_from_llvm_without_its_tuning_flags():
    spr = cpu_features.isa_features(_t("sapphirerapids"))
    assert {"avx512vnni", "avx512vbmi", "avxvnni", "amx-int8", "amx-tile", "avx2"} <= spr
    assert not any(f.startswith(("fast-", "slow-", "false-deps", "prefer-", "tuning")) for f in spr), sorted(spr)
    assert "avx512f" not in cpu_features.isa_features(_t("znver2"))
    assert "avx2" not in cpu_features.isa_features(_t("haswell", mattr=["-avx2"]))  # mattr counts
    assert cpu_features.isa_features(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})) == set()


def test_code_runs_only_where_every_extension_is_present(haswell_host):
    assert cpu_features.missing_features(_t("haswell")) == []
    assert cpu_features.runs_here(_t("haswell"))
    assert "avx512f" in cpu_features.missing_features(_t("skylake-avx512"))
    assert not cpu_features.runs_here(_t("skylake-avx512"))
    assert not cpu_features.runs_here(_t("znver2"))  # sse4a, adx, sha: Zen 2 has more than Haswell
    assert not cpu_features.runs_here(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}))


def test_unknown_flags_run_nothing_compiled_for_a_named_cpu(monkeypatch):
    monkeypatch.setenv(cpu_features.TEST_FLAGS_ENV, "")
    assert not cpu_features.runs_here(_t("haswell"))
    assert cpu_features.native_mattr("znver5") == []  # only LLVM's name to go by


def test_the_host_target_drops_what_this_cpu_lacks(haswell_host):
    # mcpu=native is LLVM's *name* for this CPU: on a machine (or VM) without
    # AVX-512 the host target must not keep that name's AVX-512.
    profiles = load_profiles()
    target = profiles.target_of(profiles.board("host"))
    assert cpu_features.missing_features(target.tvm_target()) == []
    assert cpu_features.runs_here(target.tvm_target())
    assert dot_isa(target.tvm_target()) is I16_256  # the AVX2 kernels, whatever LLVM calls this CPU
    assert all(a.startswith("-") for a in target.tvm_target_dict().get("mattr", []))

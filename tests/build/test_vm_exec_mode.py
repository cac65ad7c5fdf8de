"""The host package's ``main`` is compiled code, not VM bytecode (relax_build.DEFAULT_EXEC_MODE).

TVM's ``VMTIRCodeGen`` (``exec_mode="compiled"``) writes ``main`` as a TIR
function calling the kernels; the bytecode form has the Relax VM interpret an
instruction per call. Checked here: packages ship the compiled form, both forms
give bit-identical outputs, a bytecode package (every package from before)
still runs, and profiling builds (bytecode) still see every kernel call while
a compiled build's profile is an error, never an empty table.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from edgekit.compiler.backends.llvm import relax_build  # noqa: E402
from edgekit.compiler.backends.llvm.relax_build import build_cpu, exec_mode_of  # noqa: E402
from edgekit.compiler.driver import compile_model  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.core.profiles import get_board  # noqa: E402
from edgekit.examples.digits import example_model_path, load_digits_data  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.package import open_package  # noqa: E402
from edgekit.runtime.runner import open_runner  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped digits CNN in fp32 and int8 (edgekit's quantizer, 64 training images)."""
    tmp = tmp_path_factory.mktemp("digits")
    data = load_digits_data()
    int8 = quantize(str(example_model_path()), QuantConfig(), calibration={"input": data.x_train[:64]})
    return {"fp32": example_model_path(), "int8": int8.save(tmp / "digits-int8.onnx")}


def _images() -> np.ndarray:
    return load_digits_data().x_test[:4]


def _library(package: Path, tmp: Path) -> tuple[object, dict]:
    with zipfile.ZipFile(package) as z:
        manifest = json.loads(z.read("manifest.json"))
        (tmp / "model.so").write_bytes(z.read(manifest.get("library", "lib/model.so")))
    return tvm.runtime.load_module(str(tmp / "model.so")), manifest


def _run_package(package: Path, images: np.ndarray) -> np.ndarray:
    board, _ = get_board("host")
    runner = open_runner(open_package(package, board="host"), board)
    try:
        return np.concatenate([runner.run({"input": images[i : i + 1]})["logits"] for i in range(len(images))])
    finally:
        runner.close()


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_host_packages_run_main_as_compiled_code(kind: str, digits_models, tmp_path: Path) -> None:
    """``edgekit compile --board host``: the library's main is a VM TIR function, and the manifest says so."""
    out = tmp_path / f"digits-{kind}.ekpkg"
    compile_model(load_model(str(digits_models[kind])), "host", out)
    lib, manifest = _library(out, tmp_path)
    assert exec_mode_of(lib) == "compiled"
    assert manifest["vm_exec_mode"] == "compiled"


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_compiled_and_bytecode_main_give_bit_identical_outputs(kind: str, digits_models) -> None:
    mod, weights = import_onnx(load_model(str(digits_models[kind])))[:2]
    target = tvm.target.Target({"kind": "llvm"})
    outs = {}
    for mode in relax_build.EXEC_MODES:
        built = build_cpu(mod, target, weights, num_threads=1, exec_mode=mode)
        assert built.exec_mode == mode and exec_mode_of(built.executable) == mode
        vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
        outs[mode] = np.concatenate([vm["main"](tvm.runtime.tensor(x[None]), *built.params).numpy() for x in _images()])
    np.testing.assert_array_equal(outs["compiled"], outs["bytecode"])


@pytest.fixture(scope="module")
def int8_packages(digits_models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The int8 digits CNN as host packages, one per exec mode (bytecode: every package built before main was compiled)."""
    tmp = tmp_path_factory.mktemp("packages")
    out = {}
    for mode in relax_build.EXEC_MODES:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(relax_build, "DEFAULT_EXEC_MODE", mode)
            out[mode] = tmp / f"{mode}.ekpkg"
            compile_model(load_model(str(digits_models["int8"])), "host", out[mode])
    return out


def test_a_bytecode_package_still_runs(int8_packages, tmp_path: Path) -> None:
    """A package whose main is bytecode runs as it did, with the outputs of the compiled package."""
    images = _images()
    old, compiled = int8_packages["bytecode"], int8_packages["compiled"]
    lib, manifest = _library(old, tmp_path)
    assert exec_mode_of(lib) == "bytecode" and manifest["vm_exec_mode"] == "bytecode"
    np.testing.assert_array_equal(_run_package(old, images), _run_package(compiled, images))


@pytest.mark.parametrize("mode", relax_build.EXEC_MODES)
def test_bench_says_how_main_runs(mode: str, int8_packages, capsys: pytest.CaptureFixture[str]) -> None:
    """`edgekit bench` reports the mode read from the loaded library (runner.vm_exec_mode in --json)
    and says it in its table, with a hint to recompile a bytecode package."""
    from edgekit.cli.main import main

    assert main(["bench", str(int8_packages[mode]), "--runs", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runner"]["runner"] == "host" and report["runner"]["vm_exec_mode"] == mode
    assert main(["bench", str(int8_packages[mode]), "--runs", "3"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"main runs as {mode}" in text
    assert ("recompile" in text) == (mode == "bytecode")


def test_unknown_exec_mode_is_refused(digits_models) -> None:
    mod, weights = import_onnx(load_model(str(digits_models["fp32"])))[:2]
    with pytest.raises(ValueError, match="compiled, bytecode"):
        build_cpu(mod, tvm.target.Target({"kind": "llvm"}), weights, exec_mode="interpreted")


def test_profiles_see_every_kernel_of_a_bytecode_build_and_refuse_a_compiled_one(digits_models, script_module) -> None:
    """benchmarks/cpu.py's per-kernel profile (the VM's instrumentation) on the build
    exec_mode its profilers ask for, and a clear error on the default build."""
    mod, weights = import_onnx(load_model(str(digits_models["int8"])))[:2]
    target = tvm.target.Target({"kind": "llvm"})
    x = tvm.runtime.tensor(_images()[:1])
    with script_module(BENCHMARKS / "cpu.py", "cpu_benchmark_exec_mode") as bench:
        profiled = build_cpu(mod, target, weights, num_threads=1, exec_mode=bench.PROFILE_EXEC_MODE)
        vm = tvm.relax.VirtualMachine(profiled.executable, tvm.cpu())
        rows = bench.tvm_kernel_profile(vm, lambda: vm["main"](x, *profiled.params), 3)
        kernels = {k for k in rows if not k.startswith("vm.")}
        called = {str(gv.name_hint) for gv, f in profiled.lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
        assert kernels and kernels <= called
        assert all(t >= 0 for t in rows.values())

        default = build_cpu(mod, target, weights, num_threads=1)
        vm = tvm.relax.VirtualMachine(default.executable, tvm.cpu())
        with pytest.raises(RuntimeError, match="exec_mode='bytecode'"):
            bench.tvm_kernel_profile(vm, lambda: vm["main"](x, *default.params), 3)

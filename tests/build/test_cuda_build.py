"""CUDA packages compile here without a GPU; running them needs one (marker ``gpu``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.compiler.backends.cuda import PASSES
from edgekit.compiler.backends.cuda.section import CudaSection
from edgekit.compiler.driver import compile_model
from edgekit.package import open_package
from edgekit.package.sections import ParamsSection
from edgekit.core.errors import CompileError, DeviceError
from edgekit.examples import __file__ as _examples_init

DIGITS = Path(_examples_init).parent / "digits_cnn.onnx"
DIGITS_INPUT = Path(_examples_init).parent / "digits_input.npz"

needs_cuda_compiler = pytest.mark.skipif(
    shutil.which("nvcc") is None and __import__("importlib").util.find_spec("cuda") is None,
    reason="no CUDA compiler (nvcc or cuda-bindings' NVRTC) to turn CUDA source into device code",
)


#: Progress stages reported while ``desktop_pkg`` compiled.
STAGES: list[str] = []


@pytest.fixture(scope="module")
def desktop_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cuda") / "digits-rtx4090.ekpkg"
    compile_model(DIGITS, "rtx-4090", path, progress=lambda stage, message: STAGES.append(stage))
    return path


@needs_cuda_compiler
def test_desktop_gpu_package_builds_with_dlight_schedules(desktop_pkg: Path) -> None:
    pkg = open_package(desktop_pkg)
    assert pkg.runtime == "tvm-vm-cuda"
    assert pkg.manifest.codegen == "cuda"
    assert pkg.manifest.tvm_target["arch"] == "sm_89"
    cuda = CudaSection.of(pkg.manifest)
    assert cuda is not None and cuda.schedule.startswith("dlight") and cuda.source == "cuda/kernels.cu"
    source = pkg.read("cuda/kernels.cu").decode()
    # Scheduled kernels bind loops to GPU threads (unscheduled TIR would not build at all).
    assert "__global__" in source and "threadIdx.x" in source and "blockIdx.x" in source
    params = ParamsSection.of(pkg.manifest)
    assert params is not None and params.count == 10 and params.member == pkg.manifest.params_member
    # The backend's named pass list is what ran, in order (the driver's own stages aside).
    names = [p.name for p in PASSES]
    assert [s for s in dict.fromkeys(STAGES) if s in names] == names


def test_missing_cuda_compiler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.compiler.backends.cuda import pipeline as cuda

    monkeypatch.delenv("TVM_CUDA_COMPILE_MODE", raising=False)
    monkeypatch.setattr(cuda.shutil, "which", lambda name: None)
    monkeypatch.setattr(cuda.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CompileError, match="neither nvcc nor NVRTC.*no GPU is needed to compile"):
        cuda.cuda_compiler()


def test_gpu_package_without_gpu_says_so(desktop_pkg: Path) -> None:
    from edgekit.runtime.cuda_runner import gpu_available
    from edgekit.runtime.runner import run_package

    if gpu_available():
        pytest.skip("a GPU is present; test_gpu_run_matches_onnxruntime covers this machine")
    arrays = dict(np.load(DIGITS_INPUT))
    with pytest.raises(DeviceError, match="no NVIDIA GPU is usable here"):
        run_package(desktop_pkg, arrays)


@pytest.mark.gpu
def test_gpu_run_matches_onnxruntime(desktop_pkg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.cli.main import main
    from edgekit.runtime.cuda_runner import gpu_available

    if not gpu_available():
        pytest.skip("needs an NVIDIA GPU")
    rc = main(["bench", str(desktop_pkg), "--runs", "20", "--input", str(DIGITS_INPUT), "--compare-ort", "--json", "-"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["simulated"] is False and report["outputs_agree"] is True


@pytest.mark.parametrize("board", ["rv32-mcu-sim", "visionfive2", "jetson-orin-nano"])
def test_backends_without_tuning_refuse_it_before_building(board: str, tmp_path) -> None:
    from edgekit.compiler.backend import CompileOptions
    from edgekit.compiler.driver import compile_model
    from edgekit.core.errors import CompileError
    from edgekit.examples.digits import example_model_path

    out = tmp_path / "x.ekpkg"
    with pytest.raises(CompileError, match=r"tuning \(tune_trials > 0\) is not available for"):
        compile_model(str(example_model_path()), board, str(out), options=CompileOptions(tune_trials=4))
    assert not out.exists()

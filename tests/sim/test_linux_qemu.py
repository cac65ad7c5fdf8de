"""Linux boards under qemu-user: a real CNN cross-compiled for aarch64 and
riscv64 with zig, run by the static runner under qemu, checked against
onnxruntime through ``edgekit bench --sim --compare-ort``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli.main import main
from edgekit.compiler.driver import compile_model
from edgekit.package import open_package
from edgekit.package.sections import LinuxSection
from edgekit.core.errors import ConfigError, PackageError
from edgekit.core.profiles import get_board
from edgekit.examples import __file__ as _examples_init

EXAMPLES = Path(_examples_init).parent
DIGITS = EXAMPLES / "digits_cnn.onnx"
DIGITS_INPUT = EXAMPLES / "digits_input.npz"

BOARDS = {"raspberry-pi-4": ("qemu-aarch64", "ARM aarch64"), "visionfive2": ("qemu-riscv64", "RISC-V")}


def _needs(program: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(program) is None,
                              reason=f"{program} not installed: apt-get install qemu-user")


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for board in BOARDS:
        path = tmp_path_factory.mktemp("linux") / f"digits-{board}.ekpkg"
        compile_model(DIGITS, board, path)
        out[board] = path
    return out


@pytest.mark.parametrize("board", list(BOARDS))
def test_package_holds_a_static_runner_for_the_board(packages: dict[str, Path], board: str) -> None:
    from elftools.elf.elffile import ELFFile
    import io

    pkg = open_package(packages[board])
    assert pkg.runtime == "linux-aot"
    elf = ELFFile(io.BytesIO(pkg.read("bin/runner")))
    assert elf["e_machine"] == {"raspberry-pi-4": "EM_AARCH64", "visionfive2": "EM_RISCV"}[board]
    assert elf["e_type"] == "ET_EXEC"  # static: no interpreter needed on the board
    assert not any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments())
    linux = LinuxSection.of(pkg.manifest)
    assert linux is not None and linux.zig_target.endswith("-linux-musl") and linux.runner == "bin/runner"


@pytest.mark.parametrize("board", list(BOARDS))
def test_bench_sim_matches_onnxruntime(packages: dict[str, Path], board: str, capsys: pytest.CaptureFixture[str]) -> None:
    qemu, _ = BOARDS[board]
    if shutil.which(qemu) is None:
        pytest.skip(f"{qemu} not installed: apt-get install qemu-user")
    rc = main(["bench", str(packages[board]), "--sim", "--runs", "3", "--warmup", "1",
               "--input", str(DIGITS_INPUT), "--compare-ort", "--json", "-"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["board"] == board
    assert report["simulated"] is True
    assert "simulated" in report["runner"]["timing"] and qemu in report["runner"]["device"]
    assert report["outputs_agree"] is True
    assert report["ort_max_rel_error"]["max"] <= 1e-4
    assert len(report["latency_ms"]) and report["latency_ms"]["min"] > 0


@_needs("qemu-aarch64")
def test_run_every_sample_matches_onnxruntime(packages: dict[str, Path], tmp_path: Path) -> None:
    import onnxruntime as ort

    out = tmp_path / "out.npz"
    assert main(["run", str(packages["raspberry-pi-4"]), "--sim", "--input", str(DIGITS_INPUT), "-o", str(out)]) == 0
    x = np.load(DIGITS_INPUT)["input"].astype(np.float32)
    ref = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = np.load(out)["logits"]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_missing_qemu_is_a_clear_error(packages: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.runtime import linux_runner

    monkeypatch.setattr(linux_runner.shutil, "which", lambda name: None)
    board, _ = get_board("visionfive2")
    with pytest.raises(ConfigError, match="qemu-riscv64.*not installed.*apt-get install qemu-user"):
        linux_runner.LinuxRunner(open_package(packages["visionfive2"]), board, sim=True)


def test_runner_refuses_other_runtimes_and_missing_address(packages: dict[str, Path], tmp_path: Path) -> None:
    from edgekit.runtime.linux_runner import LinuxRunner

    board, _ = get_board("raspberry-pi-4")
    with pytest.raises(ConfigError, match="no address for board 'raspberry-pi-4'.*--port user@host"):
        LinuxRunner(open_package(packages["raspberry-pi-4"]), board, sim=False)
    host_pkg = tmp_path / "host.ekpkg"
    compile_model(DIGITS, "host", host_pkg)
    with pytest.raises(PackageError, match="needs 'linux-aot'"):
        LinuxRunner(open_package(host_pkg), board, sim=True)


@_needs("qemu-riscv64")
def test_runner_failure_is_reported_with_its_meaning(packages: dict[str, Path]) -> None:
    from edgekit.core.errors import DeviceError
    from edgekit.runtime.linux_runner import LocalExecutor, run_on_executor

    pkg = open_package(packages["visionfive2"])
    ex = LocalExecutor(["qemu-riscv64"])
    try:
        runner = ex.put("runner", pkg.read("bin/runner"), executable=True)
        weights = ex.put("weights.bin", pkg.read("weights.bin")[:100])  # truncated on purpose
        feeds = {"input": np.zeros((1, 1, 8, 8), np.float32)}
        with pytest.raises(DeviceError, match="exit 3: could not read weights or inputs"):
            run_on_executor(ex, runner, weights, pkg.inputs, pkg.outputs, feeds)
    finally:
        ex.close()

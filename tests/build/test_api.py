"""The API layer (edgekit/api/, docs/api.md): typed results, typed errors,
nothing printed, nothing heavy imported until a verb runs."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from edgekit.api.bench import ReportFiles, bench_package, refuse_with_tracker
from edgekit.api.flash import Deployment
from edgekit.core.errors import InputError
from edgekit.examples.digits import example_model_path


def test_importing_the_api_loads_no_heavy_library() -> None:
    code = ("import sys, edgekit, edgekit.api\n"
            "from edgekit.api.target import RunTarget\n"
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules})))")  # fmt: skip
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=60).stdout.strip().split(","))  # fmt: skip
    assert not loaded & {"onnx", "onnxruntime", "tvm", "numpy"}, loaded


def test_every_public_name_resolves_to_the_api() -> None:
    import edgekit
    import edgekit.api

    for name in edgekit.api.__all__:
        assert getattr(edgekit.api, name).__module__.startswith("edgekit."), name
    for verb in ("compile_model", "compress_model", "flash_package", "run_package", "bench_package", "gate_package",
                 "inspect_model", "measure_payoff", "doctor_report", "list_boards"):  # fmt: skip
        assert getattr(edgekit, verb).__module__.startswith("edgekit.api."), verb


def test_a_runner_that_reports_no_deployment_claims_no_verification() -> None:
    nothing = Deployment.of(SimpleNamespace())
    assert nothing.verified is False and nothing.transport == "this process"
    assert "none on a device" in nothing.check
    checked = Deployment.of(SimpleNamespace(deployment={
        "transport": "serial /dev/ttyACM0", "action": "uploaded weights.bin (10 B)", "verified": True,
        "check": "the device's SHA-256 of its active weights matches the package", "slot": 1}))  # fmt: skip
    assert checked.verified and checked.details == {"slot": 1}
    assert checked.to_json()["slot"] == 1 and checked.to_json()["verified"] is True


def test_tracker_refusals_name_the_flags() -> None:
    with pytest.raises(InputError, match="--sim cannot be combined with --tracker"):
        refuse_with_tracker({"port": None, "sim": True})
    with pytest.raises(InputError, match="--baseline cannot be combined with --tracker"):
        refuse_with_tracker({"port": None, "sim": None}, gated=True)
    with pytest.raises(InputError, match="need --baseline"):
        bench_package("unused.ekpkg", reports=ReportFiles(junit="j.xml"))


def test_inspect_returns_the_report_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.api import inspect_model

    result = inspect_model(example_model_path(), board="rv32-mcu-sim")
    assert result.report.macs > 0 and result.plan is not None and result.report.fits is not None
    data = json.loads(json.dumps(result.to_json()))
    assert data["macs"] == result.report.macs and data["memory_plan"]["arena_bytes"] == result.plan.arena_bytes
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_compress_with_nothing_to_do_is_a_user_error(tmp_path) -> None:
    from edgekit.api import CompressOptions, QuantizeRequest, compress_model

    with pytest.raises(InputError, match="nothing to do"):
        compress_model(example_model_path(), tmp_path / "out.onnx", CompressOptions())
    with pytest.raises(InputError, match="needs calibration data"):
        compress_model(example_model_path(), tmp_path / "out.onnx", CompressOptions(quantize=QuantizeRequest()))
    assert not (tmp_path / "out.onnx").exists()

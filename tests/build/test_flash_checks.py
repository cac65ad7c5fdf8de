"""Issue 16 item 4: `flash` reports what was checked, per transport."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Sequence

import pytest

from edgekit.cli.main import main
from edgekit.core.errors import ChecksumError
from edgekit.examples.digits import example_model_path
from edgekit.runtime.linux_runner import LocalExecutor, check_deployed
from edgekit.runtime.ssh import SshExecutor, SshTarget

FILES = {"runner": b"\x7fELF runner", "weights.bin": bytes(range(256)) * 4}


def test_local_deployment_is_hashed_where_it_runs() -> None:
    ex = LocalExecutor()
    try:
        for name, data in FILES.items():
            ex.put(name, data)
        report = check_deployed(ex, FILES)
        assert report["verified"] is True and "SHA-256 of the deployed" in report["check"]
        (ex.root / "weights.bin").write_bytes(b"tampered")  # the copy on the "board" changed
        with pytest.raises(ChecksumError, match="weights.bin"):
            check_deployed(ex, FILES)
    finally:
        ex.close()


def test_ssh_deployment_runs_sha256sum_on_the_board() -> None:
    calls: list[list[str]] = []
    remote = "/tmp/edgekit.x1"
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {remote}/{n}\n" for n, d in FILES.items())

    def fake(cmd: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess:
        calls.append(list(cmd))
        out = remote + "\n" if "mktemp" in cmd[-1] else (sums if "sha256sum" in cmd[-1] else "")
        return subprocess.CompletedProcess(cmd, 0, out, "")

    ex = SshExecutor(SshTarget("board", "pi"), run=fake)
    assert check_deployed(ex, FILES)["verified"] is True
    assert any("sha256sum" in c[-1] for c in calls)
    sums = sums.replace(hashlib.sha256(FILES["runner"]).hexdigest(), "0" * 64)
    with pytest.raises(ChecksumError, match="runner"):
        check_deployed(ex, FILES)


def test_flash_of_a_host_package_claims_no_device_verification(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pkg = tmp_path / "digits-host.ekpkg"
    assert main(["compile", str(example_model_path()), "--board", "host", "-o", str(pkg)]) == 0
    capsys.readouterr()
    assert main(["flash", str(pkg), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verified"] is False
    assert result["check"].startswith("none on a device")
    assert main(["flash", str(pkg)]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "no: none on a device" in out and "SHA-256 matches" not in out

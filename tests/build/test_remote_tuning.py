"""Tuning measured on a board through a TVM RPC tracker (``edgekit tune --tracker``).

The farm is on loopback: a tracker and one native (x86_64) edgekit RPC
server registered under the key of a board profile written for the test,
whose target is *not* the host's (``mcpu = "x86-64-v2"``), so its records
must land in a database of their own. A tuning candidate is a shared library
loaded by the server's TVM runtime, so a board of another ISA needs a server
running on that ISA: a qemu-user-backed server (an x86_64 process that
emulates a board only for edgekit's static runners) is refused, which the
last test checks for ``raspberry-pi-4`` with a qemu-aarch64 server.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import onnx
import pytest

pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado (pip install tornado)")
pytest.importorskip("xgboost")

from edgekit.cli.main import main  # noqa: E402
from edgekit.compiler.backends.llvm import tuning  # noqa: E402
from edgekit.core.errors import EdgekitError  # noqa: E402
from _tuning_models import one_conv_model  # noqa: E402
from edgekit.core.profiles import get_board  # noqa: E402
from edgekit.runtime import rpc  # noqa: E402

KEY = "x86-farm-test"


@pytest.fixture(scope="module")
def farm():
    tracker = rpc.start_tracker(port=9791, port_end=9890)
    addr = ("127.0.0.1", tracker.port)
    servers = [rpc.start_server(addr, KEY, port=9891, port_end=9990, name="x86-native")]
    if shutil.which("qemu-aarch64"):
        servers.append(rpc.start_server(addr, "raspberry-pi-4", qemu="qemu-aarch64", port=9891, port_end=9990,
                                        name="rpi-qemu"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until every server has registered
        try:
            rpc.probe_tracker(addr, KEY)
            if len(servers) == 1 or rpc.probe_tracker(addr, "raspberry-pi-4").servers:
                break
        except EdgekitError:  # not registered yet
            pass
        time.sleep(0.2)
    try:
        yield f"127.0.0.1:{tracker.port}"
    finally:
        for s in servers:
            s.terminate()
        tracker.terminate()


@pytest.fixture(scope="module")
def boards_dir(tmp_path_factory: pytest.TempPathFactory, farm: str) -> Path:
    root = tmp_path_factory.mktemp("boards")
    (root / "x86-v2.toml").write_text(
        'name = "x86-64-v2-linux"\ndescription = "any x86_64 Linux machine (SSE4.2)"\ncodegen = "llvm"\n'
        'isa = "x86_64"\n\n[tvm]\ntarget = { kind = "llvm", mcpu = "x86-64-v2" }\n'
    )
    (root / "farm-x86.toml").write_text(
        'name = "farm-x86"\ntarget = "x86-64-v2-linux"\ncores = 1\n\n'
        f'[transport]\nkind = "rpc"\nhost = "{farm}"\nrpc_key = "{KEY}"\n'
    )
    return root


@pytest.fixture(scope="module")
def one_conv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "one_conv.onnx"
    onnx.save(one_conv_model(), str(path))
    return path


def _tune_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["tune", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_tuning_measures_on_the_rpc_board_and_resumes(farm, boards_dir, one_conv, tmp_path, capsys) -> None:
    db = tmp_path / "db"
    argv = [str(one_conv), "--board", "farm-x86", "--boards-dir", str(boards_dir), "--trials", "4",
            "--db", str(db), "--seed", "1"]
    first = _tune_json(capsys, *argv)
    where = first["measured_on"]
    assert where["where"] == "rpc" and where["key"] == KEY and where["tracker"] == farm
    assert where["server"] == "x86-native" and where["machine"] == "x86_64" and where["emulated"] is False
    assert first["trials_measured"] == 4 and first["trials_reused"] == 0
    assert all(t["best_us"] > 0 for t in first["tasks"])

    # The records are in the board target's database, not the host's.
    _, target = get_board("farm-x86", [str(boards_dir)])
    _, host_target = get_board("host")
    board_db = db / tuning.target_hash(target.tvm_target())
    assert Path(first["database_dir"]) == board_db
    assert not (db / tuning.target_hash(host_target.tvm_target())).exists()
    records = [json.loads(line) for line in (board_db / "database_tuning_record.json").read_text().splitlines()]
    assert len(records) == 4
    run_secs = [r[1][1] for r in records]
    assert all(secs and all(0 < s < 1e9 for s in secs) for secs in run_secs), "every trial ran on the server"

    # Same budget again: resumed from the database, nothing measured.
    second = _tune_json(capsys, *argv)
    assert second["trials_measured"] == 0 and second["trials_reused"] == 4
    assert len((board_db / "database_tuning_record.json").read_text().splitlines()) == 4


def test_unknown_key_is_a_clear_error(farm, one_conv, tmp_path, capsys) -> None:
    t0 = time.monotonic()
    rc = main(["tune", str(one_conv), "--board", "host", "--trials", "2", "--db", str(tmp_path / "db"),
               "--tracker", farm, "--key", "no-such-board"])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < 15
    assert "no RPC server is registered under key 'no-such-board'" in err and KEY in err
    assert not (tmp_path / "db").exists()


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-aarch64 not installed: apt-get install qemu-user")
def test_a_qemu_backed_server_is_refused_for_tuning(farm, one_conv, tmp_path, capsys) -> None:
    rc = main(["tune", str(one_conv), "--board", "raspberry-pi-4", "--trials", "2", "--db", str(tmp_path / "db"),
               "--tracker", farm])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2
    assert "'rpi-qemu' under key 'raspberry-pi-4' runs on x86_64" in err
    assert "qemu-aarch64 only for edgekit's static runners" in err and "Run the server on the board itself" in err


def test_compile_tune_measures_through_the_profiles_tracker(farm, boards_dir, one_conv, tmp_path, monkeypatch,
                                                             capsys) -> None:
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    pkg = tmp_path / "conv.ekpkg"
    rc = main(["compile", str(one_conv), "--board", "farm-x86", "--boards-dir", str(boards_dir), "--tune", "2",
               "-o", str(pkg), "--json"])
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["options"]["tune_trials"] == 2
    _, target = get_board("farm-x86", [str(boards_dir)])
    records = tmp_path / "cache" / "tuning" / tuning.target_hash(target.tvm_target()) / "database_tuning_record.json"
    assert len(records.read_text().splitlines()) == 2

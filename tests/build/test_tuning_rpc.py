"""Remote tuning without a farm: where the tracker comes from, the errors when
it is missing or silent, and the cross-exported candidate libraries."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from dataclasses import replace

import pytest

from edgekit.cli.main import main
from edgekit.compiler import tuning_rpc
from edgekit.compiler.backends.llvm.tuning import TuneReport, tune_model
from edgekit.core.errors import ConfigError, TransportError
from edgekit.core.profiles import TransportConfig, get_board
from edgekit.examples.digits import example_model_path
from edgekit.runtime import rpc


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tracker_comes_from_the_flag_then_the_profile() -> None:
    host, _ = get_board("host")
    assert tuning_rpc.resolve_tracker(host, None, None) is None
    assert tuning_rpc.resolve_tracker(host, "10.0.0.5:9190", None) == (("10.0.0.5", 9190), "host")
    assert tuning_rpc.resolve_tracker(host, "10.0.0.5:9190", "pi") == (("10.0.0.5", 9190), "pi")
    farm = replace(host, name="farm", transport=TransportConfig(kind="rpc", host="t.lan:9190", rpc_key="x86"))
    assert tuning_rpc.resolve_tracker(farm, None, None) == (("t.lan", 9190), "x86")
    assert tuning_rpc.resolve_tracker(farm, "other:1", None) == (("other", 1), "x86")
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        tuning_rpc.resolve_tracker(host, "nowhere", None)


def test_a_remote_board_without_a_tracker_says_how_to_get_one() -> None:
    board, target = get_board("raspberry-pi-4")
    with pytest.raises(ConfigError) as info:
        tune_model(None, board, target, 4)
    text = str(info.value)
    assert "reached over ssh, and tuning measures through TVM RPC" in text
    assert "--key raspberry-pi-4" in text and "--tracker HOST:PORT" in text
    rpc_board = replace(board, transport=TransportConfig(kind="rpc"))
    with pytest.raises(ConfigError, match="uses transport rpc but its profile names no tracker"):
        tune_model(None, rpc_board, target, 4)


def test_unreachable_tracker_fails_fast_before_the_model_is_imported(tmp_path, capsys) -> None:
    port = _closed_port()
    t0 = time.monotonic()
    rc = main(["tune", str(example_model_path()), "--board", "host", "--trials", "2", "--db", str(tmp_path / "db"),
               "--tracker", f"127.0.0.1:{port}"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and time.monotonic() - t0 < 10
    assert f"cannot reach the RPC tracker at 127.0.0.1:{port}" in err
    assert "python -m edgekit.runtime.rpc tracker" in err
    assert not (tmp_path / "db").exists()


def test_a_silent_tracker_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="did not answer as a TVM RPC tracker within 0.5 s"):
            rpc.probe_tracker(listener.getsockname(), "pi", timeout_s=0.5)
        assert time.monotonic() - t0 < 3
    finally:
        for s in accepted:
            s.close()
        listener.close()


def test_flag_combinations(capsys) -> None:
    model = str(example_model_path())
    assert main(["tune", model, "--trials", "2", "--key", "pi"]) == 2
    assert "--key needs --tracker" in capsys.readouterr().err
    assert main(["compile", model, "--board", "host", "-o", "x.ekpkg", "--tracker", "h:1"]) == 2
    assert "--tracker and --key apply to tuning" in capsys.readouterr().err


def test_report_says_where_trials_ran() -> None:
    assert TuneReport("db", "llvm").to_json()["measured_on"] == {"where": "local"}
    where = tuning_rpc.RemoteMeasurement("h:9190", "pi", 2, "pi-1", "aarch64").to_json()
    assert where["where"] == "rpc" and where["emulated"] is False and where["servers"] == 2


@pytest.mark.skipif(shutil.which("zig") is None and not __import__("importlib").util.find_spec("ziglang"),
                    reason="needs ziglang (pip install ziglang)")
def test_candidates_for_an_aarch64_board_are_aarch64_libraries() -> None:
    tvm = pytest.importorskip("tvm")
    from tvm import te

    _, target = get_board("raspberry-pi-4")
    flags = tuning_rpc._export_flags(target)
    assert flags == ["-target", "aarch64-linux-gnu"]
    a = te.placeholder((64,), "float32", name="a")
    b = te.compute((64,), lambda i: a[i] + 1.0, name="b")
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, b])}), target=target.tvm_target())
    path = tuning_rpc.export_candidate(flags, lib)
    with open(path, "rb") as f:
        header = f.read(20)
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    shutil.rmtree(path.rsplit("/", 1)[0])
    _, host_target = get_board("host")
    assert tuning_rpc._export_flags(host_target) == []

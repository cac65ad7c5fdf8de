"""A board farm on loopback: a TVM RPC tracker, one server backed by
qemu-user (key ``visionfive2``) and one native server (key ``host``, TVM
runtime + ``time_evaluator``); ``edgekit bench --tracker`` completes a job on
each, and a job for a busy board waits in the tracker's queue."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado (pip install tornado)")

from edgekit.cli.main import main  # noqa: E402
from edgekit.compiler.driver import compile_model  # noqa: E402
from edgekit.examples import __file__ as _examples_init  # noqa: E402
from edgekit.runtime import rpc  # noqa: E402

EXAMPLES = Path(_examples_init).parent
DIGITS = EXAMPLES / "digits_cnn.onnx"
DIGITS_INPUT = EXAMPLES / "digits_input.npz"

pytestmark = pytest.mark.skipif(shutil.which("qemu-riscv64") is None,
                                reason="qemu-riscv64 not installed: apt-get install qemu-user")


@pytest.fixture(scope="module")
def farm():
    tracker = rpc.start_tracker(port=9490, port_end=9590)
    addr = ("127.0.0.1", tracker.port)
    servers = [
        rpc.start_server(addr, "visionfive2", qemu="qemu-riscv64", port=9600, port_end=9700, name="vf2-qemu"),
        rpc.start_server(addr, "host", port=9600, port_end=9700, name="host-native"),
    ]
    time.sleep(1.0)  # let both register with the tracker
    try:
        yield f"127.0.0.1:{tracker.port}"
    finally:
        for s in servers:
            s.terminate()
        tracker.terminate()


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("farm")
    out = {}
    for board in ("visionfive2", "host"):
        out[board] = root / f"digits-{board}.ekpkg"
        compile_model(DIGITS, board, out[board])
    return out


def _bench(capsys: pytest.CaptureFixture[str], pkg: Path, tracker: str, key: str, *extra: str) -> dict:
    rc = main(["bench", str(pkg), "--tracker", tracker, "--key", key, "--runs", "3", "--warmup", "1",
               "--input", str(DIGITS_INPUT), "--compare-ort", "--json", "-", *extra])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def test_bench_tracker_completes_jobs_on_both_servers(farm: str, packages: dict[str, Path], capsys) -> None:
    vf2 = _bench(capsys, packages["visionfive2"], farm, "visionfive2")
    assert vf2["rpc"]["server"] == "vf2-qemu" and vf2["rpc"]["key"] == "visionfive2"
    assert vf2["simulated"] is True and "qemu-user" in vf2["runner"]["timing"]
    assert vf2["outputs_agree"] is True and vf2["ort_max_rel_error"]["max"] <= 1e-4

    host = _bench(capsys, packages["host"], farm, "host")
    assert host["rpc"]["server"] == "host-native"
    assert host["simulated"] is False and host["runner"]["timing"] == "TVM time_evaluator"
    assert host["outputs_agree"] is True
    assert host["latency_ms"]["min"] > 0


def test_a_busy_board_makes_the_job_wait(farm: str, packages: dict[str, Path], capsys) -> None:
    from tvm import rpc as tvm_rpc

    host, port = rpc.parse_tracker(farm)
    held = tvm_rpc.connect_tracker(host, port).request("visionfive2", session_timeout=60)
    release_after = 2.0

    def release() -> None:
        nonlocal held
        time.sleep(release_after)
        held = None  # ends the session: the server goes back to the pool

    t = threading.Thread(target=release)
    t.start()
    report = _bench(capsys, packages["visionfive2"], farm, "visionfive2")
    t.join()
    assert report["rpc"]["server"] == "vf2-qemu"
    assert report["rpc"]["queued_s"] >= release_after * 0.8


def test_tracker_flag_errors(farm: str, packages: dict[str, Path], capsys) -> None:
    assert main(["bench", str(packages["host"]), "--tracker", "nowhere", "--key", "host"]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err
    assert main(["bench", str(packages["host"]), "--tracker", farm, "--sim"]) == 2
    assert "--sim cannot be combined with --tracker" in capsys.readouterr().err


def test_non_loopback_bind_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="edgekit.runtime.rpc"):
        rpc.warn_if_exposed("127.0.0.1", "x")
        assert not caplog.records
        rpc.warn_if_exposed("0.0.0.0", "the RPC server")
    assert "unauthenticated" in caplog.text

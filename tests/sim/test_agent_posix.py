"""One protocol suite, run against the POSIX agent on a pty and the simulated
MCUs: the host code under test (transport, client) is the same for all."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from edgekit.core.errors import DeviceError, PortBusyError, ProtocolError
from edgekit.runtime import protocol as P
from edgekit.runtime.device import DeviceClient, RetryPolicy
from edgekit.runtime.transport import SerialTransport

from _agent_helpers import build, reference, weights

FAST = RetryPolicy(attempts=3, response_timeout_s=0.5, run_timeout_s=30, verify_timeout_s=30)


class Device:
    """A running agent plus a connected client; ``reset()`` keeps storage."""

    def __init__(self, port: str, reset: Callable[[], None], closer: Callable[[], None]) -> None:
        self.port = port
        self._reset = reset
        self._closer = closer
        self.transport = SerialTransport(port)
        self.client = DeviceClient(self.transport, FAST)
        self.client.hello()

    def reset(self) -> None:
        self._reset()
        self.client.hello()

    def close(self) -> None:
        self.transport.close()
        self._closer()


@pytest.fixture(params=["posix", "rv32-sim", "stm32h7"])
def device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Device]:
    if request.param == "posix":
        from edgekit.sim.posix import PosixAgent

        agent = PosixAgent(build("posix"), storage=tmp_path / "slots.bin")
        dev = Device(agent.port, agent.reset, agent.close)
    else:
        from edgekit.core.profiles import get_board
        from edgekit.sim.mcu import McuSimulator

        board, _ = get_board("rv32-mcu-sim" if request.param == "rv32-sim" else request.param)
        sim = McuSimulator(build(request.param), board)
        dev = Device(sim.port_name, sim.reset, sim.close)
    yield dev
    dev.close()


def test_info_describes_the_linked_model(device: Device) -> None:
    info = device.client.info()
    assert (info.weight_bytes, info.arena_bytes) == (4160, 320)
    assert (info.input_bytes, info.output_bytes) == ((256,), (64,))
    assert not info.has_model and info.slot_capacity >= info.weight_bytes


def test_run_without_weights_is_refused_with_hint(device: Device) -> None:
    with pytest.raises(DeviceError, match="ERR_NO_MODEL") as err:
        device.client.run(1)
    assert "edgekit flash" in err.value.hint


def test_load_verify_run_matches_reference(device: Device) -> None:
    w, b, image = weights()
    result = device.client.load(image)
    assert result.committed and result.sha256 == hashlib.sha256(image).digest()
    info = device.client.info()
    assert info.has_model and info.active_sha256 == result.sha256 and info.active_size == len(image)
    x = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    device.client.set_input(0, x.tobytes())
    run = device.client.run(2)
    assert len(run.cycles) == 2 and all(c > 0 for c in run.cycles)
    y = np.frombuffer(device.client.get_output(0, 64), np.float32)
    np.testing.assert_allclose(y, reference(w, b, x), rtol=1e-6, atol=1e-6)


def test_upload_resumes_after_reset_and_commit_survives_reset(device: Device) -> None:
    _, _, image = weights(2)
    digest = hashlib.sha256(image).digest()
    c = device.client
    assert P.unpack_u32("LOAD_BEGIN", c.request(P.Command.LOAD_BEGIN, P.pack_load_begin(len(image), digest)).payload) == 0
    c.request(P.Command.LOAD, P.pack_load(0, image[: P.LOAD_CHUNK]))
    device.reset()  # mid-transfer: nothing committed, the partial upload is remembered
    assert not c.info().has_model
    resumed = c.request(P.Command.LOAD_BEGIN, P.pack_load_begin(len(image), digest))
    assert P.unpack_u32("LOAD_BEGIN", resumed.payload) == P.LOAD_CHUNK
    assert c.load(image).committed
    device.reset()
    info = c.info()
    assert info.has_model and info.active_sha256 == digest
    assert c.verify().sha256 == digest  # the device re-hashes what it holds


def test_new_upload_keeps_old_image_until_commit(device: Device) -> None:
    _, _, old = weights(3)
    _, _, new = weights(4)
    c = device.client
    c.load(old)
    c.request(P.Command.LOAD_BEGIN, P.pack_load_begin(len(new), hashlib.sha256(new).digest()))
    c.request(P.Command.LOAD, P.pack_load(0, new[:100]))
    device.reset()
    assert c.info().active_sha256 == hashlib.sha256(old).digest()
    gen = c.info().active_generation
    c.load(new)
    info = c.info()
    assert info.active_sha256 == hashlib.sha256(new).digest() and info.active_generation == gen + 1


def test_corrupt_or_gapped_data_is_never_committed(device: Device) -> None:
    _, _, image = weights(5)
    c = device.client
    c.request(P.Command.LOAD_BEGIN, P.pack_load_begin(len(image), hashlib.sha256(image).digest()))
    gap = c.request(P.Command.LOAD, P.pack_load(100, image[100:200]), accept=(P.Status.ERR_BAD_OFFSET,))
    assert P.unpack_u32("LOAD", gap.payload) == 0
    bad = bytearray(image)
    bad[7] ^= 1
    for off in range(0, len(bad), P.LOAD_CHUNK):
        c.request(P.Command.LOAD, P.pack_load(off, bytes(bad[off : off + P.LOAD_CHUNK])))
    frame = c.request(P.Command.VERIFY, accept=(P.Status.ERR_HASH_MISMATCH,))
    v = P.unpack_verify(frame.payload)
    assert not v.committed and v.sha256 == hashlib.sha256(bytes(bad)).digest()
    assert not c.info().has_model


def test_wrong_size_and_out_of_bounds_requests_get_typed_errors(device: Device) -> None:
    c = device.client
    with pytest.raises(DeviceError, match="ERR_SIZE_MISMATCH"):
        c.request(P.Command.LOAD_BEGIN, P.pack_load_begin(10, bytes(32)))
    with pytest.raises(ProtocolError, match="ERR_BAD_ARG"):
        c.request(P.Command.SET_INPUT, P.pack_set_input(0, 250, bytes(8)))
    with pytest.raises(ProtocolError, match="ERR_BAD_ARG"):
        c.request(P.Command.SET_INPUT, P.pack_set_input(3, 0, bytes(4)))
    device.transport.write_frame(P.encode_frame(P.Frame(cmd=0x55, seq=77)))
    answer = P.decode_frame(device.transport.read_frame(5))
    assert (answer.cmd, answer.status, answer.seq) == (0x55, P.Status.ERR_UNKNOWN_CMD, 77)


def test_corrupt_frame_gets_nak_and_repeat_is_answered_from_cache(device: Device) -> None:
    c = device.client
    c.load(weights()[2])
    t = device.transport
    wire = bytearray(P.encode_frame(P.Frame(cmd=P.Command.RUN, seq=4242, payload=P.pack_run(1))))
    broken = bytearray(wire)
    broken[3] ^= 0x40
    t.write_frame(bytes(broken))
    nak = P.decode_frame(t.read_frame(2))
    assert (nak.cmd, nak.status, nak.seq) == (P.Command.NAK, P.Status.ERR_FRAME, P.NAK_SEQ)
    t.write_frame(bytes(wire))
    first = t.read_frame(5)
    t.write_frame(bytes(wire))  # same seq: a retransmission after a lost answer
    assert t.read_frame(5) == first
    t.write_frame(P.encode_frame(P.Frame(cmd=P.Command.RUN, seq=4243, payload=P.pack_run(1))))
    assert P.decode_frame(t.read_frame(5)).seq == 4243


def test_second_open_of_a_port_is_busy(device: Device) -> None:
    with pytest.raises(PortBusyError, match="in use") as err:
        SerialTransport(device.port)
    assert "another" in err.value.hint

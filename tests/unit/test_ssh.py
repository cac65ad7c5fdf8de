"""SSH transport: command construction and error mapping (no board needed)."""

from __future__ import annotations

import subprocess
from typing import Sequence

import pytest

from edgekit.core.errors import ConfigError, DeviceTimeoutError, TransportError
from edgekit.core.profiles import get_board
from edgekit.runtime.ssh import SshExecutor, SshTarget, parse_address, scp_command, ssh_command


@pytest.mark.parametrize("text, expected", [
    ("pi@raspberrypi.local", ("pi", "raspberrypi.local", 0)),
    ("10.0.0.7:2222", ("", "10.0.0.7", 2222)),
    ("user@[fe80::1]:22", ("user", "fe80::1", 22)),
    ("ssh://root@board", ("root", "board", 0)),
])
def test_parse_address(text: str, expected: tuple) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("bad", ["", "pi@", "host:99999", "-oProxyCommand=x", "a b"])
def test_bad_addresses_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="SSH address|TCP port"):
        parse_address(bad)


def test_commands_quote_arguments_and_use_batch_mode() -> None:
    t = SshTarget(host="board", user="pi", port=2222, identity="/k", connect_timeout_s=7)
    cmd = ssh_command(t, ["/tmp/x/runner", "a b", "$(rm -rf /)"])
    assert cmd[:2] == ["ssh", "-o"] and "BatchMode=yes" in cmd and "ConnectTimeout=7" in cmd
    assert cmd[cmd.index("-p") + 1] == "2222" and cmd[cmd.index("-i") + 1] == "/k"
    assert cmd[-3:-1] == ["--", "pi@board"]
    assert cmd[-1] == "/tmp/x/runner 'a b' '$(rm -rf /)'"
    up = scp_command(t, ["local.bin"], "/tmp/x/r", upload=True)
    assert up[up.index("-P") + 1] == "2222" and up[-2:] == ["local.bin", "pi@board:/tmp/x/r"]
    down = scp_command(t, ["/tmp/x/o"], "here", upload=False)
    assert down[-2:] == ["pi@board:/tmp/x/o", "here"]


def test_target_from_board_profile_and_override() -> None:
    board, _ = get_board("raspberry-pi-4")
    t = SshTarget.from_board(board, "10.1.2.3:2200")
    assert (t.user, t.host, t.port) == ("pi", "10.1.2.3", 2200)  # user from the profile
    assert SshTarget.from_board(board, "me@h").user == "me"


class FakeSsh:
    """Answers ssh/scp commands from a script of (returncode, stdout, stderr)."""

    def __init__(self, *answers: tuple[int, str, str]) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def __call__(self, cmd: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess:
        self.calls.append(list(cmd))
        rc, out, err = self.answers.pop(0) if self.answers else (0, "", "")
        if rc == "timeout":
            raise subprocess.TimeoutExpired(cmd, timeout_s)
        return subprocess.CompletedProcess(cmd, rc, out, err)


def test_executor_runs_in_a_fresh_remote_folder_and_cleans_up() -> None:
    fake = FakeSsh((0, "/tmp/edgekit.abc123\n", ""), (0, "", ""), (0, "ek_ns 5\n", ""), (0, "", ""))
    ex = SshExecutor(SshTarget("board", "pi"), run=fake)
    assert ex.remote_dir == "/tmp/edgekit.abc123"
    assert fake.calls[0][-1] == "mktemp -d /tmp/edgekit.XXXXXX"
    path = ex.put("runner", b"\x7fELF", executable=True)
    assert path == "/tmp/edgekit.abc123/runner" and fake.calls[1][0] == "scp"
    proc = ex.run([path, "1"], 10)
    assert proc.stdout == "ek_ns 5\n"
    ex.close()
    assert fake.calls[-1][-1] == "rm -rf -- /tmp/edgekit.abc123"


@pytest.mark.parametrize("stderr, hint", [
    ("pi@board: Permission denied (publickey).", "ssh-copy-id pi@board"),
    ("ssh: Could not resolve hostname board: Name or service not known", "host name"),
    ("ssh: connect to host board port 22: Connection refused", "no SSH server listens"),
    ("ssh: connect to host board port 22: Connection timed out", "powered"),
    ("Host key verification failed.", "host key"),
])
def test_connection_failures_map_to_transport_errors_with_hints(stderr: str, hint: str) -> None:
    with pytest.raises(TransportError, match="failed \\(exit 255\\)") as info:
        SshExecutor(SshTarget("board", "pi"), run=FakeSsh((255, "", stderr)))
    assert hint in info.value.hint
    assert info.value.fields["returncode"] == 255


def test_remote_command_status_is_passed_through_not_raised() -> None:
    fake = FakeSsh((0, "/tmp/edgekit.x\n", ""), (4, "", "ek_model_run returned 3"))
    ex = SshExecutor(SshTarget("board"), run=fake)
    assert ex.run(["/tmp/edgekit.x/runner"], 5).returncode == 4  # the runner's own failure


def test_timeouts_are_device_timeouts() -> None:
    fake = FakeSsh((0, "/tmp/edgekit.x\n", ""), ("timeout", "", ""))
    ex = SshExecutor(SshTarget("board"), run=fake)
    with pytest.raises(DeviceTimeoutError, match="did not finish within 5 s"):
        ex.run(["/tmp/edgekit.x/runner"], 5)

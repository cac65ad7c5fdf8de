"""SSH transport for Linux boards: copy files with ``scp``, run with ``ssh``.

The system OpenSSH client is used (no Python SSH library): it already honours
the user's ``~/.ssh/config``, agent and known-hosts file. Commands run with
``BatchMode=yes`` so a missing key fails at once instead of waiting for a
password prompt nobody sees. Every command is built by a pure function
(:func:`ssh_command`, :func:`scp_command`) and run through one injectable
``run`` callable, so tests check command lines and error mapping without a
board.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from edgekit.core.errors import ConfigError, DeviceTimeoutError, TransportError

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = [
    "SshTarget",
    "SshExecutor",
    "parse_address",
    "ssh_command",
    "scp_command",
    "check_result",
    "RunFn",
    "SSH_EXIT_CONNECTION",
]

logger = logging.getLogger(__name__)

#: ssh's own exit status for a connection/authentication failure (the remote
#: command's status is passed through otherwise).
SSH_EXIT_CONNECTION = 255

#: Runs a command with a timeout; ``subprocess.run`` with capture by default.
RunFn = Callable[[Sequence[str], float], "subprocess.CompletedProcess[str]"]


def _default_run(cmd: Sequence[str], timeout_s: float) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s)


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach a board.

    Attributes:
        host: Host name or address.
        user: Login name ("" = ssh's default / ssh config).
        port: SSH port (0 = ssh's default / ssh config).
        identity: Private key file ("" = agent / ssh config).
        connect_timeout_s: Seconds to wait for the TCP connection and login.
    """

    host: str
    user: str = ""
    port: int = 0
    identity: str = ""
    connect_timeout_s: float = 10.0

    @property
    def destination(self) -> str:
        """``user@host`` (or ``host``)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @classmethod
    def from_board(cls, board: "Board", address: str | None = None) -> "SshTarget":
        """The board's SSH target; ``address`` (``[user@]host[:port]``) overrides
        the profile's ``transport.host``/``user``."""
        user, host, port = parse_address(address or board.transport.host)
        return cls(host=host, user=user or board.transport.user, port=port,
                   connect_timeout_s=float(board.transport.timeout_s or 10.0))


def parse_address(address: str) -> tuple[str, str, int]:
    """Splits ``[user@]host[:port]`` into ``(user, host, port)`` (port 0 if absent).

    Raises:
        ConfigError: for an empty address, an empty host or a bad port.
    """
    text = (address or "").strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://"):]
    user, _, hostport = text.rpartition("@")
    host, port = hostport, 0
    if hostport.startswith("["):  # [ipv6]:port
        inner, _, rest = hostport[1:].partition("]")
        host = inner
        if rest.startswith(":"):
            port = _port(rest[1:], address)
    elif hostport.count(":") == 1:
        host, _, p = hostport.partition(":")
        port = _port(p, address)
    if not host or any(c.isspace() for c in host) or host.startswith("-"):
        raise ConfigError(
            f"'{address}' is not an SSH address",
            hint="Write it as [user@]host[:port], e.g. pi@raspberrypi.local or pi@10.0.0.7:2222.",
        )
    return user, host, port


def _port(text: str, address: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"'{address}': port '{text}' is not a TCP port", hint="Use a number from 1 to 65535.")
    return int(text)


def _common_options(target: SshTarget) -> list[str]:
    opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(round(target.connect_timeout_s)))}"]
    if target.identity:
        opts += ["-i", target.identity]
    return opts


def ssh_command(target: SshTarget, remote_args: Sequence[str]) -> list[str]:
    """The ``ssh`` command that runs ``remote_args`` on the board.

    Each remote argument is shell-quoted: the remote shell sees exactly these words.
    """
    cmd = ["ssh", *_common_options(target)]
    if target.port:
        cmd += ["-p", str(target.port)]
    # "--" ends ssh's options; the destination cannot be taken for one.
    return [*cmd, "--", target.destination, " ".join(shlex.quote(a) for a in remote_args)]


def scp_command(target: SshTarget, sources: Sequence[str], dest: str, *, upload: bool) -> list[str]:
    """The ``scp`` command copying ``sources`` to ``dest``.

    With ``upload`` the sources are local and ``dest`` a path on the board;
    otherwise the sources are paths on the board and ``dest`` is local.
    """
    cmd = ["scp", "-q", *_common_options(target)]
    if target.port:
        cmd += ["-P", str(target.port)]
    remote = lambda p: f"{target.destination}:{p}"  # noqa: E731
    if upload:
        return [*cmd, "--", *sources, remote(dest)]
    return [*cmd, "--", *(remote(s) for s in sources), dest]


def check_result(proc: "subprocess.CompletedProcess[str]", target: SshTarget, what: str) -> None:
    """Raises :class:`TransportError` when ssh/scp itself failed.

    A non-zero status from the remote command is left to the caller (ssh passes
    it through); 255 is ssh's own failure, and scp reports any failure as 1.
    """
    rc = proc.returncode
    if rc == 0:
        return
    err = (proc.stderr or "").strip()
    if rc != SSH_EXIT_CONNECTION and not what.startswith("scp"):
        return
    low = err.lower()
    if "permission denied" in low or "publickey" in low:
        hint = (f"Install your public key on the board (`ssh-copy-id {target.destination}`); "
                "edgekit runs ssh with BatchMode=yes and cannot type a password.")
    elif "could not resolve hostname" in low or "name or service not known" in low:
        hint = "Check the board's host name (transport.host in its profile, or --port user@host)."
    elif "connection refused" in low:
        hint = "The board is up but no SSH server listens on that port: start sshd on it or pass the right :port."
    elif "timed out" in low or "no route to host" in low or "network is unreachable" in low:
        hint = "The board does not answer: check that it is powered, on the network, and the address is right."
    elif "host key verification failed" in low or "remote host identification has changed" in low:
        hint = f"Connect once by hand (`ssh {target.destination}`) to accept or fix the board's host key."
    elif "no such file or directory" in low:
        hint = "A file to copy is missing; check the package and free space on the board."
    else:
        hint = "Run the same command by hand with `ssh -v` to see why."
    raise TransportError(
        f"{what} to {target.destination} failed (exit {rc}): {err.splitlines()[-1][:200] if err else 'no message'}",
        hint=hint,
        returncode=rc,
        host=target.host,
    )


class SshExecutor:
    """Runs the model runner on a board over SSH (see
    :class:`edgekit.runtime.linux_runner.Executor`).

    A fresh folder is created on the board with ``mktemp -d`` and removed by
    :meth:`close`.

    Args:
        target: The board.
        run: Command runner (injectable for tests).
        remote_tmp: Parent folder on the board.

    Raises:
        ConfigError: when the ``ssh``/``scp`` programs are missing.
        TransportError, DeviceTimeoutError: when the board cannot be reached.
    """

    def __init__(self, target: SshTarget, *, run: RunFn | None = None, remote_tmp: str = "/tmp") -> None:
        self.target = target
        self._run_fn = run or _default_run
        if run is None:
            for prog in ("ssh", "scp"):
                if shutil.which(prog) is None:
                    raise ConfigError(f"'{prog}' is not installed", hint="Install the OpenSSH client (apt-get install openssh-client).")
        self.where = f"{target.destination} over SSH"
        self._local = Path(tempfile.mkdtemp(prefix="edgekit-ssh-"))
        proc = self._call(ssh_command(target, ["mktemp", "-d", f"{remote_tmp.rstrip('/')}/edgekit.XXXXXX"]),
                          "ssh (creating a work folder)", target.connect_timeout_s + 30)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise TransportError(
                f"could not create a work folder on {target.destination}: {(proc.stderr or '').strip()[:200]}",
                hint=f"Check free space and permissions of {remote_tmp} on the board.",
            )
        self.remote_dir = proc.stdout.strip().splitlines()[-1]

    def _call(self, cmd: Sequence[str], what: str, timeout_s: float) -> "subprocess.CompletedProcess[str]":
        logger.debug("%s: %s", what, " ".join(cmd))
        try:
            proc = self._run_fn(cmd, timeout_s)
        except subprocess.TimeoutExpired:
            raise DeviceTimeoutError(
                f"{what} on {self.target.destination} did not finish within {timeout_s:.0f} s",
                hint="Check the network link to the board, or raise transport.timeout_s in its profile.",
                timeout_s=timeout_s,
            ) from None
        except FileNotFoundError as exc:
            raise ConfigError(f"cannot run '{cmd[0]}': {exc.strerror}", hint="Install the OpenSSH client.") from None
        check_result(proc, self.target, what)
        return proc

    def put(self, name: str, data: bytes, *, executable: bool = False) -> str:
        local = self._local / name
        local.write_bytes(data)
        if executable:
            local.chmod(0o755)  # scp keeps the mode bits
        remote = f"{self.remote_dir}/{name}"
        self._call(scp_command(self.target, [str(local)], remote, upload=True), "scp (upload)",
                   self.target.connect_timeout_s + 120)
        return remote

    def get(self, name: str) -> bytes:
        local = self._local / f"got-{name}"
        self._call(scp_command(self.target, [f"{self.remote_dir}/{name}"], str(local), upload=False),
                   "scp (download)", self.target.connect_timeout_s + 120)
        return local.read_bytes()

    def sha256(self, names: Sequence[str]) -> dict[str, str]:
        """SHA-256 (hex) of deployed files, computed on the board with ``sha256sum``."""
        paths = [f"{self.remote_dir}/{n}" for n in names]
        proc = self._call(ssh_command(self.target, ["sha256sum", "--", *paths]), "ssh (sha256sum)",
                          self.target.connect_timeout_s + 60)
        by_path = {}
        for line in proc.stdout.splitlines():
            digest, _, path = line.strip().partition("  ")
            by_path[path.lstrip("*")] = digest.lower()
        return {n: by_path.get(p, "") for n, p in zip(names, paths)}

    def run(self, args: Sequence[str], timeout_s: float) -> "subprocess.CompletedProcess[str]":
        # The runner gets absolute paths in remote_dir, so no `cd` is needed.
        return self._call(ssh_command(self.target, list(args)), "ssh (run)", timeout_s)

    def close(self) -> None:
        try:
            if getattr(self, "remote_dir", ""):
                self._call(ssh_command(self.target, ["rm", "-rf", "--", self.remote_dir]), "ssh (cleanup)",
                           self.target.connect_timeout_s + 30)
        except (TransportError, DeviceTimeoutError) as exc:
            logger.warning("could not remove %s on the board: %s", self.remote_dir, exc)
        finally:
            self.remote_dir = ""
            shutil.rmtree(self._local, ignore_errors=True)

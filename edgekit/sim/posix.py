"""The device agent as a host process behind a pseudo-terminal.

The agent's stdin/stdout are the master side of a pty; the host opens the
slave name with the same :class:`~edgekit.runtime.transport.SerialTransport`
it uses for a board, so the protocol code under test is the real one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tty
from pathlib import Path

__all__ = ["PosixAgent"]

logger = logging.getLogger(__name__)


class PosixAgent:
    """Runs an agent executable on a pty.

    Args:
        executable: Built with port ``posix`` (see :func:`~edgekit.sim.agent_build.build_agent`).
        storage: File that keeps the weights slots across restarts (like flash),
            or None for memory only.

    Attributes:
        port: The pty slave path to open with pyserial.
    """

    def __init__(self, executable: Path, storage: Path | None = None) -> None:
        self.executable = Path(executable)
        self.storage = storage
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        self._master = master
        # Kept open so the master never reads EOF between host sessions.
        self._slave = slave
        self.port = os.ttyname(slave)
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Starts (or restarts, like a reset) the agent process."""
        env = dict(os.environ)
        if self.storage is not None:
            env["EK_AGENT_STORAGE"] = str(self.storage)
        self._proc = subprocess.Popen(
            [str(self.executable)], stdin=self._master, stdout=self._master, env=env, close_fds=True
        )

    def reset(self) -> None:
        """Kills and restarts the agent: RAM state is lost, storage is kept."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """Stops the agent process."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def close(self) -> None:
        """Stops the agent and closes the pty."""
        self.stop()
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "PosixAgent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""``edgekit flash``: upload a package to a board (or its simulator) and say
what the device verified."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from edgekit.api.progress import SILENT, Progress
from edgekit.api.target import RunTarget
from edgekit.runtime.runner import open_for_board, open_runner

__all__ = ["Deployment", "FlashResult", "flash_package"]


@dataclass(frozen=True)
class Deployment:
    """What a runner did to put the package on the device, and what it checked.

    Attributes:
        transport: How it got there (``serial /dev/ttyACM0``, ``unicorn
            simulator (pty)``, an SSH address, ``this process``).
        action: What was done, in words.
        verified: Whether the device's own check of what it holds passed.
            Set from the check that ran (a runner that reports nothing
            claims nothing).
        check: What that check compared, in words.
        details: Anything else the runner reported.
    """

    transport: str
    action: str
    verified: bool
    check: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, runner: object) -> "Deployment":
        """What ``runner`` reported; an in-process runner reports nothing."""
        reported = dict(getattr(runner, "deployment", None) or {})
        if not reported:
            return cls("this process", "loaded the package here; nothing was sent to a device", False,
                       "none on a device (the package's member hashes were checked when it was opened)")
        known = ("transport", "action", "verified", "check")
        return cls(str(reported["transport"]), str(reported["action"]), bool(reported["verified"]),
                   str(reported["check"]), {k: v for k, v in reported.items() if k not in known})  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The runner's report as it gave it."""
        return {"transport": self.transport, "action": self.action, "verified": self.verified, "check": self.check,
                **self.details}  # fmt: skip


@dataclass(frozen=True)
class FlashResult:
    """A flashed package.

    Attributes:
        board: The board it went to.
        model: The model's name in the package.
        simulated: Whether the board was a simulator (which starts empty:
            the upload is checked there, not kept).
        deployment: What was done and verified.
        seconds: Time to open the runner (upload and check included).
        device: The device's INFO answer.
        memory: The package's memory plan (manifest ``memory``).
    """

    board: str
    model: str
    simulated: bool
    deployment: Deployment
    seconds: float
    device: dict[str, Any]
    memory: dict[str, Any]

    @property
    def verified(self) -> bool:
        """Whether the device's check passed (see :attr:`Deployment.verified`)."""
        return self.deployment.verified

    def to_json(self) -> dict[str, Any]:
        """JSON form (``edgekit flash --json``)."""
        return {
            "board": self.board,
            "simulated": self.simulated,
            "verified": self.verified,
            "check": self.deployment.check,
            "deployment": self.deployment.to_json(),
            "seconds": self.seconds,
            "device": self.device,
            "memory": self.memory,
        }


def flash_package(package: str | os.PathLike[str], *, target: RunTarget = RunTarget(),
                  progress: Progress = SILENT) -> FlashResult:
    """Uploads ``package`` to the board of ``target`` and has the device check
    what it holds.

    Example::

        result = flash_package("model.ekpkg", target=RunTarget(board="stm32h7", port="/dev/ttyACM0"))
        assert result.verified, result.deployment.check

    Args:
        progress: Gets the phase ``flashing BOARD`` (upload and check).

    Raises:
        PackageError: the package is damaged or for another board.
        DeviceError: the upload or the device's check failed.
    """
    opened, board = open_for_board(package, target.board, target.allow_other_board, list(target.board_dirs))
    start = time.perf_counter()
    with progress.phase(f"flashing {board.name}"):
        runner = open_runner(opened, board, port=target.port, sim=target.sim)
    try:
        info = dict(runner.info())
        simulated = bool(getattr(runner, "simulated", False))
        deployment = Deployment.of(runner)
    finally:
        runner.close()
    return FlashResult(board=board.name, model=opened.manifest.model_name or "model",
                       simulated=simulated, deployment=deployment, seconds=round(time.perf_counter() - start, 3),
                       device=info, memory=dict(opened.manifest.memory or {}))  # fmt: skip

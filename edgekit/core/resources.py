"""Where edgekit's shipped data folders live.

``targets/``, ``board_configs/`` and ``firmware_stubs/`` sit at the top of the
repository (product layout) and ship inside the wheel as ``edgekit.targets``,
``edgekit.board_configs`` and ``edgekit.firmware_stubs``. Code asks here for
the folder and gets the installed copy, or the source tree's when edgekit runs
from a checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from edgekit.core.errors import ConfigError

__all__ = ["data_dir"]

_FOLDERS = ("targets", "board_configs", "firmware_stubs")


def data_dir(folder: str) -> Path:
    """Returns the path of a shipped data folder.

    Args:
        folder: One of ``targets``, ``board_configs``, ``firmware_stubs``.

    Raises:
        ConfigError: if the folder is in neither place.
    """
    if folder not in _FOLDERS:
        raise ValueError(f"unknown data folder {folder!r}")
    try:
        path = Path(str(resources.files(f"edgekit.{folder}")))
        if path.is_dir():
            return path
    except ModuleNotFoundError:
        pass
    path = Path(__file__).resolve().parents[2] / folder
    if not path.is_dir():
        raise ConfigError(
            f"edgekit's {folder}/ folder is missing (looked in the package and at {path})",
            hint="Reinstall edgekit; its wheel ships this folder.",
        )
    return path

"""Where edgekit's shipped data folders live.

``targets/``, ``board_configs/`` and ``firmware_stubs/`` sit at the top of the
repository (product layout) and ship inside the wheel as ``edgekit.targets``,
``edgekit.board_configs`` and ``edgekit.firmware_stubs``. Code asks here for
the folder and gets the installed copy, or the source tree's when edgekit runs
from a checkout.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.core.errors import ConfigError

__all__ = ["data_dir"]

_FOLDERS = ("targets", "board_configs", "firmware_stubs", "rtl")


def data_dir(folder: str) -> Path:
    """Returns the path of a shipped data folder.

    Args:
        folder: One of ``targets``, ``board_configs``, ``firmware_stubs``, ``rtl``.

    Raises:
        ConfigError: if the folder is in neither place.
    """
    if folder not in _FOLDERS:
        raise ValueError(f"unknown data folder {folder!r}")
    package_dir = Path(__file__).resolve().parents[1]
    # Installed wheel: the folder sits inside the package (edgekit/<folder>).
    # These folders have no __init__.py, so importlib.resources would see a
    # namespace package; plain paths are simpler and always right here.
    installed = package_dir / folder
    if installed.is_dir():
        return installed
    # Source checkout: the folder is at the top of the repository.
    checkout = package_dir.parent / folder
    if checkout.is_dir():
        return checkout
    raise ConfigError(
        f"edgekit's {folder}/ folder is missing (looked at {installed} and {checkout})",
        hint="Reinstall edgekit; its wheel ships this folder.",
    )

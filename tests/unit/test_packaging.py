"""The wheel must carry every subpackage and the data folders."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "edgekit").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    missing = sorted(found - listed)
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"
    for data in ("targets", "board_configs", "firmware_stubs"):
        assert config["package-dir"][f"edgekit.{data}"] == data
        assert f"edgekit.{data}" in listed


def test_installed_layout_finds_data_folders(tmp_path: Path) -> None:
    """In a wheel the data folders sit inside the package (edgekit/targets, ...),
    with no __init__.py; the profiles must load from there."""
    import shutil
    import subprocess

    site = tmp_path / "site"
    shutil.copytree(REPO / "edgekit", site / "edgekit", ignore=shutil.ignore_patterns("__pycache__"))
    for data in ("targets", "board_configs", "firmware_stubs"):
        shutil.copytree(REPO / data, site / "edgekit" / data, ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "from edgekit.core.profiles import load_profiles; from edgekit.core.resources import data_dir; "
        "p = load_profiles(); print(len(p.boards.available()), data_dir('firmware_stubs'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, where = out.stdout.split()
    assert int(count) >= 7
    assert where == str(site / "edgekit" / "firmware_stubs")

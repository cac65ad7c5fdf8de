"""The files and ``python -m`` modules the README, BENCHMARKS.md and docs/ name exist.

Modules move (issue #19); a page that still points at the old place sends a
reader nowhere. Checked: every backticked path that starts at the repository
root (``edgekit/...``, ``tests/...``, ``benchmarks/...``, ``firmware_stubs/...``
...), with ``file.py.attr`` / ``file.attr`` read as an attribute of that file,
and every ``python -m edgekit...`` command.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]
ROOTS = ("edgekit", "tests", "benchmarks", "docs", "rtl", "firmware_stubs", "board_configs", "targets", "examples", "fuzz")
#: Path components that stand for a name the reader chooses (docs/architecture.md: "a new backend foo").
PLACEHOLDERS = {"foo"}


def _wheel_dirs() -> dict[str, str]:
    """``edgekit/rtl`` -> ``rtl``: folders the wheel installs under edgekit/ from elsewhere (pyproject's package-dir)."""
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    return {name.replace(".", "/"): folder for name, folder in package_dir.items() if name != "edgekit"}


def _exists(path: str, wheel_dirs: dict[str, str]) -> bool:
    for installed, source in wheel_dirs.items():
        if path == installed or path.startswith(installed + "/"):
            path = source + path[len(installed):]
    if (REPO / path).exists():
        return True
    head, _, attr = path.rpartition(".")  # file.py.attr, or module.attr
    return bool(attr) and "/" not in attr and ((REPO / head).is_file() or (REPO / f"{head}.py").is_file())


def test_every_path_the_docs_name_exists() -> None:
    wheel_dirs = _wheel_dirs()
    missing = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for quoted in re.findall(r"`([^`\s]+)`", text):
            path = quoted.split("::")[0].rstrip("/.,")
            if (not re.match(rf"({'|'.join(ROOTS)})/", path) or any(c in path for c in "<>*{}[]$")
                    or PLACEHOLDERS & set(path.split("/"))):  # fmt: skip
                continue
            if not _exists(path, wheel_dirs):
                missing.append(f"{page.relative_to(REPO)}: `{quoted}`")
        for module in re.findall(r"python -m (edgekit[\w.]*)", text):
            as_path = module.replace(".", "/")
            if not ((REPO / f"{as_path}.py").is_file() or (REPO / as_path / "__main__.py").is_file()):
                missing.append(f"{page.relative_to(REPO)}: python -m {module}")
    assert not missing, "pages name paths that do not exist (moved?):\n" + "\n".join(missing)

"""The import-linter contracts in pyproject.toml hold, and they can fail.

The contracts (`[tool.importlinter]`) say which layer may import which
(docs/architecture.md). The first test runs `lint-imports` on this tree; the
others copy the package, break a contract on purpose and check that
import-linter names the broken import, so a contract that can never fail (a
typo in a layer name, an over-broad ignore) is caught too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Runs import-linter's command line in this interpreter (no PATH lookup).
_LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on ``tree`` (which holds pyproject.toml and edgekit/)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, "-c", _LINT, "--no-cache", "--no-logo"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120,
    )


def _copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    shutil.copytree(
        ROOT / "edgekit", tree / "edgekit",
        ignore=shutil.ignore_patterns("__pycache__", "*.onnx", "*.npz", "*.json"),
    )
    return tree


def test_contracts_hold_on_this_tree() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "injected", "expected"),
    [
        # A lower layer importing a higher one.
        ("core/errors.py", "import edgekit.cli", "edgekit.core is not allowed to import edgekit.cli"),
        ("frontend/__init__.py", "import edgekit.compress", "edgekit.frontend is not allowed to import edgekit.compress"),
        # Independent siblings of one layer.
        ("compiler/__init__.py", "import edgekit.runtime", "edgekit.compiler is not allowed to import edgekit.runtime"),
    ],
)
def test_layers_contract_fails_on_an_upward_import(tmp_path: Path, module: str, injected: str, expected: str) -> None:
    tree = _copy_tree(tmp_path)
    assert _lint(tree).returncode == 0  # the copy alone is clean
    path = tree / "edgekit" / module
    path.write_text(path.read_text() + f"\n{injected}  # injected by test_architecture\n")

    result = _lint(tree)

    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert expected in result.stdout


def test_acyclic_contract_fails_on_a_module_cycle(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    core = tree / "edgekit" / "core"
    (core / "cycle_a.py").write_text("import edgekit.core.cycle_b\n")
    (core / "cycle_b.py").write_text("import edgekit.core.cycle_a\n")

    result = _lint(tree)

    assert result.returncode != 0
    assert "No cycles are allowed in edgekit.core" in result.stdout

"""What :func:`edgekit.compiler.driver.compile_model` returns: the written package, typed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.package import Manifest

__all__ = ["CompileResult"]


@dataclass(frozen=True)
class CompileResult:
    """A written package.

    Attributes:
        package: The ``.ekpkg`` file.
        manifest: The manifest written into it; a backend's own section
            through its typed class (e.g. ``AotSection.of(result.manifest)``).
        compile_seconds: Time the compile took.
        package_bytes: Size of the package file.
    """

    package: Path
    manifest: Manifest
    compile_seconds: float
    package_bytes: int

    def to_json(self) -> dict[str, Any]:
        """``edgekit compile --json``: the manifest, then ``compile_seconds`` and ``package_bytes``."""
        return {**self.manifest.to_json(), "compile_seconds": self.compile_seconds, "package_bytes": self.package_bytes}

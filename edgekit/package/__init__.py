"""The ``.ekpkg`` package format: the typed manifest, the archive, bench reports.

This layer sits below everything that builds or runs packages (compiler,
runtime, compress, report) and above ``core`` only; see docs/architecture.md
and docs/package-format.md.
"""

from __future__ import annotations

from edgekit.package.archive import (
    MAX_MEMBERS,
    MAX_PACKAGE_BYTES,
    PACKAGE_SUFFIX,
    Package,
    open_package,
    write_package,
)
from edgekit.package.bench_report import BenchReport
from edgekit.package.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    ModelInfo,
    check_member_name,
    sha256_bytes,
)

__all__ = [
    "BenchReport",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "PACKAGE_SUFFIX",
    "MAX_MANIFEST_BYTES",
    "MAX_PACKAGE_BYTES",
    "MAX_MEMBERS",
    "FileEntry",
    "Manifest",
    "ModelInfo",
    "Package",
    "check_member_name",
    "open_package",
    "sha256_bytes",
    "write_package",
]

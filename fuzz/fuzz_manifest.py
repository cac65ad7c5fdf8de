"""Fuzz target: the package manifest parser and archive intake (``open_package``).

Every input becomes a zip holding it as ``manifest.json`` (and, when the input
is itself a zip, the input archive as is). Property: ``open_package`` either
returns a package whose every listed member verified, or raises PackageError
(incl. PackageIntegrityError) — never another exception, and it writes nothing.

Long run (atheris)::

    .venv/bin/python fuzz/fuzz_manifest.py -max_total_time=3600 fuzz/corpus_manifest

Without atheris::

    .venv/bin/python fuzz/fuzz_manifest.py --hypothesis 20000
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__" and "--hypothesis" not in sys.argv:
    import atheris

    # Coverage feedback for edgekit's code only (instrumenting numpy & co. takes minutes).
    with atheris.instrument_imports(include=["edgekit", "zipfile", "json"]):
        from edgekit.package import MANIFEST_NAME, open_package
        from edgekit.core.errors import PackageError
else:
    from edgekit.package import MANIFEST_NAME, open_package
    from edgekit.core.errors import PackageError

__all__ = ["test_one_input"]

_DIR = tempfile.mkdtemp(prefix="ekfuzz-")
_PATH = os.path.join(_DIR, "f.ekpkg")


def _as_archive(data: bytes) -> bytes:
    if data[:4] == b"PK\x03\x04":
        return data  # let the fuzzer mutate whole archives too
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(MANIFEST_NAME, data)
        zf.writestr("a.bin", b"abc")
    return buf.getvalue()


def test_one_input(data: bytes) -> None:
    """One fuzz iteration; raises AssertionError on a property violation."""
    with open(_PATH, "wb") as fh:
        fh.write(_as_archive(data))
    try:
        package = open_package(_PATH)
    except PackageError:
        return
    for name in package.names():
        assert len(package.read(name)) == package.manifest.files[name].size


def _main(argv: list[str]) -> None:
    if argv[:1] == ["--hypothesis"]:
        from _hypothesis_driver import run

        run(test_one_input, int(argv[1]) if len(argv) > 1 else 10000)
        return
    import atheris

    atheris.Setup([sys.argv[0], *argv], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _main(sys.argv[1:])

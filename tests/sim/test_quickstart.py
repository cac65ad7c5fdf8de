"""docs/quickstart.md, followed literally, works.

Every ```sh block runs, in order, in one bash session (``set -e``) in a
temporary directory that looks like the root of an installed checkout; only
the block marked ``quickstart-test: skip`` (clone, venv, pip install -- what
the test environment already is) is left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "quickstart.md"
_BLOCK = re.compile(r"(<!-- quickstart-test: skip[^>]*-->\s*)?```sh\n(.*?)```", re.DOTALL)


def _blocks() -> list[tuple[bool, str]]:
    return [(bool(skip), body) for skip, body in _BLOCK.findall(DOC.read_text())]


def test_only_the_install_block_is_skipped() -> None:
    blocks = _blocks()
    skipped = [body for skip, body in blocks if skip]
    assert len(skipped) == 1 and "pip install" in skipped[0] and "git clone" in skipped[0]
    assert sum(not skip for skip, _ in blocks) >= 5


@pytest.mark.slow
def test_quickstart_commands_work(tmp_path: Path) -> None:
    (tmp_path / "edgekit").symlink_to(REPO / "edgekit")  # the clone's example files
    script = "set -euo pipefail\n" + "\n".join(body for skip, body in _blocks() if not skip)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    work = tmp_path / "work"
    logits = np.load(work / "out.npz")["logits"]
    assert logits.shape == (16, 10) and np.isfinite(logits).all()
    assert "<svg" in (work / "bench.html").read_text() and "<svg" in (work / "compress.html").read_text()
    junit = ET.parse(work / "junit.xml").getroot()
    assert junit.get("failures") == "0" and junit.get("tests") == "3"
    assert "gate passed" in proc.stdout
    assert (work / "digits.int8.onnx").stat().st_size < (REPO / "edgekit/examples/digits_cnn.onnx").stat().st_size

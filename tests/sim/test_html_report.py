"""HTML reports open in headless Chromium with their plots present.

Needs the Debian package ``chromium``; skipped without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli.main import main
from edgekit.report import bench_html, compare, write_html

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "examples" / "ci" / "baselines" / "rv32-mcu-sim.json"

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium: apt-get install -y chromium")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _dom(tmp_path: Path, page: Path) -> str:
    proc = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def test_bench_report_renders_with_plots(tmp_path: Path) -> None:
    report = json.loads(BASELINE.read_text())  # a real bench --json of the digits model on the simulator
    slower = json.loads(json.dumps(report))
    slower["cycles"]["p50"] *= 1.25
    page = tmp_path / "bench.html"
    write_html(page, bench_html(slower, gate=compare(slower, report, 0.05),
                                board_memory={"ram_bytes": 512 * 1024, "flash_bytes": 2 << 20}))
    text = page.read_text()
    for external in ("<script", "<link", "src=", 'href="http', "url(http"):  # self-contained: loads nothing
        assert external not in text, external

    dom = _dom(tmp_path, page)
    for plot in ("plot-latency", "plot-memory"):
        start = dom.index(f'id="{plot}"')
        figure = dom[start:dom.index("</figure>", start)]
        assert "<svg" in figure and ("<path" in figure or "<rect" in figure), plot
    assert "REGRESSED" in dom and "cycles p50" in dom

    shot = tmp_path / "bench.png"
    proc = _chromium(tmp_path, "--window-size=1000,1600", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.std() > 0.05  # not a blank page
    blue = np.all(np.abs(pixels - np.array([0x3B, 0x6E, 0xA8]) / 255) < 0.03, axis=-1)
    assert blue.sum() > 2000  # the plots' bars were painted


def test_compress_report_renders_with_variants_plot(tmp_path: Path) -> None:
    examples = REPO / "edgekit" / "examples"
    page = tmp_path / "q.html"
    code = main(["-q", "compress", str(examples / "digits_cnn.onnx"), "-o", str(tmp_path / "q.onnx"),
                 "--quantize", "int8", "--calibration", str(examples / "digits_input.npz"),
                 "--report", str(page), "--report", str(tmp_path / "q.json")])
    assert code == 0
    dom = _dom(tmp_path, page)
    for plot in ("plot-variants", "plot-layer-sqnr"):
        start = dom.index(f'id="{plot}"')
        assert "<svg" in dom[start:dom.index("</figure>", start)], plot
    doc = json.loads((tmp_path / "q.json").read_text())
    ratio = doc["steps"][0]["weight_bytes"]["ratio"]
    assert ratio > 3 and "fp32" in dom and "int8" in dom

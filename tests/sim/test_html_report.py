"""HTML reports open in headless Chromium with their plots present.

Needs the Debian package ``chromium``; skipped without it.
"""

from __future__ import annotations

import html
import json
import re
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


#: Appended to a copy of a report: measures, in the browser's layout, every
#: filled bar of the memory chart and writes the boxes into the page.
_MEASURE_BARS = """<script>
const bars = [];
for (const el of document.querySelectorAll('#plot-memory g[id^="patch_"] path')) {
  const fill = getComputedStyle(el).fill;
  if (fill === 'none' || fill === 'rgb(255, 255, 255)') continue;
  const box = el.getBoundingClientRect();
  bars.push({fill: fill, width: box.width, height: box.height});
}
const out = document.createElement('pre');
out.id = 'measured-bars';
out.textContent = JSON.stringify(bars);
document.body.appendChild(out);
</script>"""


@pytest.mark.parametrize("board", ["rv32-mcu-sim", "raspberry-pi-4"])
def test_simulated_bench_report_in_chromium_claims_no_ratio_and_draws_memory_bars(
        tmp_path: Path, board: str, capsys: pytest.CaptureFixture[str]) -> None:
    """#17 acceptance: the report of a bench on a simulated board (an MCU
    simulator, a Linux board under qemu whose RAM is 4 GiB) opened in Chromium."""
    if board == "raspberry-pi-4" and shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed: apt-get install qemu-user")
    examples = REPO / "edgekit" / "examples"
    package, page = tmp_path / f"digits-{board}.ekpkg", tmp_path / "bench.html"
    assert main(["-q", "compile", str(examples / "digits_cnn.onnx"), "--board", board, "-o", str(package)]) == 0
    assert main(["-q", "bench", str(package), "--sim", "--compare-ort", "--report", str(page)]) == 0
    capsys.readouterr()

    dom = _dom(tmp_path, page)
    text = " ".join(re.sub(r"<svg.*?</svg>|<[^>]+>", " ", dom, flags=re.S).split())
    # onnxruntime ran on this machine, the model on a simulated board: no
    # edgekit/onnxruntime ratio is printed, the caveat is.
    assert "p50 ratio" not in text and not re.search(r"\d+(\.\d+)?\s*[x×] (faster|slower)", text), text
    assert "not a like-for-like ratio" in text
    if board == "raspberry-pi-4":
        assert "not the board's latency" in text

    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text(encoding="utf-8").replace("</body>", _MEASURE_BARS + "</body>"),
                        encoding="utf-8")
    dom = _dom(tmp_path, measured)
    found = re.search(r'<pre id="measured-bars">(.*?)</pre>', dom, flags=re.S)
    assert found, dom[-2000:]
    bars = json.loads(html.unescape(found.group(1)))
    bars = [b for b in bars if b["height"] >= 10 and b["width"] > 0]  # legend swatches are smaller; no workspace
    # Arena, weights and code each get a bar a reader can see, even against
    # the 4 GiB of a Raspberry Pi (which is written beside the bar instead).
    assert len(bars) >= 3, bars
    # (On rv32-mcu-sim the 512 KiB of RAM is drawn to scale: the arena bar is
    # about 12 px of a 470 px axis, the weights about 70 px.)
    assert min(b["width"] for b in bars) >= 5 and max(b["width"] for b in bars) >= 50, bars

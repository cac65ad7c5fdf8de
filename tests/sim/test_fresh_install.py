"""Every command the README shows works after a plain ``pip install .``.

The development environment has the test extras (scikit-learn, rapidocr, ...)
and whatever they bring in, so a dependency edgekit forgets to declare goes
unnoticed there: ``edgekit tune`` failed after ``pip install .`` because TVM's
``popen_pool`` needs ``cloudpickle``, which only the test extras pulled in.

This test installs edgekit into a new virtual environment exactly as the
README's first set-up command does (no extras; pip resolves edgekit's declared
dependencies from the index it is configured with, reusing its cache) and runs
each README command there at small scale, from a folder outside the source
tree, with its own edgekit cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

_INSTALL_TIMEOUT_S = 600


def _readme_commands() -> set[str]:
    """The ``edgekit SUBCOMMAND`` names in the README's shell blocks and prose."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return set(re.findall(r"\bedgekit (?:--\S+ )*([a-z]+)\b", text)) - {"is", "takes", "loads"}


def _copy_sources(dest: Path) -> Path:
    """The files git tracks or would add (outside a git checkout, the tree less
    build outputs): pip's in-tree build must not write into the source tree."""
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True,
                               timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
        return dest
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("fresh-install")
    src = _copy_sources(root / "src")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, symlinks=os.name != "nt").create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(env_dir),
               EDGEKIT_CACHE=str(root / "cache"), COLUMNS="100", PYTHONDONTWRITEBYTECODE="")
    t0 = time.perf_counter()
    # --no-compile only skips writing .pyc files for every installed module
    # (most of the install time); what is installed, and how, is unchanged.
    out = subprocess.run([str(bindir / "python"), "-m", "pip", "install", "--no-compile",
                          "--disable-pip-version-check", str(src)],
                         env=env, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S)
    assert out.returncode == 0, f"pip install . failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    work = root / "work"
    work.mkdir()
    return {"bin": bindir, "env": env, "work": work, "install_s": time.perf_counter() - t0}


def test_readme_commands_after_plain_pip_install(fresh_env: dict) -> None:
    """Each README command, at small scale; flags that need what this machine
    lacks (a serial port, an RPC tracker) are left off, no command is."""
    bindir, env, work = fresh_env["bin"], fresh_env["env"], fresh_env["work"]
    # The installed environment must not see the test extras.
    probe = subprocess.run([str(bindir / "python"), "-c", "import importlib.util as u; print(u.find_spec('sklearn'))"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "None", "the fresh environment has the test extras"
    find = subprocess.run([str(bindir / "python"), "-c",
                           "from edgekit.examples.digits import example_model_path as m, example_inputs_path as i;"
                           "print(m()); print(i())"], env=env, capture_output=True, text=True, timeout=60, cwd=work)
    assert find.returncode == 0, find.stderr
    model, data = find.stdout.split()
    assert str(REPO) not in model, "edgekit was imported from the source tree, not the installed wheel"
    (work / "recipe.toml").write_text('[[steps]]\ntype = "prune-structured"\nratio = 0.3\n\n'
                                      '[[steps]]\ntype = "recover"\nmethod = "refit"\n\n'
                                      '[[steps]]\ntype = "quantize"\n', encoding="utf-8")
    ran: set[str] = set()
    timings: list[str] = []

    def edgekit(*argv: str) -> str:
        t0 = time.perf_counter()
        out = subprocess.run([str(bindir / "edgekit"), *argv], env=env, cwd=work, capture_output=True, text=True,
                             timeout=300, stdin=subprocess.DEVNULL)
        timings.append(f"{time.perf_counter() - t0:5.1f} s  edgekit {' '.join(argv)}")
        assert out.returncode == 0, (f"`edgekit {' '.join(argv)}` exited {out.returncode} after a plain "
                                     f"pip install:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        ran.add(next((a for a in argv if not a.startswith("-")), ""))
        return out.stdout

    edgekit("--help")
    edgekit("boards")
    boards = json.loads(edgekit("boards", "--json"))["boards"]
    assert {"host", "rv32-mcu-sim", "stm32h7"} <= {b["name"] for b in boards}
    report = json.loads(edgekit("inspect", model, "--input-shape", "input=1x1x8x8", "--board", "stm32h7", "--json"))
    assert report["macs"] > 0
    edgekit("compress", model, "-o", "model.int8.onnx", "--quantize", "int8", "--calibration", data,
            "--report", "q.json")
    edgekit("compress", model, "-o", "small.onnx", "--prune-structured", "0.3", "--recover", "refit",
            "--calibration", data, "--quantize", "int8")
    edgekit("compress", model, "-o", "recipe.onnx", "--recipe", "recipe.toml", "--calibration", data,
            "--report", "r.html")
    assert (work / "r.html").stat().st_size > 0
    edgekit("compile", model, "--board", "host", "-o", "model.ekpkg", "--input-shape", "input=1x1x8x8")
    # The int8 path (issue 14): the int8/fp32 choice times builds on this
    # machine; the payoff compiles and times every step on the host.
    compiled = json.loads(edgekit("compile", "model.int8.onnx", "--board", "host", "-o", "int8.ekpkg",
                                  "--int8-choice", "auto", "--int8-choice-budget", "1", "--json"))
    assert compiled["int8_choice"]["source"] == "measured", compiled["int8_choice"]
    assert json.loads(edgekit("bench", "int8.ekpkg", "--runs", "5", "--compare-ort", "--json"))["outputs_agree"]
    paid = json.loads(edgekit("compress", model, "-o", "paid.onnx", "--prune-structured", "0.3", "--calibration", data,
                              "--quantize", "int8", "--board", "host", "--json"))
    assert [r["step"] for r in paid["payoff"]["summary"]][:2] == ["fp32", "prune-structured"], paid["payoff"]
    edgekit("compile", "small.onnx", "--board", "rv32-mcu-sim", "-o", "pruned.ekpkg")
    flashed = json.loads(edgekit("flash", "pruned.ekpkg", "--board", "rv32-mcu-sim", "--sim", "--json"))
    assert flashed.get("verified") is True, flashed
    edgekit("run", "model.ekpkg", "--input", data, "-o", "out.npz")
    assert (work / "out.npz").stat().st_size > 0
    edgekit("bench", "model.ekpkg", "--runs", "5", "--compare-ort", "--json-out", "result.json")
    assert json.loads((work / "result.json").read_text())["latency_ms"]["p50"] > 0
    edgekit("demo", "--runs", "2")
    # TVM's MetaSchedule builds and measures candidates in worker processes
    # (cloudpickle); a trial or two proves the whole path.
    edgekit("tune", model, "--board", "host", "--trials", "2", "--db", str(work / "db"))
    edgekit("compile", model, "--board", "host", "-o", "tuned.ekpkg", "--tune", "2")
    assert "complete -o filenames" in edgekit("completion", "bash")
    edgekit("doctor")
    # The FPGA flow is an extra: a plain install refuses it, naming the extra.
    synth = subprocess.run([str(bindir / "edgekit"), "synth", "--board", "ulx3s-85f", "-o", "fpga"], env=env, cwd=work,
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert synth.returncode == 2 and "edgekit[fpga]" in synth.stderr, (synth.returncode, synth.stderr[-2000:])
    ran.add("synth")

    missing = _readme_commands() - ran
    assert not missing, f"README shows `edgekit {sorted(missing)}`, which this test does not run"
    sys.stderr.write(f"pip install: {fresh_env['install_s']:.1f} s\n" + "\n".join(timings) + "\n")

"""Start-up time of the ``edgekit`` command (issue #17).

Runs each command line below ``--repeat`` times as a new process (the console
script of the Python running this, else ``python -m edgekit``) and reports
the median and the worst wall-clock time, and which heavy libraries the
process imported. Commands that only list things must not import onnx,
onnxruntime, TVM or matplotlib.

Usage::

    .venv/bin/python benchmarks/startup.py
    .venv/bin/python benchmarks/startup.py --repeat 20 --json out.json

Exit status 0 when ``edgekit --help`` and ``edgekit boards --json`` start
within ``--budget`` seconds (default 0.5) at the median, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: Command lines that must start within the budget.
GATED = (["--help"], ["boards", "--json"])
#: Shown for comparison (they import what they use).
OTHERS = (["boards"], ["inspect", "--help"], ["compile", "--help"])
HEAVY = ("onnx", "onnxruntime", "tvm", "matplotlib", "onnxslim")

_PROBE = (
    "import sys, io, contextlib\n"
    "sys.argv = ['edgekit', *sys.argv[1:]]\n"
    "from edgekit.cli.main import main\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    try:\n"
    "        main()\n"
    "    except SystemExit:\n"
    "        pass\n"
    "heavy = sorted({m.split('.')[0] for m in sys.modules} & set(%r))\n"
    "print(','.join(heavy))\n"
) % (HEAVY,)


def _launcher() -> list[str]:
    script = Path(sys.executable).parent / "edgekit"
    if script.exists():
        return [str(script)]
    found = shutil.which("edgekit")
    return [found] if found else [sys.executable, "-m", "edgekit"]


def measure(argv: list[str], repeat: int) -> dict:
    """Wall-clock seconds of ``edgekit ARGV`` over ``repeat`` fresh processes,
    and the heavy libraries one such process imports."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([*_launcher(), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    probe = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=False)
    heavy = probe.stdout.strip().split(",") if probe.stdout.strip() else []
    return {"command": "edgekit " + " ".join(argv), "median_s": statistics.median(times), "max_s": max(times),
            "heavy_imports": heavy}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10, help="processes per command line (default 10)")
    ap.add_argument("--budget", type=float, default=0.5, help="median seconds allowed (default 0.5)")
    ap.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    args = ap.parse_args(argv)
    rows = [dict(measure(a, args.repeat), gated=a in GATED) for a in (*GATED, *OTHERS)]
    width = max(len(r["command"]) for r in rows)
    print(f"{'command':<{width}}  median     max  heavy imports")
    for r in rows:
        print(f"{r['command']:<{width}}  {r['median_s']:5.3f} s {r['max_s']:5.3f} s  "
              f"{', '.join(r['heavy_imports']) or '-'}{'' if r['gated'] else '  (not gated)'}")
    failed = [r["command"] for r in rows if r["gated"] and r["median_s"] > args.budget]
    if args.json:
        Path(args.json).write_text(json.dumps({"budget_s": args.budget, "rows": rows}, indent=2) + "\n")
    if failed:
        print(f"over the {args.budget} s budget: {', '.join(failed)}")
        return 1
    print(f"within the {args.budget} s budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())

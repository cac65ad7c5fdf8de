"""Reliability benchmark for issue 10: fault-injected uploads and power cuts.

Runs, over the real host stack and the real device agent:

1. ``--transfers`` uploads (default 1,000) of random images whose sizes are
   log-spaced from 1 B to 1 MiB, through a link with 1 % corrupted and 1 %
   damaged-by-drop frames per direction; every attempt is judged from the
   device's storage (never from its answers): 0 silent corruptions allowed,
   every attempt must end verified or in a typed error within its bound;
2. the same at 0.1 % corruption + 0.1 % drops: at least 99 % must verify;
3. a mixed run with duplicated bytes, stalls beyond the timeout, disconnects
   and device resets (reported, same pass rules as 1);
4. a device reset before and after every host frame of a 64 KiB upload
   (POSIX agent): 0 devices without a valid image;
5. a power cut at every flash write of an upload on the rv32 simulator, plain
   and torn: 0 devices without a valid image.

Usage::

    .venv/bin/python benchmarks/reliability.py                 # full run, ~10-20 min on 2 cores
    .venv/bin/python benchmarks/reliability.py --transfers 100 # quick look
    .venv/bin/python benchmarks/reliability.py --json out.json

Exit status 0 when every acceptance rule holds, 1 otherwise. Figures go into
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.runtime.faults import FaultSpec  # noqa: E402
from edgekit.reliability.trials import log_sizes, power_cut_sweep, reset_sweep, run_transfer_trials, time_bound_s  # noqa: E402

logger = logging.getLogger("reliability")

#: Distinct image sizes; each needs its own agent build (weight_bytes is linked in).
SIZE_BUCKETS = 25


def _series(name: str, spec: FaultSpec, transfers: int) -> dict:
    sizes = log_sizes(SIZE_BUCKETS)
    per_size = max(1, round(transfers / len(sizes)))
    start = time.monotonic()
    summary = run_transfer_trials(sizes, per_size, spec)
    out = summary.as_dict()
    out["spec"] = spec.__dict__
    out["sizes"] = {"min": sizes[0], "max": sizes[-1], "buckets": len(sizes), "per_size": per_size}
    out["wall_seconds"] = round(time.monotonic() - start, 1)
    out["time_bound_seconds"] = {"1 B": round(time_bound_s(1), 1), "1 MiB": round(time_bound_s(1 << 20), 1)}
    print(f"[{name}] {json.dumps(out)}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transfers", type=int, default=1000, help="uploads per fault series (default 1000)")
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--sweep-bytes", type=int, default=64 * 1024, help="image size of the reset sweep")
    ap.add_argument("--skip", action="append", default=[], help="skip a part: a, b, c, sweep, powercut")
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    report: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "command": "benchmarks/reliability.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    ok = True
    if "a" not in args.skip:
        a = _series("1% corrupt + 1% drop", FaultSpec(corrupt=0.01, drop=0.01, seed=args.seed), args.transfers)
        report["corrupt_1pct_drop_1pct"] = a
        ok &= a["outcomes"]["silent_corruption"] == 0 and a["outcomes"]["bricked"] == 0
        ok &= a["outcomes"]["untyped_error"] == 0 and a["over_time"] == 0
    if "b" not in args.skip:
        b = _series("0.1% corrupt + 0.1% drop", FaultSpec(corrupt=0.001, drop=0.001, seed=args.seed + 1), args.transfers)
        report["corrupt_0.1pct_drop_0.1pct"] = b
        ok &= b["outcomes"]["silent_corruption"] == 0 and b["success_rate"] >= 0.99
    if "c" not in args.skip:
        mixed = FaultSpec(
            corrupt=0.01, drop=0.01, duplicate=0.01, stall=0.002, stall_s=0.5, disconnect=0.002, reset=0.002,
            seed=args.seed + 2,
        )
        c = _series("mixed faults", mixed, max(50, args.transfers // 4))
        report["mixed"] = c
        ok &= c["outcomes"]["silent_corruption"] == 0 and c["outcomes"]["bricked"] == 0
        ok &= c["outcomes"]["untyped_error"] == 0 and c["over_time"] == 0
    if "sweep" not in args.skip:
        start = time.monotonic()
        r = reset_sweep(args.sweep_bytes, seed=args.seed)
        report["reset_sweep"] = {**r.__dict__, "bytes": args.sweep_bytes, "wall_seconds": round(time.monotonic() - start, 1)}
        print(f"[reset sweep] {json.dumps(report['reset_sweep'])}", flush=True)
        ok &= r.without_valid_image == 0 and r.finished == r.trials
    if "powercut" not in args.skip:
        for torn in (False, True):
            start = time.monotonic()
            r = power_cut_sweep(4160, torn=torn, seed=args.seed)
            key = "power_cut_torn" if torn else "power_cut"
            report[key] = {**r.__dict__, "bytes": 4160, "wall_seconds": round(time.monotonic() - start, 1)}
            print(f"[{key}] {json.dumps(report[key])}", flush=True)
            ok &= r.without_valid_image == 0 and r.finished == r.trials
    report["pass"] = bool(ok)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print("PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

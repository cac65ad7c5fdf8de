"""Copies the best record of every kernel from a tuning database into the shipped record set.

Usage (how ``edgekit/tuning_records/x86-64-avx2`` was produced; see its README)::

    python benchmarks/cpu.py --trials 64 --db /tmp/tunedb      # tune + benchmark
    python benchmarks/ship_records.py --db /tmp/tunedb         # keep the best per kernel

Only records that were measured are copied (per kernel: the fastest, and the
untuned schedule's record, which ``build_cpu`` compares it with), and
the output folder is replaced as a whole, so the shipped set never mixes two
runs. For each kernel the script also says whether the search beat the
untuned schedule (the first record of each task, see
``edgekit.compiler.backends.llvm.tuning._measure_default``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

RECORD_FILE = "database_tuning_record.json"
WORKLOAD_FILE = "database_workload.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="database root given to benchmarks/cpu.py --db")
    parser.add_argument("--out", default=None, help="output folder (default: edgekit/tuning_records/<ISA class>)")
    parser.add_argument(
        "--models",
        default=None,
        help="ship only kernels of these benchmarks/cpu.py models (comma-separated; default: all of them), "
        "so records of kernels the current pipeline no longer produces are left out",
    )
    args = parser.parse_args(argv)

    import tvm
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from edgekit.compiler.backends.llvm import tuning
    from edgekit.compiler.backends.llvm.relax_build import default_schedule
    from edgekit.core.profiles import get_board

    target = tuning._with_num_cores(get_board("host")[1].tvm_target(), 1)
    isa = tuning.isa_class(target)
    if isa is None and args.out is None:
        print(f"this host ({target}) has no shipped-record class; pass --out", file=sys.stderr)
        return 2
    source = tuning.database_dir(target, args.db)
    if not (source / RECORD_FILE).is_file():
        print(f"no records in {source}", file=sys.stderr)
        return 2
    db = tuning.open_database(target, args.db, create=False)
    out = Path(args.out) if args.out else tuning.SHIPPED_RECORDS / isa
    staging = Path(tempfile.mkdtemp(prefix="edgekit-records-"))
    shipped = ms.database.JSONDatabase(
        path_workload=str(staging / WORKLOAD_FILE),
        path_tuning_record=str(staging / RECORD_FILE),
        allow_missing=True,
        module_equality="structural",
    )
    wanted = _current_workloads(args.models, target)
    rows = []
    seen: set[str] = set()
    for record in db.get_all_tuning_records():
        mod = record.workload.mod
        key = tvm.ir.save_json(mod)
        if key in seen or tvm_ffi.structural_hash(mod) not in wanted:
            continue
        seen.add(key)
        records = list(db.get_top_k(db.commit_workload(mod), 1 << 30))  # one Python object per record: `is` below
        best = records[0]
        if not best.run_secs:
            continue
        default = default_schedule(mod["main"], target)
        default_text = str(default.trace) if default is not None else None
        base = next((r for r in records if str(r.trace) == default_text), None)
        # The default schedule's record ships too: build_cpu takes the best
        # record only if it beat the default by TUNED_MARGIN.
        workload = shipped.commit_workload(mod)
        for keep in [best] + ([base] if base is not None and base is not best else []):
            shipped.commit_tuning_record(
                ms.database.TuningRecord(keep.trace, workload, keep.run_secs, keep.target, keep.args_info)
            )
        default_us = 1e6 * tuning.record_seconds(base) if base is not None else None
        rows.append((len(records), default_us, 1e6 * tuning.record_seconds(best), best is base))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in (WORKLOAD_FILE, RECORD_FILE):
        shutil.copy(staging / name, out / name)
    shutil.rmtree(staging)
    (out / "target.json").write_text(json.dumps({"measured_on": str(target), "isa_class": isa}, indent=1) + "\n")
    beat = sum(1 for r in rows if not r[3])
    print(f"{len(rows)} kernels shipped to {out}; the search beat the untuned schedule on {beat}")
    print("| records | untuned us | best us | best is |")
    print("|---:|---:|---:|---|")
    for n, default_us, best_us, is_default in sorted(rows, key=lambda r: -r[2]):
        d = f"{default_us:.1f}" if default_us is not None else "-"
        print(f"| {n} | {d} | {best_us:.1f} | {'untuned' if is_default else 'tuned'} |")
    return 0


def _current_workloads(models: str | None, target) -> set[int]:
    """Structural hashes of the tuning tasks of the benchmark models, as the pipeline makes them now."""
    import tvm_ffi

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cpu  # benchmarks/cpu.py: the model list

    from edgekit.compiler.backends.llvm import tuning
    from edgekit.compiler.backends.llvm.relax_build import import_onnx, prepare_cpu_module
    from edgekit.frontend.loader import load_model

    hashes: set[int] = set()
    for name in (models.split(",") if models else list(cpu.MODELS)):
        package, rel, shapes = cpu.MODELS[name]
        mod, _ = import_onnx(load_model(str(cpu.model_path(package, rel)), shapes))
        prepared, _ = prepare_cpu_module(mod, target)
        for task in tuning.extract_tasks(prepared, target):
            hashes.add(tvm_ffi.structural_hash(task.dispatched[0]))
    return hashes


if __name__ == "__main__":
    sys.exit(main())

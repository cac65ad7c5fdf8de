"""MetaSchedule tuning: persistent per-target database, resume without re-measuring."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

tvm = pytest.importorskip("tvm")
pytest.importorskip("xgboost")

from edgekit.compiler import tuning_db
from edgekit.compiler.backends.llvm import tuning
from edgekit.compiler.backends.llvm.relax_build import build_cpu, import_onnx, prepare_cpu_module
from edgekit.frontend.loader import load_model

from _host_cpu import host_target  # noqa: E402
from _tuning_models import one_conv_model  # noqa: E402


def _target():
    return host_target(**{"num-cores": 1})  # this CPU, less what it lacks (or EDGEKIT_TEST_HOST_FLAGS)


def _one_conv(tmp_path):
    path = tmp_path / "one_conv.onnx"
    onnx.save(one_conv_model(), str(path))
    return load_model(str(path))


def test_target_hash_ignores_thread_count_and_cache_env(monkeypatch, tmp_path):
    a = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
    b = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 8})
    c = tvm.target.Target({"kind": "llvm", "mcpu": "znver2"})
    assert tuning.target_hash(a) == tuning.target_hash(b) != tuning.target_hash(c)
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    assert tuning.database_dir(a) == tmp_path / "cache" / "tuning" / tuning.target_hash(a)
    monkeypatch.delenv("EDGEKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tuning.cache_root() == tmp_path / "xdg" / "edgekit"


def test_budget_split_never_exceeds_trials():
    class T:
        def __init__(self, w):
            self.weight = w
            self.dispatched = [None]

    tasks = [T(1), T(1), T(1)]
    for n in (0, 1, 2, 5, 100):
        assert sum(tuning._split_budget(tasks, n)) <= n


def test_tuning_persists_and_resumes_without_remeasuring(tmp_path, monkeypatch):
    target = _target()
    prepared = _one_conv(tmp_path)
    mod, params = import_onnx(prepared)
    fused, _ = prepare_cpu_module(mod, target)
    seen = []

    first = tuning.tune(fused, target, 2, db_root=tmp_path / "db", progress=seen.append, num_threads=1, seed=1)
    assert first.trials_measured == 2 and first.trials_reused == 0
    assert seen and seen[-1].trials_done == 2 and seen[-1].trials_total == 2
    folder = tmp_path / "db" / tuning.target_hash(target)
    records = (folder / "database_tuning_record.json").read_text().splitlines()
    assert len(records) == 2
    assert all(json.loads(r)[1][1][0] < 1e9 for r in records), "every trial built and ran"

    # Resume with a larger budget: the two measured trials are not repeated.
    second = tuning.tune(fused, target, 3, db_root=tmp_path / "db", num_threads=1, seed=2)
    assert second.trials_reused == 2 and second.trials_measured == 1
    assert len((folder / "database_tuning_record.json").read_text().splitlines()) == 3

    # Same budget again: nothing left to measure.
    third = tuning.tune(fused, target, 3, db_root=tmp_path / "db", num_threads=1)
    assert third.trials_measured == 0

    # The best record's trace replays onto the kernel and the numbers still
    # match. (Without a default schedule to compare with, apply_database takes
    # the best record unconditionally; the margin rule is tested below.)
    from edgekit.compiler.backends.llvm import relax_build

    monkeypatch.setattr(relax_build, "default_schedule", lambda func, target: None)
    db = tuning.open_database(target, tmp_path / "db")
    built = build_cpu(mod, target, params, database=db)
    assert built.tuned_kernels
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 8)).astype(np.float32)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x), *built.params).numpy()
    ort = pytest.importorskip("onnxruntime")
    want = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_untuned_schedule_is_the_first_record(tmp_path):
    # The first record of a task is its default (untuned) schedule, measured.
    # A kernel is taken from the database only if its best record beat that
    # default by TUNED_MARGIN; either way the output is the untuned build's.
    from edgekit.compiler.backends.llvm.relax_build import TUNED_MARGIN, default_schedule

    prepared = _one_conv(tmp_path)
    mod, params = import_onnx(prepared)
    target = _target()
    pmod, _ = prepare_cpu_module(mod, target)
    report = tuning.tune(pmod, target, 1, db_root=tmp_path / "db", num_threads=1, seed=0)
    assert report.trials_measured == 1
    (task,) = report.tasks
    assert task.best_us > 0
    db = tuning.open_database(target, tmp_path / "db")
    only_default = build_cpu(mod, target, params, database=db, use_shipped=False)
    assert only_default.tuned_kernels == []  # nothing beat the default: nothing taken

    report = tuning.tune(pmod, target, 6, db_root=tmp_path / "db", num_threads=1, seed=0)
    assert report.trials_measured == 5 and report.trials_reused == 1
    (task_mod,) = [t.dispatched[0] for t in tuning.extract_tasks(pmod, target)]
    records = db.get_top_k(db.commit_workload(task_mod), 100)
    default_text = str(default_schedule(task_mod["main"], target).trace)
    (base,) = [r for r in records if str(r.trace) == default_text]
    mean = lambda r: sum(float(x) for x in r.run_secs) / len(r.run_secs)  # noqa: E731
    should_take = mean(records[0]) < (1 - TUNED_MARGIN) * mean(base)
    tuned = build_cpu(mod, target, params, database=db, use_shipped=False)
    assert bool(tuned.tuned_kernels) == should_take
    untuned = build_cpu(mod, target, params, use_shipped=False)
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 8)).astype(np.float32)
    outs = []
    for built in (tuned, untuned):
        vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
        outs.append(vm["main"](tvm.runtime.tensor(x), *built.params).numpy())
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_shipped_record_set_is_found_by_isa_class(tmp_path, monkeypatch):
    # A record set under SHIPPED_RECORDS/<ISA class> is what build_cpu uses by
    # default on every CPU of that class (here the test host's own, measured
    # by tuning into a folder and copying it there as ship_records.py does).
    from edgekit.compiler.backends.llvm import relax_build

    target = _target()
    isa = tuning.isa_class(target)
    if isa is None:
        pytest.skip(f"host {target} has no shipped-record class")
    prepared = _one_conv(tmp_path)
    mod, params = import_onnx(prepared)
    pmod, _ = prepare_cpu_module(mod, target)
    tuning.tune(pmod, target, 2, db_root=tmp_path / "db", num_threads=1, seed=0)
    shipped = tmp_path / "shipped"
    (shipped / isa).mkdir(parents=True)
    for name in ("database_workload.json", "database_tuning_record.json"):
        (shipped / isa / name).write_bytes((tuning.database_dir(target, tmp_path / "db") / name).read_bytes())
    monkeypatch.setattr(tuning_db, "SHIPPED_RECORDS", shipped)
    assert tuning.shipped_database(target) is not None
    # Without a default schedule to compare with, the best record is taken.
    monkeypatch.setattr(relax_build, "default_schedule", lambda func, target: None)
    built = build_cpu(mod, target, params)  # use_shipped=True by default
    assert built.tuned_kernels
    assert build_cpu(mod, target, params, use_shipped=False).tuned_kernels == []

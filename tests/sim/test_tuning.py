"""MetaSchedule tuning: persistent per-target database, resume without re-measuring."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")
pytest.importorskip("xgboost")

from edgekit.compiler import tuning
from edgekit.compiler.cpu_pipeline import build_cpu, import_onnx, prepare_cpu_module
from edgekit.frontend.loader import load_model


def _target():
    from tvm.target import codegen

    return tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": 1})


def _one_conv(tmp_path):
    """A single small conv + bias + relu: one tuning task, fast to build and measure."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((16, 8, 3, 3)) * 0.3).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["out"])],
        "one_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16, 8, 8])],
        [w, b],
    )
    path = tmp_path / "one_conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
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


def test_tuning_persists_and_resumes_without_remeasuring(tmp_path):
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

    # build_cpu takes the tuned kernel from the database, and the numbers still match.
    db = tuning.open_database(target, tmp_path / "db")
    built = build_cpu(mod, target, params, database=db)
    assert built.tuned_kernels
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 8)).astype(np.float32)
    vm = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x), *built.params).numpy()
    ort = pytest.importorskip("onnxruntime")
    want = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()

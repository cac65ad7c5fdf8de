"""MetaSchedule tuning with a persistent, per-target database.

Tuning measures candidate schedules for each fused kernel (a MetaSchedule
*task*) of a model and keeps every measurement in a JSON database under the
user's cache directory, one per target::

    $EDGEKIT_CACHE/tuning/<target-hash>/            (if EDGEKIT_CACHE is set)
    $XDG_CACHE_HOME/edgekit/tuning/<target-hash>/   (else ~/.cache/edgekit/...)
        database_workload.json        one line per kernel (workload)
        database_tuning_record.json   one line per measured candidate
        target.json                   the target the hash stands for

A kernel is identified by its structure (``module_equality="structural"``), so
two models that share a convolution shape share its records. MetaSchedule
appends each record to the file as soon as it is measured, so an interrupted
run loses at most the batch in flight. Resuming never re-measures: for each
task the trials already in the database count against its share of the
budget, and only the remainder is searched (see :func:`tune`).

The tasks come from :func:`edgekit.compiler.backends.llvm.relax_build.prepare_cpu_module`,
so they are exactly the kernels :func:`~edgekit.compiler.backends.llvm.relax_build.build_cpu`
looks up when given the database. Where the database lives and how records
are read is :mod:`edgekit.compiler.tuning_db` (the build reads it too).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.compiler.tensor_intrin import use_cpu_tensor_intrinsics_only
from edgekit.compiler.tuning_db import (
    SHIPPED_RECORDS,
    X86_AVX2,
    count_records,
    database_dir,
    isa_class,
    open_database,
    record_seconds,
    shipped_database,
    target_hash,
)
from edgekit.core.cache import cache_root
from edgekit.core.errors import CompileError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = [
    "SHIPPED_RECORDS",
    "TaskInfo",
    "TuneProgress",
    "TuneReport",
    "X86_AVX2",
    "cache_root",
    "count_records",
    "database_dir",
    "extract_tasks",
    "isa_class",
    "open_database",
    "record_seconds",
    "shipped_database",
    "target_hash",
    "tune",
    "tune_model",
    "use_cpu_tensor_intrinsics_only",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- #
# Tasks
# --------------------------------------------------------------------------- #


@dataclass
class TaskInfo:
    """One tunable kernel.

    Attributes:
        name: Kernel name (e.g. ``fused_conv2d3_add2_relu2``).
        weight: How many times the model calls it.
        flops: Floating-point operations of one call (0 if unknown).
        measured: Records already in the database before this run.
        budget: Trials this run may spend on it (already measured ones included).
        best_us: Best measured run time in microseconds after tuning (0 = none).
    """

    name: str
    weight: int
    flops: float = 0.0
    measured: int = 0
    budget: int = 0
    best_us: float = 0.0


@dataclass
class TuneProgress:
    """Passed to the progress callback after each measured batch.

    Attributes:
        task: Name of the kernel being tuned.
        task_index: Its index in :attr:`TuneReport.tasks` (0-based).
        num_tasks: Number of tasks in the run.
        trials_done: Trials measured in this run so far (all tasks).
        trials_total: Trials this run will measure at most.
        elapsed_s: Seconds since the run started.
        eta_s: Estimated seconds left (None until a batch has been measured).
    """

    task: str
    task_index: int
    num_tasks: int
    trials_done: int
    trials_total: int
    elapsed_s: float
    eta_s: float | None


@dataclass
class TuneReport:
    """What :func:`tune` did.

    Attributes:
        database_dir: Folder of the database the records went to.
        target: The target as a string.
        tasks: Every task, in order of tuning.
        trials_requested: The budget asked for.
        trials_measured: Trials measured in this run.
        trials_reused: Trials found in the database and not repeated.
        seconds: Wall time of the run.
        measured_on: Where the trials ran: ``{"where": "local"}``, or for a
            board measured over TVM RPC ``{"where": "rpc", "tracker", "key",
            "servers", "server", "machine", "emulated", "server_qemu"}``
            (see :class:`edgekit.compiler.tuning_rpc.RemoteMeasurement`).
    """

    database_dir: str
    target: str
    tasks: list[TaskInfo] = field(default_factory=list)
    trials_requested: int = 0
    trials_measured: int = 0
    trials_reused: int = 0
    seconds: float = 0.0
    measured_on: dict[str, Any] = field(default_factory=lambda: {"where": "local"})

    def to_json(self) -> dict[str, Any]:
        """JSON form (``edgekit tune --json``)."""
        return {
            "database_dir": self.database_dir,
            "target": self.target,
            "trials_requested": self.trials_requested,
            "trials_measured": self.trials_measured,
            "trials_reused": self.trials_reused,
            "seconds": round(self.seconds, 3),
            "measured_on": dict(self.measured_on),
            "tasks": [vars(t) for t in self.tasks],
        }


def extract_tasks(mod: tvm.IRModule, target: tvm.target.Target) -> list[Any]:
    """MetaSchedule tasks of a prepared module (``prepare_cpu_module``'s output), largest first."""
    from tvm.s_tir import meta_schedule as ms

    with target:
        tasks = list(ms.relax_integration.extract_tasks(mod, target, module_equality="structural"))
    tasks = [t for t in tasks if _flops(t.dispatched[0]) > 0]
    tasks.sort(key=lambda t: -_flops(t.dispatched[0]) * t.weight)
    return tasks


def _flops(mod: tvm.IRModule) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(mod))
    except Exception:
        return 0.0


def _split_budget(tasks: Sequence[Any], trials: int) -> list[int]:
    """Trials per task: proportional to each task's share of the model's FLOPs.

    Every task gets at least a few trials (a cheap kernel can still be badly
    scheduled) and at most ``trials`` in total is spent.
    """
    if trials <= 0 or not tasks:
        return [0] * len(tasks)
    weights = [max(_flops(t.dispatched[0]) * t.weight, 1.0) for t in tasks]
    total = sum(weights)
    floor = min(4, max(1, trials // max(1, len(tasks))))
    budget = [max(floor, int(trials * w / total)) for w in weights]
    # Trim the largest shares until the total fits.
    while sum(budget) > trials and max(budget) > 1:
        i = budget.index(max(budget))
        budget[i] -= 1
    # A budget smaller than the number of tasks: the largest tasks get one each.
    if sum(budget) > trials:
        budget = [1 if i < trials else 0 for i in range(len(tasks))]
    return budget


# --------------------------------------------------------------------------- #
# Tuning
# --------------------------------------------------------------------------- #


def _progress_callback(on_batch: Callable[[int], None]) -> Any:
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class _Progress(PyMeasureCallback):
        def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any, builder_results: Any, runner_results: Any) -> None:
            on_batch(len(runner_results))

    return _Progress()


def _make_runner(runner: Any, timeout_s: float) -> Any:
    from tvm.s_tir import meta_schedule as ms

    if runner is not None:
        return runner
    # number/repeat small: a tuning trial ranks candidates, the benchmark measures.
    config = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=0, enable_cpu_cache_flush=False)
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=config)


def _measure_default(task: Any, target: tvm.target.Target, database: Any, builder: Any, runner: Any) -> bool:
    """Measures the untuned schedule of ``task`` and stores it as a record.

    The search then has to beat it: ``build_cpu`` takes the fastest record of
    each kernel, so a kernel is only replaced by a tuned one that measured
    faster, and tuning can never make a model slower than the untuned build
    (up to measurement noise). Returns False if there is no default schedule
    or it failed to build or run (the task is then tuned without one).
    """
    from tvm.s_tir import meta_schedule as ms

    from edgekit.compiler.backends.llvm.relax_build import default_schedule

    mod = task.dispatched[0]
    sch = default_schedule(mod["main"], target)
    if sch is None or sch.trace is None:
        return False
    (built,) = builder.build([ms.builder.BuilderInput(sch.mod, target)])
    if built.error_msg:
        logger.debug("default schedule of %s failed to build: %s", task.task_name, built.error_msg[:300])
        return False
    try:
        args_info = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
        (future,) = runner.run([ms.runner.RunnerInput(built.artifact_path, "cpu", args_info)])
        result = future.result()
    finally:
        Path(built.artifact_path).unlink(missing_ok=True)
    if result.error_msg or not result.run_secs:
        logger.debug("default schedule of %s failed to run: %s", task.task_name, (result.error_msg or "")[:300])
        return False
    workload = database.commit_workload(mod)
    secs = [float(x) for x in result.run_secs]
    database.commit_tuning_record(
        ms.database.TuningRecord(sch.trace, workload, secs, target, ms.arg_info.ArgInfo.from_prim_func(mod["main"]))
    )
    return True


def tune(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    trials: int,
    *,
    db_root: str | os.PathLike[str] | None = None,
    progress: Callable[[TuneProgress], None] | None = None,
    runner: Any | None = None,
    builder: Any | None = None,
    num_threads: int = 0,
    trials_per_iter: int = 16,
    timeout_s: float = 30.0,
    seed: int | None = None,
) -> TuneReport:
    """Tunes the kernels of a prepared module, resuming from the database.

    Args:
        mod: Output of :func:`~edgekit.compiler.backends.llvm.relax_build.prepare_cpu_module`
            (fused, unscheduled kernels).
        target: Target to tune for (also selects the database folder).
        trials: Trial budget for the whole model. It is split over the
            kernels by their share of the FLOPs; the records a kernel already
            has (from an interrupted run, or another model with the same
            kernel) count against its share and are not measured again.
        db_root: Folder of per-target databases (default: the user cache).
        progress: Called after every measured batch.
        runner: A MetaSchedule runner (default: measure on this machine;
            pass an ``ms.runner.RPCRunner`` to measure on a remote board).
        builder: A MetaSchedule builder (default: a ``LocalBuilder`` whose
            artifacts this machine's runner loads; see
            :func:`edgekit.compiler.tuning_rpc.rpc_measurement` for a board's).
        num_threads: Threads the measured kernels run with (0 = all cores).
        trials_per_iter: Candidates measured per search iteration (and per
            progress update).
        timeout_s: Limit for building or running one candidate.
        seed: Random seed of the search (None: random).

    Returns:
        A :class:`TuneReport`.

    Raises:
        ConfigError: for a negative trial count or an unusable database folder.
        CompileError: if MetaSchedule fails.
    """
    from tvm.s_tir import meta_schedule as ms

    from edgekit.compiler.backends.llvm.relax_build import set_num_threads

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 0:
        raise ConfigError(f"trials must be a non-negative integer, got {trials!r}", hint="Use e.g. --trials 200.")
    start = time.monotonic()
    threads = set_num_threads(num_threads)
    target = _with_num_cores(target, threads)
    database = open_database(target, db_root)
    folder = database_dir(target, db_root)
    report = TuneReport(database_dir=str(folder), target=str(target), trials_requested=trials)
    tasks = extract_tasks(mod, target)
    todo = _plan(tasks, _split_budget(tasks, trials), database, report)
    total = sum(n for _, _, n in todo)
    logger.info(
        "tuning %d kernels: %d trials to measure, %d already in %s", len(tasks), total, report.trials_reused, folder
    )
    measured = 0
    work_dir = _work_dir(folder)
    if builder is None:
        builder = ms.builder.LocalBuilder(
            max_workers=1, timeout_sec=timeout_s, initializer=use_cpu_tensor_intrinsics_only
        )
    run = _make_runner(runner, timeout_s)
    try:
        for index, task, remaining in todo:
            name = task.task_name
            if report.tasks[index].measured == 0 and _measure_default(task, target, database, builder, run):
                # The untuned schedule is this task's first trial.
                remaining -= 1
                measured += 1
                if remaining <= 0:
                    continue

            def on_batch(n: int, _name: str = name, _index: int = index) -> None:
                nonlocal measured
                measured += n
                if progress is not None:
                    elapsed = time.monotonic() - start
                    eta = elapsed / measured * max(0, total - measured) if measured else None
                    progress(TuneProgress(_name, _index, len(tasks), measured, total, elapsed, eta))

            _search(task, remaining, work_dir, builder=builder, runner=run, database=database,
                    num_threads=num_threads, trials_per_iter=trials_per_iter, seed=seed, on_batch=on_batch)  # fmt: skip
    except (KeyboardInterrupt, ConfigError):
        raise
    except Exception as exc:
        raise _tuning_error(exc) from exc
    report.trials_measured = measured
    for info, task in zip(report.tasks, tasks):
        info.best_us = _best_us(database, task.dispatched[0])
    report.seconds = time.monotonic() - start
    return report


def _plan(tasks: Sequence[Any], budgets: Sequence[int], database: Any, report: TuneReport) -> list[tuple[int, Any, int]]:
    """Records each task in ``report`` and returns ``(index, task, trials to measure)``
    for those whose database records fall short of their budget."""
    todo: list[tuple[int, Any, int]] = []
    for i, (task, budget) in enumerate(zip(tasks, budgets)):
        done = count_records(database, task.dispatched[0])
        info = TaskInfo(name=task.task_name, weight=int(task.weight), flops=_flops(task.dispatched[0]), measured=done, budget=budget)
        report.tasks.append(info)
        report.trials_reused += min(done, budget)
        if budget > done:
            todo.append((i, task, budget - done))
    return todo


def _work_dir(folder: Path) -> Path:
    """MetaSchedule's log folder under the database, with its logging quietened."""
    # MetaSchedule logs each batch to stdout at INFO (its console handler takes
    # this logger's level); keep stdout for edgekit's own output (--json) and
    # leave the details in the log files under <database>/logs.
    # MetaSchedule sets its logger to DEBUG during a run, so a second run in
    # the same process would print everything: set the level every time.
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    ms_logger.setLevel(logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.WARNING)
    work_dir = folder / "logs"
    work_dir.mkdir(parents=True, exist_ok=True)
    use_cpu_tensor_intrinsics_only()
    return work_dir


def _search(
    task: Any,
    remaining: int,
    work_dir: Path,
    *,
    builder: Any,
    runner: Any,
    database: Any,
    num_threads: int,
    trials_per_iter: int,
    seed: int | None,
    on_batch: Callable[[int], None],
) -> None:
    """Measures up to ``remaining`` candidates of one task (MetaSchedule's evolutionary search)."""
    from tvm.s_tir import meta_schedule as ms

    # A small budget does not need MetaSchedule's default population
    # of 512 candidates evolved 4 times (30 s per task here before the
    # first measurement); scale the search with the budget.
    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=int(min(512, max(32, 8 * remaining))),
        init_min_unmeasured=int(min(50, max(8, 2 * remaining))),
        genetic_num_iters=4 if remaining >= 64 else 1,
    )
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        [task],
        str(work_dir),
        strategy=strategy,
        num_threads=max(1, num_threads or (os.cpu_count() or 1)),
        seed=seed,
    )
    if not contexts:
        return
    callbacks = list(ms.measure_callback.MeasureCallback.create("default")) + [_progress_callback(on_batch)]
    ms.tune.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=str(work_dir),
        max_trials_global=remaining,
        max_trials_per_task=remaining,
        num_trials_per_iter=min(trials_per_iter, remaining),
        builder=builder,
        runner=runner,
        database=database,
        cost_model="xgb" if remaining >= 2 * trials_per_iter else "random",
        measure_callbacks=callbacks,
        task_scheduler="round-robin",
    )


def _tuning_error(exc: Exception) -> BaseException:
    """What to raise for an exception out of MetaSchedule."""
    if isinstance(exc.__context__, KeyboardInterrupt) or "KeyboardInterrupt" in str(exc):
        # Ctrl-C inside TVM arrives wrapped; the records so far are on disk.
        return KeyboardInterrupt()
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return CompileError(
        f"tuning failed ({type(exc).__name__}: {first})",
        hint="Re-run with --debug; measured records so far are kept and a re-run resumes from them.",
    )


def _with_num_cores(target: tvm.target.Target, threads: int) -> tvm.target.Target:
    """MetaSchedule's CPU rules need ``num-cores`` in the target (not part of the database hash)."""
    import tvm

    spec = json.loads(str(target))
    if "num-cores" in spec:
        return target
    spec["num-cores"] = int(threads)
    spec.pop("tag", None)
    return tvm.target.Target(spec)


def _best_us(database: Any, mod: tvm.IRModule) -> float:
    if not database.has_workload(mod):
        return 0.0
    top = database.get_top_k(database.commit_workload(mod), 1)
    if not top or not top[0].run_secs:
        return 0.0
    return 1e6 * record_seconds(top[0])


def tune_model(
    prepared: Any,
    board: Any,
    target: Any,
    trials: int,
    *,
    db_root: str | os.PathLike[str] | None = None,
    progress: Callable[[TuneProgress], None] | None = None,
    seed: int | None = None,
    tracker: str | tuple[str, int] | None = None,
    key: str | None = None,
) -> TuneReport:
    """Tunes a :class:`~edgekit.frontend.loader.PreparedModel` for a board (the ``edgekit tune`` API).

    ``compile --tune N`` calls this before building, then passes
    ``open_database(target, db_root)`` to :func:`~edgekit.compiler.backends.llvm.relax_build.build_cpu`.

    The host and simulated boards are measured on this machine. A board
    reached over the network is measured on the board through a TVM RPC
    tracker (see :mod:`edgekit.compiler.tuning_rpc`); its records go to the
    database of its own target, never the host's.

    Args:
        prepared: The loaded model.
        board: The :class:`~edgekit.core.profiles.Board`; its ``cores`` set the threads.
        target: The board's :class:`~edgekit.core.profiles.Target` (codegen ``llvm``).
        trials: Trial budget for the model.
        db_root: Folder of per-target databases (default: the user cache).
        progress: Called after every measured batch.
        seed: Search seed.
        tracker: ``HOST:PORT`` of a TVM RPC tracker to measure through
            (default: the profile's, for ``[transport] kind = "rpc"`` boards).
        key: Key the board's RPC servers are registered under (default: the
            profile's ``rpc_key``, else the board's name).

    Raises:
        ConfigError: if the target is not a CPU (LLVM) target, or a remote
            board has no tracker to measure through.
        TransportError: if the tracker does not answer.
        DeviceError: if no usable server is registered under the key.
    """
    from edgekit.compiler.backends.llvm.relax_build import import_onnx, prepare_cpu_module
    from edgekit.compiler.tuning_rpc import (
        needs_tracker_error,
        resolve_tracker,
        rpc_measurement,
    )

    if target.codegen != "llvm":
        raise ConfigError(
            f"tuning is available for CPU (llvm) targets; board '{board.name}' uses {target.codegen}",
            hint="Choose a CPU board (`edgekit boards`), e.g. --board host.",
        )
    remote = resolve_tracker(board, tracker, key)
    if remote is None and board.transport.kind not in ("local", "sim"):
        raise needs_tracker_error(board)
    runner = builder = None
    measured_on: dict[str, Any] = {"where": "local"}
    if remote is not None:
        # Before the (slow) import: an unreachable tracker fails in seconds.
        runner, builder, where = rpc_measurement(board, target, *remote)
        measured_on = where.to_json()
    tvm_target = target.tvm_target()
    mod, _params = import_onnx(prepared)
    prepared_mod, _ = prepare_cpu_module(mod, tvm_target, lift_params=True)
    report = tune(
        prepared_mod, tvm_target, trials, db_root=db_root, progress=progress, runner=runner, builder=builder,
        num_threads=board.cores, seed=seed,
    )
    report.measured_on = measured_on
    return report

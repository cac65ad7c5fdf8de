"""Measuring what each compression step buys on a board: every distinct
model is compiled, benchmarked (interleaved rounds on wall-clock boards, one
deterministic run on cycle-counting simulators) and evaluated, and the
measurements become a :class:`edgekit.compress.payoff.PayoffReport`.

This is the orchestration ``edgekit compress --board`` runs after the steps;
the report's data and verdicts live in :mod:`edgekit.compress.payoff`, which
neither compiles nor runs anything.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import onnx

from edgekit.api.compile import compile_model
from edgekit.package import open_package
from edgekit.compress.fallback import keep_in_float
from edgekit.compress.passes import CompressionStep, PipelineResult, model_stats, run_tensors
from edgekit.compress.payoff import (
    DEFAULT_MAX_EVAL,
    DEFAULT_ROUNDS,
    DEFAULT_RUNS_PER_ROUND,
    MIN_ROUND_MS,
    PackageMeasurement,
    PayoffPlan,
    PayoffReport,
    Progress,
    StagedResult,
    build_report,
    plan_payoff,
    quality,
    staged_models,
)
from edgekit.core.errors import ConfigError, EdgekitError
from edgekit.core.profiles import load_profiles
from edgekit.runtime.connection import NoConnectionError, connect
from edgekit.runtime.data import random_inputs, stack_outputs
from edgekit.runtime.runner import bench_package, open_runner, resolve_board, run_package

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+
    from typing_extensions import Unpack

__all__ = ["PayoffOptions", "measure_float_layers", "measure_payoff", "measure_payoffs"]

logger = logging.getLogger(__name__)

#: Loggers whose per-compile lines (kernels built, arena plan) belong to
#: ``edgekit compile``; the payoff's compiles keep them at warning level.
_BUILD_LOGGERS = ("edgekit.compiler", "edgekit.runtime", "edgekit.sim", "edgekit.npu")


@contextlib.contextmanager
def quiet_build_logs() -> Iterator[None]:
    """Raises the build loggers to WARNING for the block, unless edgekit
    logs at DEBUG (``--debug``)."""
    if logging.getLogger("edgekit").isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(n) for n in _BUILD_LOGGERS]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved):
            lg.setLevel(level)


class PayoffOptions(TypedDict, total=False):
    """The keywords :func:`measure_payoff` passes on to :func:`measure_payoffs`."""

    rounds: int
    runs: int
    eval_data: Mapping[str, np.ndarray] | None
    labels: np.ndarray | None
    max_eval: int
    eval_compiled: bool | None
    workdir: str | os.PathLike[str] | None
    board_dirs: Iterable[str | os.PathLike[str]]
    model_name: str
    progress: Progress | None


def measure_payoff(
    result: PipelineResult | Sequence[CompressionStep],
    board: str,
    *,
    models: Sequence[onnx.ModelProto] | None = None,
    **options: Unpack[PayoffOptions],
) -> PayoffReport:
    """Compiles the model before and after every step for ``board``,
    benchmarks the packages and fills ``latency_ms_before/after`` (and
    ``accuracy``, in percent, when labels are given) of each step.

    Example::

        staged = run_staged(model, recipe.steps, PassContext(calibration=cal))
        report = measure_payoff(staged, "rv32-mcu-sim", eval_data={"input": x}, labels=y)
        print(report.to_markdown())

    Args:
        result: A :class:`StagedResult` from
            :func:`edgekit.compress.payoff.run_staged` (it holds the
            intermediate models), or a :class:`PipelineResult` / list of
            chained steps together with ``models``.
        board: Board profile name (``host``, ``rv32-mcu-sim``...).
        models: ``[fp32, after step 1, ..., after step n]`` when ``result``
            does not hold them.
        **options: Any of the keywords below (:class:`PayoffOptions`).
        rounds: Interleaved timing rounds on wall-clock boards.
        runs: Timed runs per model per round (wall-clock boards); simulated
            boards run once, their cycle counts being deterministic.
        eval_data: Samples (one array per input, first axis = samples) for
            accuracy/fidelity; without them only size and latency are measured.
        labels: Class labels of ``eval_data`` for top-1 accuracy.
        max_eval: Evaluate at most this many samples.
        eval_compiled: Evaluate on the compiled model (``True``) or with
            onnxruntime on the packaged ONNX model (``False``); ``None``:
            compiled unless the board is simulated (a simulator runs a few
            inferences per second).
        workdir: Folder for the packages; a temporary one (deleted) if None.
        board_dirs: Extra folders of board/target profiles.
        model_name: Name used in titles.
        progress: ``progress(what, done, total)`` after every compile, run
            and timing round (see :data:`edgekit.compress.payoff.Progress`).

    Returns:
        The :class:`PayoffReport`.

    Raises:
        ConfigError: models missing or not matching the steps, bad arguments.
    """
    steps, staged = staged_models(result, models)
    return measure_payoffs({"": (steps, staged)}, board, **options)


def measure_payoffs(
    pipelines: Mapping[str, StagedResult | tuple[Sequence[CompressionStep], Sequence[onnx.ModelProto]]],
    board: str,
    *,
    rounds: int = DEFAULT_ROUNDS,
    runs: int = DEFAULT_RUNS_PER_ROUND,
    eval_data: Mapping[str, np.ndarray] | None = None,
    labels: np.ndarray | None = None,
    max_eval: int = DEFAULT_MAX_EVAL,
    eval_compiled: bool | None = None,
    workdir: str | os.PathLike[str] | None = None,
    board_dirs: Iterable[str | os.PathLike[str]] = (),
    model_name: str = "",
    progress: Progress | None = None,
) -> PayoffReport:
    """:func:`measure_payoff` for several pipelines that start from the same
    fp32 model (e.g. "structured 30 %", "unstructured 50 %", "int8" and a
    chained recipe), measured together: every distinct model is compiled
    once and all of them are timed in the same interleaved rounds, so every
    ratio in the table was measured side by side.

    Args:
        pipelines: Pipeline name -> :class:`StagedResult`, or ``(steps,
            models)``. All must start from the same fp32 model.
        board, rounds, runs, eval_data, labels, max_eval, eval_compiled,
            workdir, board_dirs, model_name, progress: As for
            :func:`measure_payoff`.

    Raises:
        ConfigError: no pipelines, pipelines from different fp32 models, or
            bad arguments.
    """
    plan = plan_payoff(pipelines)
    if rounds < 1 or runs < 1 or max_eval < 1:
        raise ConfigError(
            f"rounds, runs and max_eval must be >= 1 (got {rounds}, {runs}, {max_eval})", hint="E.g. rounds=15, runs=5."
        )
    if labels is not None and eval_data is None:
        raise ConfigError("labels were given without eval_data", hint="Pass the samples the labels belong to.")
    brd = load_profiles(board_dirs).board(board)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgekit-payoff-")))
        else:
            folder = Path(workdir)
            folder.mkdir(parents=True, exist_ok=True)
        tick = _Ticker(progress, 2 * len(plan.models) + (eval_data is not None) + rounds)
        measured = _measure(plan, brd, folder, board_dirs, tick, rounds, runs)
        ran = [m for m in measured.values() if not m.error and not m.bench_error]
        simulated = any(m.simulated for m in ran)
        emulated = simulated and all(m.cycles is None for m in ran)
        if eval_data is not None:
            tick("evaluating", "")
            ok = [k for k, m in measured.items() if not m.error and not m.bench_error]
            paths = {k: folder / f"{k[:16]}.ekpkg" for k in plan.models}
            _evaluate(ok, plan.models, paths, measured, plan.models[plan.fp32_key], brd.name, board_dirs, eval_data,
                      labels, max_eval, (not simulated) if eval_compiled is None else eval_compiled)  # fmt: skip
        tick("done")
    return build_report(plan, measured, brd.name, simulated=simulated, clock_hz=brd.clock_hz, rounds=rounds, runs=runs,
                        model_name=model_name, emulated=emulated)  # fmt: skip


def _measure(plan: PayoffPlan, brd: Any, folder: Path, board_dirs: Iterable[Any], tick: "_Ticker", rounds: int,
             runs: int) -> dict[str, PackageMeasurement]:  # fmt: skip
    """Compiles every model of ``plan`` into ``folder`` and measures it on ``brd``."""
    measured: dict[str, PackageMeasurement] = {}
    for k, m in plan.models.items():
        tick("compiling", f" {len(measured) + 1}/{len(plan.models)}")
        measured[k] = _compile(k, m, brd, folder, board_dirs)
    paths = {k: folder / f"{k[:16]}.ekpkg" for k in plan.models}
    ok = [k for k in plan.models if not measured[k].error]
    try:
        # Decided once: a board with no port configured is measured on its
        # simulator (the timing line says so), with one notice, not one per package.
        sim = True if connect(brd).simulated else None
    except NoConnectionError as exc:
        # No port and no simulator: each package keeps its sizes and says why
        # it was not run, as a package that cannot run here does.
        logger.warning("the models are not run on %s: %s", brd.name, exc.message)
        for k in ok:
            measured[k].bench_error = f"not run: {exc.message[:160]}"
        tick.total -= len(ok)
        ok, sim = [], None
    _bench(ok, paths, measured, brd.name, board_dirs, tick, sim)
    ok = [k for k in ok if not measured[k].bench_error]
    simulated = any(measured[k].simulated for k in ok)
    if not ok or simulated:
        tick.total -= rounds
    if ok and not simulated:
        _interleave(ok, paths, measured, brd.name, board_dirs, rounds, runs, tick)
    return measured


def _compile(key: str, model: onnx.ModelProto, brd: Any, folder: Path, board_dirs: Iterable[Any]) -> PackageMeasurement:
    from edgekit.compiler.backends.llvm.int8_choice import Int8Choice

    m = PackageMeasurement(key=key, stats=model_stats(model))
    try:
        compiled = compile_model(model, brd.name, folder / f"{key[:16]}.ekpkg", board_dirs=board_dirs)
    except EdgekitError as exc:
        # A step whose result does not compile or fit is a finding for the
        # report, not a reason to lose the other rows.
        m.error = f"{type(exc).__name__}: {exc.message[:160]}"
        logger.warning("model %s does not compile for %s: %s", key[:12], brd.name, m.error)
        return m
    m.package_bytes = compiled.package_bytes
    m.memory = dict(compiled.manifest.memory or {})
    m.compile_seconds = compiled.compile_seconds
    choice = Int8Choice.of(compiled.manifest)  # the CPU backend's precision choice, where it made one
    m.int8_choice = choice.in_words() if choice is not None else ""
    flash = brd.memory.flash_bytes
    image = m.memory.get("weight_bytes", 0) + m.memory.get("code_bytes", 0)
    if flash and image > flash:
        m.error = f"does not fit: {image} bytes of weights + code > {flash} bytes of flash"
    return m


class _Ticker:
    """Counts progress units for a :data:`Progress` callback."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, what: str, detail: str = "") -> None:
        """Reports the previous unit done and ``what`` (``detail``) running now."""
        if self.progress is not None:
            self.progress(what + detail, self.done, self.total)
        self.done = min(self.done + 1, self.total)


def _bench(keys: Sequence[str], paths: Mapping[str, Path], measured: dict[str, PackageMeasurement],
           board: str, board_dirs: Iterable[Any], tick: _Ticker, sim: bool | None = None) -> None:  # fmt: skip
    """One bench_package per package: the compiled-vs-onnxruntime check, and
    on simulated boards the (deterministic) measurement itself. A package
    that cannot run here (no device and no simulator for the board) keeps
    its sizes and gets a ``bench_error``."""
    for i, k in enumerate(keys):
        tick("running", f" {i + 1}/{len(keys)}")
        m = measured[k]
        try:
            report = bench_package(paths[k], board=board, runs=1, warmup=0, compare_ort=True, sim=sim,
                                   board_dirs=board_dirs)  # fmt: skip
        except EdgekitError as exc:
            m.bench_error = f"not run: {exc.message[:160]}"
            logger.warning("model %s does not run on %s: %s", k[:12], board, exc.message)
            continue
        m.simulated = bool(report["simulated"])
        if "cycles" in report:
            m.cycles = float(report["cycles"]["p50"])
        if not m.simulated or m.cycles is not None:
            # An emulator that counts no cycles (qemu-user for the Linux
            # boards) gives its wall clock on this machine: not the board's
            # latency, so no latency and no speed-up (raspberry-pi-4: int8
            # read "2.14x slower" under a "cycles" heading before).
            m.latency_ms = float(report["latency_ms"]["p50"])
        m.ort_max_rel_error = report.get("ort_max_rel_error", {}).get("max")


def _interleave(keys: Sequence[str], paths: Mapping[str, Path], measured: dict[str, PackageMeasurement],
                board: str, board_dirs: Iterable[Any], rounds: int, runs: int, tick: _Ticker) -> None:  # fmt: skip
    """Times all packages in interleaved rounds, rotating the order each
    round so no model always runs first (caches, frequency ramps)."""
    runners = {}
    try:
        for k in keys:
            package = open_package(paths[k], board=board)
            runners[k] = (open_runner(package, resolve_board(package, board, board_dirs)),
                          random_inputs(package.inputs, 0))  # fmt: skip
        count: dict[str, int] = {}
        for k in keys:
            runner, feeds = runners[k]
            probe = float(np.median(runner.time_runs(feeds, 3, 1).latency_ms))
            count[k] = max(runs, math.ceil(MIN_ROUND_MS / max(probe, 1e-3)))
        samples: dict[str, list[float]] = {k: [] for k in keys}
        for r in range(rounds):
            tick("timing", f" round {r + 1}/{rounds}")
            order = list(keys[r % len(keys):]) + list(keys[: r % len(keys)])
            for k in order:
                runner, feeds = runners[k]
                timing = runner.time_runs(feeds, count[k], 1)
                measured[k].round_ms.append(float(np.median(timing.latency_ms)))
                samples[k] += timing.latency_ms
        for k in keys:
            measured[k].latency_ms = float(np.median(samples[k]))
    finally:
        for runner, _ in runners.values():
            runner.close()


def _evaluate(keys: Sequence[str], models: Mapping[str, onnx.ModelProto], paths: Mapping[str, Path],
              measured: dict[str, PackageMeasurement], fp32: onnx.ModelProto, board: str, board_dirs: Iterable[Any],
              eval_data: Mapping[str, np.ndarray], labels: np.ndarray | None, max_eval: int,
              compiled: bool) -> None:  # fmt: skip
    data = {k: np.asarray(v)[:max_eval] for k, v in eval_data.items()}
    first = fp32.graph.output[0].name
    reference = run_tensors(fp32, data)
    n = len(next(iter(reference.values())))
    ref = reference[first][:n]
    for k in keys:
        if compiled:
            results, samples, _ = run_package(paths[k], data, board=board, board_dirs=board_dirs)
            outputs = stack_outputs(results, mode=samples.mode)
            out = np.asarray(outputs[first]).reshape(ref.shape[0], *ref.shape[1:]) if first in outputs else None
        else:
            out = _ort_as_written(models[k], data, first)
        if out is None:
            continue
        measured[k].eval = quality(ref, out[: len(ref)], None if labels is None else np.asarray(labels)[: len(ref)])
        measured[k].eval["source"] = "compiled" if compiled else "onnxruntime"


def _ort_as_written(model: onnx.ModelProto, data: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """``name`` for every sample, from onnxruntime with graph optimizations
    off: its default level fuses QDQ chains into its own int8 kernels, whose
    rounding differs from the QDQ graph (docs/quantization.md) — the graph as
    written is what the board's integer lowering implements."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    dims = model.graph.input[0].type.tensor_type.shape.dim
    step = int(dims[0].dim_value) if len(dims) and dims[0].dim_value > 0 else 1
    n = len(next(iter(data.values())))
    outs = [session.run([name], {k: np.asarray(v[i : i + step]) for k, v in data.items()})[0]
            for i in range(0, n - step + 1, step)]  # fmt: skip
    return np.concatenate(outs, axis=0)


# --------------------------------------------------------------------------- #
# What each layer kept in float costs on the board
# --------------------------------------------------------------------------- #


def measure_float_layers(
    int8_model: onnx.ModelProto,
    reference: onnx.ModelProto,
    layers: Sequence[str],
    board: str,
    *,
    rounds: int = DEFAULT_ROUNDS,
    runs: int = DEFAULT_RUNS_PER_ROUND,
    board_dirs: Iterable[str | os.PathLike[str]] = (),
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """What keeping each of ``layers`` in float costs on ``board``.

    The model accuracy control returned (``layers`` in float) and, per layer,
    the same model with that one layer back in int8 are compiled and measured
    side by side (:func:`measure_payoffs`); a layer's cost is the difference.

    Args:
        int8_model: The QDQ model before accuracy control.
        reference: The fp32 model the float layers take their weights from.
        layers: The nodes kept in float.
        board, rounds, runs, board_dirs, progress: As for :func:`measure_payoff`.

    Returns:
        Node name -> ``board``, ``simulated``, ``latency_ms`` and ``cycles``
        (float minus int8: what the float layer costs; ``None`` when not
        measured), ``speedup_if_int8`` with its ``speedup_band``,
        ``arena_bytes`` and ``flash_bytes`` (float minus int8), ``error``.
    """
    if not layers:
        return {}
    final = keep_in_float(int8_model, reference, layers)
    final_stats = model_stats(final)
    pipelines: dict[str, tuple[Sequence[CompressionStep], Sequence[onnx.ModelProto]]] = {}
    for layer in layers:
        variant = keep_in_float(int8_model, reference, [x for x in layers if x != layer])
        step = CompressionStep(f"{layer} in int8", {"node": layer}, True, final_stats, model_stats(variant), 0.0)
        pipelines[layer] = ([step], [final, variant])
    report = measure_payoffs(pipelines, board, rounds=rounds, runs=runs, board_dirs=board_dirs, progress=progress)

    def diff(a: float | int | None, b: float | int | None) -> float | None:
        return None if a is None or b is None else float(a) - float(b)

    costs = {}
    for layer in layers:
        row = report.row(f"{layer} in int8", layer)
        kept, back = row.before, row.after
        costs[layer] = {
            "board": report.board,
            "simulated": report.simulated,
            "latency_ms": diff(kept.latency_ms, back.latency_ms),
            "cycles": diff(kept.cycles, back.cycles),
            "speedup_if_int8": row.speedup,
            "speedup_band": list(row.speedup_band) if row.speedup_band else None,
            "arena_bytes": diff(kept.arena_bytes, back.arena_bytes),
            "flash_bytes": diff(kept.flash_bytes, back.flash_bytes),
            "error": kept.error or kept.bench_error or back.error or back.bench_error,
        }
    return costs

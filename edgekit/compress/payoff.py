""""What paid off": the data and the analysis of what each compression step
bought on a board — compiled size, latency and accuracy.

A compression that looks good on paper often buys nothing on the board: 50 %
unstructured sparsity leaves a dense kernel exactly as slow, and a low-rank
split of a small layer adds a kernel. This module keeps every intermediate
model of a pipeline (:func:`run_staged`), plans which distinct models to
measure (:func:`plan_payoff`) and turns the measurements into a
:class:`PayoffReport` (:func:`build_report`) with, per step:

* params, MACs and dense weight bytes (from the :class:`CompressionStep`);
* package bytes, the weights and code the package holds, and the activation
  arena, as the compiler wrote them into the manifest;
* latency on the board. On a board measured in wall-clock time (``host``,
  Linux boards), the packages are timed in *interleaved rounds* — every round
  times every model once, in rotated order — so that a slow spell of a shared
  machine hits before and after alike; the speed-up of a step is the median
  of the per-round ratios, and the spread of those ratios is the noise band
  that decides whether the report says "faster", "slower" or "no measurable
  change". On a simulated MCU (``rv32-mcu-sim``) the cycle count is
  deterministic: one run each, latency at the board clock;
* accuracy (top-1, with labels) or fidelity (top-1 agreement and SQNR of the
  outputs against the fp32 model), plus the compiled model's own agreement
  with its ONNX model on the benchmark input.

Compiling and measuring (compiler and runtime) is the API's job:
:func:`edgekit.api.payoff.measure_payoff` and
:func:`edgekit.api.payoff.measure_payoffs`. A model that does not compile or
does not fit the board gets a row that says so instead of numbers.

Example::

    from edgekit.api.payoff import measure_payoff
    from edgekit.compress.payoff import run_staged
    staged = run_staged(model, recipe.steps, PassContext(calibration=cal))
    report = measure_payoff(staged, "host", eval_data={"input": x}, labels=y)
    print(report.to_markdown())
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx

from edgekit.compress.passes import (
    CompressionPass,
    CompressionStep,
    ModelStats,
    PassContext,
    PassResult,
    PipelineResult,
    model_stats,
    run_pipeline,
)
from edgekit.core.errors import ConfigError

__all__ = [
    "PackageMeasurement",
    "Progress",
    "PayoffPlan",
    "PayoffReport",
    "PayoffRow",
    "StagedResult",
    "build_report",
    "plan_payoff",
    "quality",
    "run_staged",
    "staged_models",
]

logger = logging.getLogger(__name__)

#: Default interleaved rounds on wall-clock boards, and timed runs per round.
DEFAULT_ROUNDS = 15
DEFAULT_RUNS_PER_ROUND = 5

#: Each model's share of a round lasts at least this long: for a 20 µs model,
#: 5 runs mostly measure the switch from the previous model (caches), not it.
MIN_ROUND_MS = 20.0

#: Samples evaluated per model when ``max_eval`` is not given.
DEFAULT_MAX_EVAL = 256

#: A step is reported as making a model bigger when its arena or its stored
#: weights + code grow by more than this fraction (compiles are
#: deterministic, so any growth is real; this only hides rounding).
SIZE_TOLERANCE = 0.01

#: ``progress(what, done, total)``: ``done`` of ``total`` units of the
#: measurement are finished; ``what`` says which phase runs now.
Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- #
# Keeping the intermediate models of a pipeline
# --------------------------------------------------------------------------- #


@dataclass
class StagedResult(PipelineResult):
    """A :class:`PipelineResult` that also keeps the model before and after
    every step: ``models[0]`` is the fp32 model, ``models[i + 1]`` the model
    after ``steps[i]``."""

    models: list[onnx.ModelProto] = field(default_factory=list)


class _Recording(CompressionPass):
    """Delegates to a pass and keeps the model it returns."""

    def __init__(self, inner: CompressionPass, sink: list[onnx.ModelProto], progress: Progress | None = None,
                 index: int = 0, count: int = 1) -> None:  # fmt: skip
        self.inner = inner
        self.sink = sink
        self.name = inner.name
        self._progress = progress
        self._index, self._count = index, count

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        if self._progress is not None:
            self._progress(self.name, self._index, self._count)
        result = self.inner.run(model, ctx)
        self.sink.append(result.model)
        return result


def run_staged(
    model: onnx.ModelProto,
    passes: Iterable[CompressionPass],
    ctx: PassContext | None = None,
    *,
    fidelity: bool = True,
    progress: Progress | None = None,
) -> StagedResult:
    """:func:`edgekit.compress.passes.run_pipeline`, keeping every
    intermediate model so :func:`edgekit.api.payoff.measure_payoff` can
    compile each one.

    ``progress(step name, steps done, steps)`` is called before each step."""
    passes = list(passes)
    models: list[onnx.ModelProto] = [model]
    recorded = [_Recording(p, models, progress, i, len(passes)) for i, p in enumerate(passes)]
    result = run_pipeline(model, recorded, ctx, fidelity=fidelity)
    return StagedResult(model=result.model, steps=result.steps, models=models)


# --------------------------------------------------------------------------- #
# Report data
# --------------------------------------------------------------------------- #


@dataclass
class PackageMeasurement:
    """One compiled model on the board.

    Attributes:
        key: SHA-256 of the serialized ONNX model.
        stats: Params, MACs and dense weight bytes of the ONNX model.
        error: Why there are no numbers (compile failed, does not fit), or "".
        package_bytes: Size of the ``.ekpkg`` file.
        memory: The manifest's ``memory`` (``arena_bytes``, ``weight_bytes``,
            ``code_bytes``...).
        compile_seconds: Compile time.
        latency_ms: Median latency over all timed runs.
        cycles: Median cycle count, on boards that count cycles.
        simulated: Whether a simulator ran it.
        round_ms: Median latency of each interleaved round (wall-clock boards).
        ort_max_rel_error: Largest relative difference between the compiled
            model's outputs and onnxruntime's on the same ONNX model (benchmark
            input); ``None`` when not compared or NaN.
        eval: ``top1_pct`` (with labels), ``agreement_pct`` and ``sqnr_db``
            against the fp32 model, ``samples`` and ``source`` (``compiled`` or
            ``onnxruntime``).
        bench_error: Why the package compiled but could not be run (no
            simulator or device for the board), or "": sizes are known,
            latency is not.
        int8_choice: What the compiler's int8/fp32 choice kept in fp32 (the
            manifest's ``int8_choice``, in words), or "".
    """

    key: str
    stats: ModelStats
    error: str = ""
    package_bytes: int = 0
    memory: dict[str, int] = field(default_factory=dict)
    compile_seconds: float = 0.0
    latency_ms: float | None = None
    cycles: float | None = None
    simulated: bool = False
    round_ms: list[float] = field(default_factory=list)
    ort_max_rel_error: float | None = None
    eval: dict[str, Any] = field(default_factory=dict)
    bench_error: str = ""
    int8_choice: str = ""

    @property
    def flash_bytes(self) -> int | None:
        """What the board stores: weights + code (flash on an MCU, the shared
        library on a Linux board); ``None`` when the model did not compile."""
        if self.error and not self.memory:
            return None
        return int(self.memory.get("weight_bytes", 0)) + int(self.memory.get("code_bytes", 0))

    @property
    def arena_bytes(self) -> int | None:
        """Activation arena of the compiled model, ``None`` when unknown."""
        return int(self.memory["arena_bytes"]) if "arena_bytes" in self.memory else None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "stats": self.stats.to_json(),
            "error": self.error,
            "bench_error": self.bench_error,
            "package_bytes": self.package_bytes,
            "memory": self.memory,
            "compile_seconds": self.compile_seconds,
            "latency_ms": self.latency_ms,
            "cycles": self.cycles,
            "simulated": self.simulated,
            "round_ms": [round(v, 5) for v in self.round_ms],
            "ort_max_rel_error": self.ort_max_rel_error,
            "eval": self.eval,
            "int8_choice": self.int8_choice,
        }


@dataclass
class PayoffRow:
    """One line of the report: the fp32 model, a step, or a whole chain.

    Attributes:
        label: ``fp32``, the step type, or ``chain``.
        pipeline: Name of the pipeline the row belongs to ("" for fp32).
        step: The step record (``None`` for the fp32 row); its
            ``latency_ms_before``/``after`` are filled in.
        before: Measurement of the model the step received.
        after: Measurement of the model after the step (the fp32 model for
            the fp32 row).
        speedup: ``latency(before) / latency(after)``: the median of the
            per-round ratios on wall-clock boards, the cycle ratio on
            simulated ones.
        speedup_band: (low, high) quartiles of the per-round ratios; equal to
            ``speedup`` when the measurement is deterministic.
        speedup_vs_fp32: Same as ``speedup`` but against the fp32 model.
        verdict: What the step bought on the board, in words.
    """

    label: str
    pipeline: str
    step: CompressionStep | None
    before: PackageMeasurement
    after: PackageMeasurement
    speedup: float | None = None
    speedup_band: tuple[float, float] | None = None
    speedup_vs_fp32: float | None = None
    verdict: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "label": self.label,
            "pipeline": self.pipeline,
            "step": self.step.to_json() if self.step is not None else None,
            "before": self.before.key,
            "after": self.after.key,
            "speedup": self.speedup,
            "speedup_band": list(self.speedup_band) if self.speedup_band else None,
            "speedup_vs_fp32": self.speedup_vs_fp32,
            "verdict": self.verdict,
        }


@dataclass
class PayoffReport:
    """What each compression step bought on one board.

    Attributes:
        board: Board name.
        simulated: Whether latencies come from a simulator.
        timing: How latency was measured, in words.
        rows: fp32 first, then the steps (and chains) of each pipeline.
        packages: Measurements by model key.
        model_name: Name for titles.
    """

    board: str
    simulated: bool
    timing: str
    rows: list[PayoffRow]
    packages: dict[str, PackageMeasurement]
    model_name: str = ""

    def row(self, label: str, pipeline: str | None = None) -> PayoffRow:
        """The first row with this label (and pipeline, when given).

        Raises:
            KeyError: no such row.
        """
        for r in self.rows:
            if r.label == label and (pipeline is None or r.pipeline == pipeline):
                return r
        raise KeyError(f"no row {label!r} (pipeline {pipeline!r}); rows: {[(r.pipeline, r.label) for r in self.rows]}")

    def summary(self) -> list[dict[str, Any]]:
        """One entry per row, step by step against the fp32 model: latency
        (and cycles), arena and stored bytes of the compiled model, and their
        ratios to the model before the step and to fp32."""
        fp32 = self.rows[0].after if self.rows else None
        out = []
        for r in self.rows:
            m = r.after
            entry: dict[str, Any] = {
                "step": r.label,
                "pipeline": r.pipeline,
                "error": m.error or m.bench_error,
                "latency_ms": m.latency_ms,
                "cycles": m.cycles,
                "arena_bytes": m.arena_bytes,
                "flash_bytes": m.flash_bytes,
                "weight_bytes": m.memory.get("weight_bytes"),
                "code_bytes": m.memory.get("code_bytes"),
                "speedup": r.speedup,
                "speedup_vs_fp32": r.speedup_vs_fp32,
                "arena_vs_fp32": _size_ratio(fp32.arena_bytes if fp32 else None, m.arena_bytes),
                "flash_vs_fp32": _size_ratio(fp32.flash_bytes if fp32 else None, m.flash_bytes),
                "verdict": r.verdict,
            }
            out.append(entry)
        return out

    def warnings(self) -> list[str]:
        """A sentence for every step that makes the model measurably slower,
        grows its arena or its stored weights + code, or stops it compiling
        — and for the whole chain against fp32 when there are several steps."""
        found: list[str] = []
        steps = [r for r in self.rows if r.step is not None and r.label != "chain"]
        for r in self.rows:
            if r.step is None or not r.step.modified or (r.label == "chain" and len(steps) < 2):
                continue
            what = f"the {r.pipeline + ' ' if r.pipeline and r.pipeline != r.label else ''}{r.label} step"
            if r.label == "chain":
                what = "the compressed model (all steps)"
            before, after = r.before, r.after
            if after.error and not before.error:
                found.append(f"{what} leaves a model that fails on {self.board}: {after.error}")
                continue
            if _latency_trend(r.speedup, r.speedup_band) == "slower" and r.speedup:
                unit = (f"{_count(int(before.cycles))} -> {_count(int(after.cycles))} cycles"
                        if before.cycles is not None and after.cycles is not None else
                        f"{before.latency_ms:.3g} -> {after.latency_ms:.3g} ms")  # fmt: skip
                found.append(f"{what} makes the model {1 / r.speedup:.2f}x slower on {self.board} ({unit})")
            grown = _grown(before.arena_bytes, after.arena_bytes)
            if grown:
                found.append(f"{what} grows the activation arena on {self.board}: {grown}")
            grown = _grown(before.flash_bytes, after.flash_bytes)
            if grown:
                code = int(after.memory.get("code_bytes", 0)) - int(before.memory.get("code_bytes", 0))
                weights = int(after.memory.get("weight_bytes", 0)) - int(before.memory.get("weight_bytes", 0))
                why = f" (weights {_signed_kib(weights)}, code {_signed_kib(code)})" if code and weights else ""
                found.append(f"{what} makes the stored weights + code bigger on {self.board}: {grown}{why}")
        return found

    def to_json(self) -> dict[str, Any]:
        """JSON form (``rows``, ``packages``, the per-step ``summary`` and
        ``warnings``)."""
        return {
            "board": self.board,
            "model": self.model_name,
            "simulated": self.simulated,
            "timing": self.timing,
            "rows": [r.to_json() for r in self.rows],
            "packages": {k: m.to_json() for k, m in self.packages.items()},
            "summary": self.summary(),
            "warnings": self.warnings(),
        }

    def to_markdown(self, *, title: bool = True) -> str:
        """A Markdown table: one line per row, numbers of the compiled model."""
        fp32 = self.rows[0].after if self.rows else None
        has_labels = any("top1_pct" in m.eval for m in self.packages.values())
        quality = "top-1" if has_labels else "top-1 agree / SQNR"
        lat = "cycles (latency)" if any(m.cycles is not None for m in self.packages.values()) else "latency p50"
        lines = []
        if title:
            lines.append(f"**{self.model_name or 'model'} on `{self.board}`** — {self.timing}")
            lines.append("")
        lines.append(f"| step | params | MACs | weights | package | arena | {lat} | speed-up | {quality} | verdict |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in self.rows:
            m = r.after
            name = r.label if not r.pipeline or r.pipeline == r.label else f"{r.pipeline}: {r.label}"
            params = _count(m.stats.params) + _delta(m.stats.params, fp32.stats.params if fp32 else 0, r)
            macs = _count(m.stats.macs) + _delta(m.stats.macs, fp32.stats.macs if fp32 else 0, r)
            if m.error:
                lines.append(f"| {name} | {params} | {macs} | {_kib(m.stats.weight_bytes)} | – | – | – | – | – | {m.error} |")
                continue
            weights = _kib(int(m.memory.get("weight_bytes", m.stats.weight_bytes)))
            latency = "–"
            if m.latency_ms is not None:
                latency = f"{m.latency_ms:.3g} ms"
                if m.cycles is not None:
                    latency = f"{m.cycles / 1e6:.3g} M ({m.latency_ms:.3g} ms)"
            speed = "–"
            if r.speedup is not None:
                speed = f"{r.speedup:.2f}×"
                if r.speedup_band and r.speedup_band[0] != r.speedup_band[1]:
                    speed += f" [{r.speedup_band[0]:.2f}–{r.speedup_band[1]:.2f}]"
            ev = m.eval
            if "top1_pct" in ev:
                qual = f"{ev['top1_pct']:.2f} %"
            elif "agreement_pct" in ev:
                sq = ev.get("sqnr_db")
                qual = f"{ev['agreement_pct']:.1f} % / " + ("exact" if sq is None else f"{sq:.1f} dB")
            else:
                qual = "–"
            lines.append(
                f"| {name} | {params} | {macs} | {weights} | {_kib(m.package_bytes)} | "
                f"{_kib(int(m.memory.get('arena_bytes', 0)))} | {latency} | {speed} | {qual} | {r.verdict} |"
            )
        return "\n".join(lines) + "\n"


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.3g} M"
    if n >= 1_000:
        return f"{n / 1e3:.3g} k"
    return str(n)


def _delta(value: int, fp32: int, row: PayoffRow) -> str:
    if row.step is None or not fp32 or value == fp32:
        return ""
    return f" ({100.0 * (value - fp32) / fp32:+.0f} %)"


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def _signed_kib(n: int) -> str:
    return ("+" if n > 0 else "-") + _kib(abs(n))


def _size_ratio(fp32: int | None, value: int | None) -> float | None:
    return None if not fp32 or value is None else value / fp32


def _grown(before: int | None, after: int | None) -> str:
    """``"a -> b (+x %)"`` when ``after`` is more than :data:`SIZE_TOLERANCE` above ``before``."""
    if not before or after is None or after <= before * (1.0 + SIZE_TOLERANCE):
        return ""
    return f"{_kib(before)} -> {_kib(after)} ({100.0 * (after / before - 1.0):+.0f} %)"


def _latency_trend(speedup: float | None, band: tuple[float, float] | None) -> str:
    """``faster``, ``slower``, ``same`` (within noise) or ``""`` (not measured).

    A deterministic (cycle-count) ratio counts from 1 %; a wall-clock one
    needs 3 % and its whole quartile band on the same side of 1."""
    if speedup is None or band is None:
        return ""
    low, high = band
    deterministic = low == high
    if (deterministic or low > 1.0) and speedup >= 1.01 + 0.02 * (not deterministic):
        return "faster"
    if (deterministic or high < 1.0) and speedup <= 0.99 - 0.02 * (not deterministic):
        return "slower"
    return "same"


# --------------------------------------------------------------------------- #
# Measuring
# --------------------------------------------------------------------------- #


def _key(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def staged_models(
    result: PipelineResult | Sequence[CompressionStep], models: Sequence[onnx.ModelProto] | None
) -> tuple[list[CompressionStep], list[onnx.ModelProto]]:
    """The steps of ``result`` and the model before and after each one
    (``models``, or the ones a :class:`StagedResult` kept), checked against
    each other.

    Raises:
        ConfigError: models missing, one too few or many, or not the ones the
            steps saw.
    """
    steps = list(result.steps) if isinstance(result, PipelineResult) else list(result)
    if models is None and isinstance(result, StagedResult):
        models = result.models
    if models is None:
        raise ConfigError(
            "measure_payoff needs the model before and after every step",
            hint="Run the steps with edgekit.compress.payoff.run_staged, or pass models=[fp32, after step 1, ...].",
        )
    models = list(models)
    if len(models) != len(steps) + 1:
        raise ConfigError(
            f"got {len(models)} models for {len(steps)} steps",
            hint="Pass models=[fp32, after step 1, ..., after step n] (one more model than steps).",
        )
    for i, step in enumerate(steps):
        # A cheap consistency check: the models must be the ones the steps saw.
        if model_stats(models[i + 1]) != step.after:
            raise ConfigError(
                f"models[{i + 1}] is not the model after step {i} ({step.name}): its params/MACs differ",
                hint="models[0] is the fp32 model and models[i + 1] the model after steps[i].",
            )
    return steps, models


def _rows_for(
    pipeline: str,
    steps: Sequence[CompressionStep],
    models: Sequence[onnx.ModelProto],
    keys: dict[int, str],
) -> list[tuple[str, str, CompressionStep, str, str]]:
    """(label, pipeline, step, before key, after key) for every step and the chain."""
    out = []
    for i, step in enumerate(steps):
        out.append((step.name, pipeline, step, keys[id(models[i])], keys[id(models[i + 1])]))
    if len(steps) > 1:
        chain = PipelineResult(model=models[-1], steps=list(steps)).chain()
        assert chain is not None
        out.append(("chain", pipeline, chain, keys[id(models[0])], keys[id(models[-1])]))
    return out



@dataclass
class PayoffPlan:
    """What a payoff measurement compiles and which rows it reports.

    Attributes:
        models: Every distinct model, by key (SHA-256 of the serialized model).
        fp32_key: Key of the fp32 model all pipelines start from.
        rows: (label, pipeline, step, before key, after key) per row, fp32 excluded.
    """

    models: dict[str, onnx.ModelProto]
    fp32_key: str
    rows: list[tuple[str, str, CompressionStep, str, str]]


def plan_payoff(
    pipelines: Mapping[str, StagedResult | tuple[Sequence[CompressionStep], Sequence[onnx.ModelProto]]],
) -> PayoffPlan:
    """The distinct models of ``pipelines`` (each compiled once) and the
    rows of the report.

    Raises:
        ConfigError: no pipelines, models missing or not matching the steps,
            or pipelines from different fp32 models.
    """
    if not pipelines:
        raise ConfigError("no pipelines to measure", hint="Pass at least one pipeline (name -> run_staged(...)).")
    keys: dict[int, str] = {}
    unique: dict[str, onnx.ModelProto] = {}
    fp32_key = ""
    rows = []
    for name, value in pipelines.items():
        steps, models = staged_models(value if isinstance(value, PipelineResult) else value[0],
                                      None if isinstance(value, PipelineResult) else value[1])  # fmt: skip
        for m in models:
            if id(m) not in keys:
                keys[id(m)] = _key(m)
                unique.setdefault(keys[id(m)], m)
        if not fp32_key:
            fp32_key = keys[id(models[0])]
        elif keys[id(models[0])] != fp32_key:
            raise ConfigError(
                f"pipeline {name!r} starts from a different model than the first pipeline",
                hint="Measure pipelines of different fp32 models in separate calls.",
            )
        rows += _rows_for(name, steps, models, keys)
    return PayoffPlan(unique, fp32_key, rows)


def build_report(plan: PayoffPlan, measured: Mapping[str, PackageMeasurement], board: str, *, simulated: bool,
                 clock_hz: float, rounds: int, runs: int, model_name: str = "",
                 emulated: bool = False) -> PayoffReport:  # fmt: skip
    """The report from the measurement of every model of ``plan``: speed-ups
    against the model before each step and against fp32, and verdicts.

    Args:
        measured: Measurement by model key (every key of ``plan.models``).
        board: Board name.
        simulated: Whether latencies are simulated cycle counts.
        clock_hz: The board's clock (for the timing note of simulated boards).
        rounds, runs: Interleaved rounds and runs per round (wall-clock boards).
        emulated: The simulator counts no cycles (qemu-user): no latency was
            measured, only sizes and outputs.
    """
    fp32 = measured[plan.fp32_key]
    rows = [PayoffRow("fp32", "", None, fp32, fp32)]
    rows[0].verdict = "baseline" if not fp32.error else fp32.error
    for label, pipeline, step, before_key, after_key in plan.rows:
        before, after = measured[before_key], measured[after_key]
        step.latency_ms_before = before.latency_ms
        step.latency_ms_after = after.latency_ms
        if "top1_pct" in after.eval:
            step.accuracy = after.eval["top1_pct"]
        row = PayoffRow(label, pipeline, step, before, after)
        row.speedup, row.speedup_band = _speedup(before, after)
        row.speedup_vs_fp32, _ = _speedup(fp32, after)
        row.verdict = _verdict(step, row, before, after)
        rows.append(row)

    if emulated:
        timing = ("emulated on this machine (no cycle counts): sizes and outputs only; no latency, as an "
                  "emulator's wall clock is not the board's (measure on the board with a port)")  # fmt: skip
    elif simulated:
        timing = (f"simulated, deterministic cycle counts (1 run each), latency at {clock_hz / 1e6:g} MHz; "
                  "speed-up = cycle ratio")  # fmt: skip
    else:
        timing = (f"wall clock, {rounds} interleaved rounds x >= {runs} runs (>= {MIN_ROUND_MS:g} ms per model); "
                  "speed-up = median of per-round ratios "
                  "[quartiles]")  # fmt: skip
    evaluated = next((m.eval for m in measured.values() if m.eval), None)
    if evaluated:
        timing += f"; quality on {evaluated['samples']} samples ({evaluated['source']})"
    return PayoffReport(board, simulated, timing, rows, dict(measured), model_name)


def quality(ref: np.ndarray, out: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Top-1 agreement (and accuracy with ``labels``) and SQNR of ``out`` against ``ref``."""
    r = ref.astype(np.float64).ravel()
    o = out.astype(np.float64).ravel()
    noise = float((r - o) @ (r - o))
    signal = float(r @ r)
    q: dict[str, Any] = {
        "samples": len(ref),
        "sqnr_db": None if noise == 0.0 or signal == 0.0 else 10.0 * math.log10(signal / noise),
    }
    if ref.ndim == 2 and ref.shape[1] >= 2:
        q["agreement_pct"] = 100.0 * float(np.mean(ref.argmax(1) == out.argmax(1)))
        if labels is not None:
            q["top1_pct"] = 100.0 * float(np.mean(out.argmax(1) == labels))
    return q


def _speedup(before: PackageMeasurement, after: PackageMeasurement) -> tuple[float | None, tuple[float, float] | None]:
    if before.error or after.error or before.latency_ms is None or after.latency_ms is None:
        return None, None
    if before.key == after.key:
        return 1.0, (1.0, 1.0)
    if before.cycles is not None and after.cycles is not None and after.cycles > 0:
        s = before.cycles / after.cycles
        return s, (s, s)
    if before.round_ms and len(before.round_ms) == len(after.round_ms):
        ratios = np.asarray(before.round_ms) / np.asarray(after.round_ms)
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        return float(med), (float(q1), float(q3))
    return before.latency_ms / after.latency_ms, None


def _verdict(step: CompressionStep, row: PayoffRow, before: PackageMeasurement, after: PackageMeasurement) -> str:
    """What the step bought on the board, in words; from the measurement."""
    if after.error:
        return after.error
    if not step.modified:
        return "model unchanged"
    if after.bench_error:
        return after.bench_error
    parts = []
    if abs(step.macs_reduction) <= 0.005:
        if step.name in ("prune", "prune-nm"):
            parts.append("no MAC reduction (weights zeroed, dense kernels do the same work)")
        else:
            parts.append("MACs unchanged")
    elif step.macs_reduction > 0:
        parts.append(f"{100 * step.macs_reduction:.0f} % fewer MACs")
    else:
        parts.append(f"{-100 * step.macs_reduction:.0f} % more MACs")
    trend = _latency_trend(row.speedup, row.speedup_band)
    if trend and before.cycles is not None and before.cycles == after.cycles:
        parts.append("identical cycle count")
    elif trend == "faster" and row.speedup:
        parts.append(f"{row.speedup:.2f}× faster")
    elif trend == "slower" and row.speedup:
        parts.append(f"{1 / row.speedup:.2f}× slower")
    elif trend:
        parts.append("no measurable latency change")
    if before.package_bytes and after.package_bytes:
        change = after.package_bytes / before.package_bytes - 1.0
        stored = int(after.memory.get("weight_bytes", 0)) - int(before.memory.get("weight_bytes", 0))
        if abs(change) >= 0.02 and stored == 0:
            # Zeroed weights compress in the archive, not in memory or flash.
            parts.append(f"package file {100 * change:+.0f} % (archive compression only; weights as stored unchanged)")
        elif abs(change) >= 0.02:
            parts.append(f"package {100 * change:+.0f} %")
    if after.int8_choice:
        parts.append(after.int8_choice)
    return "; ".join(parts)

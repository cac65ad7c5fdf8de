"""The bench report (``edgekit bench --json``), typed.

One type for every place a bench report is built (the runner's and the RPC
bench share one builder, :func:`edgekit.runtime.runner.bench_runner`) or read
back (a ``--baseline`` file, :func:`edgekit.report.bench_gate.load_report`).
:meth:`BenchReport.to_json` writes the documented JSON layout
(docs/reports.md, shared/DESIGN.md's ``bench`` keys); sections added after
the measurement (the onnxruntime comparison, the gate) travel in
:attr:`BenchReport.extra`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from edgekit.core.errors import ConfigError

__all__ = ["BenchReport", "STAT_KEYS"]

#: Keys of a latency/cycles/instructions summary (:func:`edgekit.runtime.stats.summarize`).
STAT_KEYS = ("min", "p50", "p90", "p99", "mean")
_STAT_SECTIONS = ("latency_ms", "cycles", "instructions")
_OPTIONAL_SECTIONS = ("samples", "npu", "cycles", "instructions", "rpc")
_FIELDS = (
    "board", "package_board", "simulated", "deterministic", "runs", "warmup", "latency_ms", "throughput_per_s",
    "threads", "memory", "model", "runner", "inputs", *_OPTIONAL_SECTIONS,
)  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class BenchReport:
    """What one ``edgekit bench`` measured.

    Attributes:
        board: Board profile benchmarked on.
        runs: Timed inferences.
        warmup: Untimed inferences before them.
        latency_ms: Summary of the per-run latency (:data:`STAT_KEYS`, plus ``std``).
        package_board: Board the package was built for.
        simulated: Measured on a simulator, not on hardware.
        deterministic: The simulator repeats cycle counts exactly (``None``
            where the path does not know, e.g. a report from an older edgekit).
        throughput_per_s: Inferences (model calls) per second.
        threads: Threads the runtime used (0: not reported).
        memory: The package manifest's memory figures.
        model: The model's name.
        runner: What the runner reported about itself and how it timed.
        inputs: ``data`` (the first sample of the given inputs) or ``random``.
        samples: Per-run ``latency_ms`` (and ``cycles``) lists.
        npu: The NPU runner's utilization report.
        cycles: Summary of per-run cycle counts, where the device counts them.
        instructions: Summary of per-run instruction counts, where counted.
        rpc: Tracker, key, server and queueing time of an RPC bench.
        extra: Sections added after the measurement (``ort_latency_ms``,
            ``ratio_vs_ort``, ``outputs_agree``, ``gate`` ...), as JSON.
    """

    board: str
    runs: int
    warmup: int
    latency_ms: Mapping[str, float]
    package_board: str = ""
    simulated: bool = False
    deterministic: bool | None = None
    throughput_per_s: float = 0.0
    threads: int = 0
    memory: Mapping[str, int] = field(default_factory=dict)
    model: str = ""
    runner: Mapping[str, Any] = field(default_factory=dict)
    inputs: str = "random"
    samples: Mapping[str, list[float]] | None = None
    npu: Mapping[str, Any] | None = None
    cycles: Mapping[str, float] | None = None
    instructions: Mapping[str, float] | None = None
    rpc: Mapping[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``bench --json`` object (a fresh dict; absent sections stay absent)."""
        out: dict[str, Any] = {}
        for key in _FIELDS:
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = dict(value) if isinstance(value, Mapping) else value
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Any, *, source: str = "bench report") -> BenchReport:
        """Validates a bench report read back from JSON.

        Args:
            data: The decoded JSON object.
            source: What it is, for messages (e.g. ``baseline file 'b.json'``).

        Raises:
            ConfigError: not an object, or a key missing or of the wrong type
                (the error's ``key`` field names it).
        """
        if not isinstance(data, dict):
            _bad(source, "", "a JSON object (the file `edgekit bench --json` writes)")
        if not isinstance(data.get("board"), str):
            _bad(source, "board", "a string")
        for key in ("runs", "warmup", "threads"):
            if key in data and not (isinstance(data[key], int) and not isinstance(data[key], bool)):
                _bad(source, key, "an integer")
        if "runs" not in data or "warmup" not in data:
            _bad(source, "runs" if "runs" not in data else "warmup", "present")
        for key in _STAT_SECTIONS:
            if key in data or key == "latency_ms":
                stats = data.get(key)
                if not isinstance(stats, dict) or not all(_is_number(stats.get(k)) for k in STAT_KEYS):
                    _bad(source, key, f"an object with numbers {', '.join(STAT_KEYS)}")
        for key in ("simulated", "deterministic"):
            if key in data and not isinstance(data[key], bool):
                _bad(source, key, "true or false")
        if "memory" in data and not (
            isinstance(data["memory"], dict) and all(_is_number(v) for v in data["memory"].values())
        ):
            _bad(source, "memory", "an object of numbers")
        for key in ("runner", "samples", "npu", "rpc"):
            if key in data and not isinstance(data[key], dict):
                _bad(source, key, "an object")
        for key in ("package_board", "model", "inputs"):
            if key in data and not isinstance(data[key], str):
                _bad(source, key, "a string")
        if "throughput_per_s" in data and not _is_number(data["throughput_per_s"]):
            _bad(source, "throughput_per_s", "a number")
        known = {k: data[k] for k in _FIELDS if k in data}
        return cls(**known, extra={k: v for k, v in data.items() if k not in _FIELDS})


def _bad(source: str, key: str, what: str) -> NoReturn:
    where = f"{source}: key '{key}'" if key else source
    raise ConfigError(
        f"{where} must be {what}",
        hint="Use a file written by `edgekit bench --json` (re-create the baseline with this edgekit).",
        key=key,
    )

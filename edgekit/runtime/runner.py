"""Running packages: the :class:`Runner` protocol, :func:`open_runner`, and the
``run``/``bench`` API the CLI calls.

A runner executes one package on one board (in-process, over a serial link,
or on a simulator). Which runner class is used follows the manifest's
``runtime``; classes are imported lazily by module path so a runtime whose
module is not installed only fails when it is used.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol

import numpy as np

from edgekit.package import BenchReport, Package, open_package
from edgekit.core.errors import ConfigError, PackageError
from edgekit.core.registry import Registry, resolve
from edgekit.runtime.agreement import AGREE_TOLERANCE, accumulation_length, agree_tolerance
from edgekit.runtime.data import Samples, random_inputs, split_samples
from edgekit.runtime.stats import max_relative_error, summarize, throughput_per_s

if TYPE_CHECKING:
    from edgekit.core.profiles import Board

__all__ = [
    "Timing",
    "Runner",
    "RUNNERS",
    "open_runner",
    "resolve_board",
    "open_for_board",
    "run_package",
    "bench_package",
    "ort_reference",
    "compare_with_ort",
    "bench_runner",
    "bench_feeds",
    "check_counts",
    "AGREE_TOLERANCE",
]

logger = logging.getLogger(__name__)

#: Timed runs and warm-up runs of a benchmark where measurements vary.
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 5



@dataclass
class Timing:
    """Measurements of ``runs`` back-to-back inferences.

    Attributes:
        latency_ms: Wall-clock (or simulated) milliseconds per run.
        cycles: Cycle counts per run, where the device or simulator counts them.
        instructions: Executed instructions per run, where counted.
    """

    latency_ms: list[float]
    cycles: list[int] | None = None
    instructions: list[int] | None = None


class Runner(Protocol):
    """Executes a loaded package.

    Implementations are constructed as ``cls(package, board, port=None,
    sim=None)`` and are loaded (ready to :meth:`run`) when the constructor
    returns; :meth:`load` replaces the package.
    """

    simulated: bool

    def info(self) -> dict[str, Any]:
        """What runs the model: ``runner``, ``threads``, device details."""
        ...

    def load(self, package: Package) -> None:
        """Loads (or flashes) ``package``."""
        ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one inference; returns outputs by name."""
        ...

    def time_runs(self, feeds: Mapping[str, np.ndarray], runs: int, warmup: int) -> Timing:
        """Runs ``warmup`` untimed then ``runs`` timed inferences."""
        ...

    def close(self) -> None:
        """Releases the device and temporary files."""
        ...


#: manifest ``runtime`` -> "module:Class" of its runner.
RUNNERS: Registry[Any] = Registry("runner", PackageError)  # type: ignore[arg-type]
RUNNERS.register("tvm-vm", "edgekit.runtime.host:HostRunner")
RUNNERS.register("aot-c", "edgekit.runtime.mcu:McuRunner")
RUNNERS.register("npu", "edgekit.runtime.npu.runner:NpuRunner")
RUNNERS.register("linux-aot", "edgekit.runtime.linux_runner:LinuxRunner")
RUNNERS.register("tvm-vm-cuda", "edgekit.runtime.cuda_runner:CudaRunner")


def _runner_class(runtime: str) -> Any:
    entry = RUNNERS.get(runtime)
    if not isinstance(entry, str):
        return entry
    try:
        return resolve(entry, runtime)
    except ConfigError as exc:
        if "module" not in exc.fields:
            raise
        raise PackageError(
            f"running packages with runtime '{runtime}' is not available yet in this edgekit",
            hint="Upgrade edgekit, or compile the model for --board host.",
            runtime=runtime,
        ) from None


def open_runner(package: Package, board: "Board", *, port: str | None = None, sim: bool | str | None = None) -> Runner:
    """Returns a loaded runner for ``package`` on ``board``.

    Args:
        package: An opened, verified package.
        board: The board profile to run on.
        port: Serial port (or address) of a real board; runners that run
            in-process refuse it.
        sim: Force (True) or forbid (False) the board's simulator; ``None``
            lets the runner decide (simulate when no board is attached);
            ``"rtl"`` simulates an NPU board's RTL, ``"model"`` its Python model.

    Raises:
        ConfigError: from :func:`edgekit.runtime.connection.connect`, which
            every runner calls first (``sim`` names an engine the board's
            simulator lacks, ``port`` and ``sim`` together, ...).
    """
    cls = _runner_class(package.runtime)
    return cls(package, board, port=port, sim=sim)


def resolve_board(package: Package | None, board: str | None, board_dirs: Iterable[str] = ()) -> "Board":
    """The board to run on: the named one, else the one the package was built for."""
    from edgekit.core.profiles import load_profiles

    name = board or (package.board if package is not None else None)
    if not name:
        raise ConfigError("no board given", hint="Pass --board NAME (`edgekit boards` lists them).")
    return load_profiles(board_dirs).board(name)


def open_for_board(path: str | os.PathLike[str], board: str | None, allow_other_board: bool,
                   board_dirs: Iterable[str]) -> tuple[Package, "Board"]:
    """Opens (and verifies) a package and resolves the board it runs on."""
    if board:
        # An unknown name must fail as unknown (with the close names), not as
        # "recompile it with --board <typo>".
        resolve_board(None, board, board_dirs)
    package = open_package(path, board=board, allow_other_board=allow_other_board)
    return package, resolve_board(package, board, board_dirs)


def run_package(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    *,
    board: str | None = None,
    allow_other_board: bool = False,
    port: str | None = None,
    sim: bool | str | None = None,
    board_dirs: Iterable[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, np.ndarray]], Samples, dict[str, Any]]:
    """Runs every sample of ``arrays`` through the package.

    ``progress(done, total)`` is called after each sample.

    Returns:
        Per-sample outputs, the samples (``.mode`` tells how the data laid
        out its samples), and the runner's :meth:`Runner.info`.

    Raises:
        PackageError: the package is damaged or for another board.
        InputError: an input is missing, unknown or has the wrong shape.
    """
    package, brd = open_for_board(path, board, allow_other_board, board_dirs)
    samples = split_samples(package.inputs, arrays)
    runner = open_runner(package, brd, port=port, sim=sim)
    try:
        results = []
        for feeds in samples:
            results.append(runner.run(feeds))
            if progress is not None:
                progress(len(results), len(samples))
        info = dict(runner.info())
        info["simulated"] = bool(runner.simulated)
        info.setdefault("board", brd.name)
    finally:
        runner.close()
    return results, samples, info


def ort_reference(package: Package, threads: int, *, as_written: bool = False) -> Any:
    """An onnxruntime session on the package's ``model.onnx`` with ``threads``
    intra-op threads (0 = onnxruntime's default).

    Args:
        as_written: Turn off onnxruntime's graph optimizations. For QDQ models
            its default level fuses QDQ chains into its own int8 kernels,
            whose rounding differs from the QDQ graph by many LSBs on CPUs
            without VNNI (docs/quantization.md); the graph as written is the
            numerical reference, the optimized session the speed reference.
    """
    import onnxruntime as ort

    if "model.onnx" not in package:
        raise PackageError(f"package '{package.path}' holds no model.onnx", hint="Rebuild it with this edgekit to compare with onnxruntime.")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, int(threads))
    opts.inter_op_num_threads = 1
    if as_written:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(package.read("model.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])


def _is_qdq(package: Package) -> bool:
    import onnx

    model = onnx.load_from_string(package.read("model.onnx"))
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _time_ort(session: Any, feeds: Mapping[str, np.ndarray], runs: int, warmup: int) -> tuple[list[float], list[np.ndarray]]:
    outputs = session.run(None, dict(feeds))
    for _ in range(max(0, warmup - 1)):
        session.run(None, dict(feeds))
    latencies = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, dict(feeds))
        latencies.append((time.perf_counter() - t0) * 1000.0)
    return latencies, outputs


def bench_package(
    path: str | os.PathLike[str],
    *,
    board: str | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    compare_ort: bool = False,
    allow_other_board: bool = False,
    port: str | None = None,
    sim: bool | str | None = None,
    board_dirs: Iterable[str] = (),
    seed: int = 0,
) -> dict[str, Any]:
    """Benchmarks a package and returns the report (the ``bench --json`` object).

    With data, the first sample is timed; without, seeded random inputs are.
    ``throughput_per_s`` counts inferences (model calls) per second, whatever
    the model's batch size. ``ratio_vs_ort`` is edgekit's median latency over onnxruntime's (above 1
    means slower than onnxruntime).

    ``runs`` and ``warmup`` default to 1 and 0 on a deterministic simulator
    (cycle counts repeat exactly: report key ``deterministic``), else to
    :data:`DEFAULT_RUNS` and :data:`DEFAULT_WARMUP`.

    Raises:
        ConfigError: for ``runs < 1`` or ``warmup < 0``.
        PackageError, InputError: as for :func:`run_package`.
    """
    check_counts(runs, warmup)
    package, brd = open_for_board(path, board, allow_other_board, board_dirs)
    feeds = bench_feeds(package, arrays, seed)
    runner = open_runner(package, brd, port=port, sim=sim)
    try:
        report, outputs = bench_runner(runner, package, brd, feeds, runs=runs, warmup=warmup,
                                       inputs="data" if arrays is not None else "random")  # fmt: skip
    finally:
        runner.close()
    data = report.to_json()
    if compare_ort:  # with the device closed, so onnxruntime has this machine to itself
        compare_with_ort(data, package, feeds, outputs, report.runs, report.warmup)
    return data


def check_counts(runs: int | None, warmup: int | None) -> None:
    """Refuses ``runs < 1`` and ``warmup < 0`` (``None`` keeps the default).

    Raises:
        ConfigError: naming both values.
    """
    if (runs is not None and runs < 1) or (warmup is not None and warmup < 0):
        raise ConfigError(f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})", hint="E.g. --runs 50 --warmup 5.")


def bench_feeds(package: Package, arrays: Mapping[str, np.ndarray] | None, seed: int) -> dict[str, np.ndarray]:
    """What a benchmark times: the first sample of ``arrays``, else seeded random inputs."""
    return split_samples(package.inputs, arrays)[0] if arrays is not None else random_inputs(package.inputs, seed)


def bench_runner(
    runner: Runner,
    package: Package,
    board: "Board",
    feeds: Mapping[str, np.ndarray],
    *,
    runs: int | None,
    warmup: int | None,
    inputs: str = "random",
) -> tuple[BenchReport, dict[str, np.ndarray]]:
    """Times ``runner`` (opened on ``package``) and returns the bench report
    and the outputs of one run: the one report builder of :func:`bench_package`
    and of the RPC bench (:func:`edgekit.runtime.rpc.bench_remote`). The
    caller closes the runner, then may add :func:`compare_with_ort`.
    """
    deterministic = bool(runner.simulated) and board.simulator.deterministic
    if runs is None:
        runs = 1 if deterministic else DEFAULT_RUNS
    if warmup is None:
        warmup = 0 if deterministic else DEFAULT_WARMUP
    info = dict(runner.info())
    outputs = runner.run(feeds)
    timing = runner.time_runs(feeds, runs, warmup)
    report = BenchReport(
        board=board.name,
        package_board=package.board,
        simulated=bool(runner.simulated),
        deterministic=deterministic,
        runs=runs,
        warmup=warmup,
        latency_ms=summarize(timing.latency_ms),
        throughput_per_s=throughput_per_s(timing.latency_ms),
        threads=int(info.get("threads", 0)),
        memory=dict(package.manifest.memory or {}),
        model=package.manifest.model_name,
        runner=info,
        inputs=inputs,
        samples={"latency_ms": list(timing.latency_ms), **({"cycles": list(timing.cycles)} if timing.cycles else {})},
        npu=runner.npu_report() if hasattr(runner, "npu_report") else None,
        cycles=summarize(timing.cycles) if timing.cycles else None,
        instructions=summarize(timing.instructions) if timing.instructions else None,
    )
    return report, outputs


def compare_with_ort(
    report: dict[str, Any],
    package: Package,
    feeds: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    runs: int,
    warmup: int,
) -> None:
    """Adds onnxruntime's latency and the output agreement to a bench ``report``
    (keys ``ort_latency_ms``, ``ratio_vs_ort``, ``ort_max_rel_error``,
    ``outputs_agree``, and ``agree_tolerance`` with the ``accumulation_length``
    it was derived from, see :mod:`edgekit.runtime.agreement`); onnxruntime runs here with ``report["threads"]`` threads."""
    session = ort_reference(package, report["threads"])
    ort_ms, ort_out = _time_ort(session, feeds, runs, warmup)
    if _is_qdq(package):
        report["ort_reference"] = "qdq-as-written"
        ort_out = ort_reference(package, report["threads"], as_written=True).run(None, dict(feeds))
    report["ort_latency_ms"] = summarize(ort_ms)
    report["ort_throughput_per_s"] = throughput_per_s(ort_ms)
    report["ratio_vs_ort"] = report["latency_ms"]["p50"] / report["ort_latency_ms"]["p50"]
    names = [o.name for o in session.get_outputs()]
    errors = {n: max_relative_error(outputs[n], ref) for n, ref in zip(names, ort_out) if n in outputs}
    # NaN (an output full of NaNs on one side) must count as disagreement.
    worst = None if any(np.isnan(e) for e in errors.values()) else max(errors.values(), default=0.0)
    report["ort_max_rel_error"] = {"per_output": {n: (None if np.isnan(e) else e) for n, e in errors.items()}, "max": worst}
    length = accumulation_length(package)
    tolerance = agree_tolerance(length)
    report["agree_tolerance"] = tolerance
    report["accumulation_length"] = length
    report["outputs_agree"] = worst is not None and worst <= tolerance
    # The command line prints the verdict; a second line here would repeat it.
    logger.debug("outputs vs onnxruntime: max relative error %s, tolerance %.3g", worst, tolerance)

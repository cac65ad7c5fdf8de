"""A Relax pipeline for CPUs that gives fast code without tuning.

TVM 0.27's default CPU pipeline (``relax.backend.cpu_generic``) legalizes and
fuses operators but schedules nothing: every kernel is a naive scalar,
single-threaded loop nest. TVM 0.27 ships no x86/ARM TOPI schedules any more,
dlight's CPU rules cover only GEMV and row reductions, and the wheel has no
BLAS/DNNL BYOC. So edgekit builds the missing pieces from TVM's own
machinery, in three parts:

* **Relax rewrites** (:mod:`edgekit.compiler.backends.llvm.layout`, and the int8
  ``cpu_*`` modules): ``relax.transform.ConvertLayout`` rewrites every
  ``conv2d`` to NHWC activations / HWIO weights, so the output channel -- a
  multiple of the SIMD width in nearly every model -- is the innermost,
  contiguous axis of both the output and the weights. The weight transposes
  this inserts (and every other computation that depends only on weights)
  are split out with ``relax.transform.LiftTransformParams`` and run once at
  compile time on the parameters (weights stay run-time arguments, never
  LLVM constants).
* **Schedules** (:mod:`edgekit.compiler.backends.llvm.schedule`): dlight rules giving
  reductions a register-blocked micro-kernel and everything else parallel,
  vectorized loops; :func:`schedule_passes` assembles them with the int8
  dot-product rule.
* **Build and tuning records** (this module): a kernel with a record in a
  MetaSchedule database (see :mod:`edgekit.compiler.backends.llvm.tuning`) is taken from
  it before the default rules run, if the record measured clearly faster
  than the default schedule (:func:`apply_database`).

``main`` itself is compiled too (:data:`DEFAULT_EXEC_MODE`): TVM's
``VMTIRCodeGen`` writes it as a TIR function that calls the kernels one after
another, where the bytecode form has the Relax VM interpret one instruction
per kernel call. Small models are mostly those calls.

Entry point: :func:`build_cpu`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.compiler.backends.llvm.layout import (
    block_weights_pass,
    cancel_transposes_pass,
    matmul_weights_pass,
    simplify_pass,
    softmax_pass,
    transpose_conv_pass,
    with_elementwise_lookups,
)
from edgekit.compiler.backends.llvm.schedule import Rules, simd_lanes
from edgekit.core.errors import CompileError
from edgekit.core.threads import usable_cores
from edgekit.core.vm_exec import exec_mode_of

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = [
    "CONV_LAYOUTS",
    "DEFAULT_EXEC_MODE",
    "EXEC_MODES",
    "CpuBuild",
    "build_cpu",
    "apply_database",
    "default_schedule",
    "exec_mode_of",
    "import_onnx",
    "prepare_cpu_module",
    "schedule_passes",
    "set_num_threads",
]

logger = logging.getLogger(__name__)

#: Desired layouts for ``relax.transform.ConvertLayout``: activations NHWC,
#: weights HWIO, so the output channel is innermost in output and weights.
#: conv2d_transpose is pinned to NCHW/IOHW: ConvertLayout would otherwise make
#: it NHWC too, which TOPI cannot legalize (the VM then fails on the raw op).
CONV_LAYOUTS: dict[str, list[str]] = {
    "relax.nn.conv2d": ["NHWC", "HWIO"],
    "relax.nn.conv2d_transpose": ["NCHW", "IOHW"],
}


#: How ``main`` runs: "compiled" (a TIR function of ``main``'s calls, compiled by LLVM with the
#: kernels) or "bytecode" (instructions the Relax VM interprets, one dispatch per call).
EXEC_MODES = ("compiled", "bytecode")

#: :func:`build_cpu`'s mode. Compiled: PP-OCR cls 0.98x and the digits CNN 0.9x the latency
#: of bytecode, outputs bit-identical (Zen 4, one thread, BENCHMARKS.md "The VM's main as
#: compiled code"). The VM's instrumentation (``set_instrument``), which per-kernel profiles
#: use, sees only bytecode calls: profilers build with "bytecode".
DEFAULT_EXEC_MODE = "compiled"


def default_schedule(func: Any, target: tvm.target.Target) -> Any | None:
    """The schedule :func:`schedule_passes` gives one unscheduled PrimFunc (traced), or None.

    Tuning measures it first and stores it as a record, so a kernel is only
    taken from the database if the search beat this schedule.
    """
    from edgekit.compiler.backends.llvm.int8 import dot_schedule_rule

    rules = Rules.get()
    for rule in (dot_schedule_rule(), rules["CpuTiledReduction"](), rules["CpuInjective"]()):
        sch = rule.apply(func, target, False)
        if sch is not None:
            return sch
    return None


def schedule_passes(target: tvm.target.Target, threads: int = 1) -> list[Any]:
    """The default scheduling passes (functions already scheduled, e.g. from a database, are kept).

    ``threads`` is the board's cores: with two or more, small kernels next to
    parallel ones may run in parallel with their split
    (:func:`edgekit.compiler.backends.llvm.threads.serial_small_kernels_pass`).
    """
    from tvm.s_tir import dlight

    from edgekit.compiler.backends.llvm.int8 import dot_schedule_rule
    from edgekit.compiler.backends.llvm.threads import serial_small_kernels_pass

    rules = Rules.get()
    passes = []
    passes.append(
        dlight.ApplyDefaultSchedule(
            dot_schedule_rule(),
            rules["CpuTiledReduction"](),
            # dlight.cpu.Reduction is left out on purpose: in TVM 0.27 it
            # parallelizes softmax over the wrong axis when the batch is 1
            # (each of the 1000 threads recomputes the whole row: 4 ms
            # instead of 10 us for a 1000-class softmax).
            rules["CpuInjective"](),
        )
    )
    # Kernels of a microsecond or two run on the calling thread (threads.py).
    passes.append(serial_small_kernels_pass(target, threads=threads))
    return passes


def prepare_cpu_module(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    *,
    lift_params: bool = True,
    fast_math: bool = True,
    weights: dict[str, Any] | None = None,
) -> tuple[tvm.IRModule, tvm.IRModule | None]:
    """Layout conversion, weight-transform lifting, legalization and fusion.

    Args:
        fast_math: Use TVM's polynomial exp/erf/tanh/softmax.
        weights: Weight values by ``main`` parameter name, when known; the
            int8 kernels use them to prove which layers may take ``vpmaddubsw``
            on AVX2 (:mod:`edgekit.compiler.backends.llvm.int8`).

    Returns:
        ``(module, transform)``: ``module`` holds ``main`` and fused,
        *unscheduled* PrimFuncs -- the form MetaSchedule extracts tuning tasks
        from and :func:`schedule_passes` schedules. With ``lift_params``,
        computations on weights alone (layout transposes) are split off by
        ``relax.transform.LiftTransformParams`` into ``transform``, a Relax
        module whose ``main_transform_params`` maps the original weights (one tuple) to the
        weights ``module``'s ``main`` takes; otherwise ``transform`` is None
        and those computations stay in ``main``.
    """
    import tvm
    from tvm import relax

    from edgekit.compiler.backends.llvm.channel_sum import channel_sum_pass
    from edgekit.compiler.backends.llvm.concat import concat_pass
    from edgekit.compiler.backends.llvm.concat_layout import nhwc_concat_pass
    from edgekit.compiler.backends.llvm.constant_fold import fold_constants_pass
    from edgekit.compiler.backends.llvm.gate_multiply import with_gate_multiply
    from edgekit.compiler.backends.llvm.int8 import int8_dot_pass
    from edgekit.compiler.backends.llvm.int8_input import input_pass
    from edgekit.compiler.backends.llvm.lookup import lookup_pass
    from edgekit.compiler.backends.llvm.operand_readers import operand_reader_pass
    from edgekit.compiler.backends.llvm.pad import int8_pad_pass
    from edgekit.compiler.backends.llvm.requant import float_requant_pass
    from edgekit.compiler.backends.llvm.tap_fusion import with_tap_fusion
    from edgekit.compiler.backends.llvm.upsample import int8_upsample_pass
    from edgekit.compiler.detector import detector_passes
    from edgekit.compiler.importer import fusion_passes
    from edgekit.compiler.relax_guards import convert_layout_or_keep, fast_math_transform

    layout = [
        simplify_pass(),
        # The rewrite above leaves ``y = x`` alias bindings; ConvertLayout
        # does not propagate a layout through an alias and falls back to NCHW
        # with a transpose pair around every residual Add (ResNet-50 spent
        # 12% of its time in those transposes).
        relax.transform.CanonicalizeBindings(),
        transpose_conv_pass(),
        convert_layout_or_keep(CONV_LAYOUTS),  # relax_guards: TVM's aborts on some conv-free graphs
        relax.transform.Normalize(),
        int8_upsample_pass(),
        cancel_transposes_pass(),
        nhwc_concat_pass(),
        # int8 conv/matmul on the target's integer dot-product instructions.
        int8_dot_pass(target, weights),
        # int64 fixed-point requantization as float32 scale and round (x86).
        float_requant_pass(target),
        # A residual add reads the next conv's operand form: no conversion kernel.
        operand_reader_pass(target),
        lookup_pass(target),
        channel_sum_pass(),
        concat_pass(),
        int8_pad_pass(target),
        input_pass(target),
        block_weights_pass(target),
        matmul_weights_pass(target),
        *([softmax_pass(target), *detector_passes(simd_lanes(target))] if fast_math else []),
        # TVM's polynomial exp/erf/tanh/softmax (relative error ~1e-7):
        # vectorizable, where LLVM calls scalar libm expf once per lane
        # (PP-OCR rec's 18710-class softmax took 7 ms with libm).
        *([fast_math_transform()] if fast_math else []),  # relax_guards: TVM's fails on ExternFunc calls
        fold_constants_pass(),  # FoldConstant where a call reads no variable (constant_fold.py)
    ]
    with target:
        mod = tvm.transform.Sequential(layout)(mod)
        transform = None
        if lift_params:
            mod = relax.transform.LiftTransformParams()(mod)
            names = [gv.name_hint for gv in mod.get_global_vars()]
            if "main_transform_params" in names:
                transform = tvm.IRModule({"main_transform_params": mod["main_transform_params"]})
                mod = _without(mod, "main_transform_params")
        fusion = with_tap_fusion(with_elementwise_lookups(fusion_passes()))
        # Squeeze-excite multiplies with their gate's lookup, 16 values a step (AVX2-only targets).
        mod = tvm.transform.Sequential(with_gate_multiply(fusion, target))(mod)
    return mod, transform


def _lowering_passes(target: tvm.target.Target) -> list[Any]:
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    return cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target)


@dataclass
class CpuBuild:
    """What :func:`build_cpu` produced.

    Attributes:
        executable: The compiled ``relax.VMExecutable`` (export it with
            ``executable.export_library(path)``).
        params: The weights ``main`` takes after its ``num_input`` real inputs,
            in order -- already transformed (transposed to HWIO, etc.) when
            ``params`` were given to :func:`build_cpu`. Pass these, not the
            original weights, at run time.
        num_input: Number of real (non-weight) inputs of ``main``.
        tuned_kernels: Names of the kernels taken from the tuning database.
        exec_mode: How ``main`` runs (:data:`EXEC_MODES`).
    """

    executable: Any
    params: list[Any] = field(default_factory=list)
    num_input: int = 0
    tuned_kernels: list[str] = field(default_factory=list)
    #: The module as handed to codegen (memory planned), for size reports.
    lowered: Any = None
    exec_mode: str = DEFAULT_EXEC_MODE


def _num_input(func: Any) -> int:
    attrs = func.attrs
    if attrs is not None and "num_input" in attrs:
        return int(attrs["num_input"])
    return len(func.params)


def _weights_by_name(mod: Any, num_input: int, params: Sequence[Any] | None, target: Any) -> dict[str, Any] | None:
    """``main``'s weights by parameter name, where the int8 kernels need their values: the targets
    whose layers may take ``vpmaddubsw`` (AVX2, and AVX512BW without VNNI)."""
    from edgekit.compiler.backends.llvm.intrin import I16_256, I16_512, dot_isa

    if not params or dot_isa(target) not in (I16_256, I16_512):
        return None
    names = [p.name for p in mod["main"].params[num_input:]]
    return {n: (p.numpy() if hasattr(p, "numpy") else np.asarray(p)) for n, p in zip(names, params)}


def _transform_params(transform: Any, target: tvm.target.Target, params: Sequence[Any]) -> list[Any]:
    """Runs ``main_transform_params`` once on ``params`` (compiled with TVM's default pipeline).

    These are the weight-only computations (layout transposes, reshapes of
    biases) LiftTransformParams split off; running them here means the
    compiled model receives weights already in its layout.
    """
    import tvm
    from tvm import relax

    # LLVM -O0 for this run-once module: it halves its build (PP-OCR cls int8: 7.7 -> 3.8 s of a
    # 34 s compile, Zen 4) and the weights stay bit-identical (checked on PP-OCR cls int8/fp32,
    # YOLOv8n, YOLOX; test_cpu_pipeline compares the two builds' bytes on an int8 and an fp32 CNN).
    quick = tvm.target.Target({**dict(target.export()), "opt-level": 0})
    with quick:
        # Bytecode (tvm.compile's mode): it runs once, and a compiled main of hundreds of
        # transforms would only add to the build.
        exe = tvm.compile(transform, quick)
    args = [p if isinstance(p, tvm.runtime.Tensor) else tvm.runtime.tensor(np.ascontiguousarray(p)) for p in params]
    with tempfile.TemporaryDirectory(prefix="edgekit-transform-") as tmp:
        vm = relax.VirtualMachine(_loaded(exe, Path(tmp) / "transform.so"), tvm.cpu())
        out = vm["main_transform_params"](args)
        return [out[i] for i in range(len(out))]


def _loaded(exe: Any, path: Path) -> Any:
    """``exe`` exported to ``path`` and loaded (the executable itself where it cannot be exported).

    Loading an exported library is much quicker than the VM's in-process JIT
    of the same code, which compiles it again at LLVM's highest level: PP-OCR
    cls int8's weight transforms, 0.8 s to export and 0.01 s to load against
    3.6 s to JIT, same outputs (Zen 4, znver4 code, /tmp measurement of
    2026-12-07; benchmarks/compile_time.py). Exporting needs the C compiler
    the host package's export needs anyway.
    """
    import tvm

    try:
        exe.export_library(str(path))
        return tvm.runtime.load_module(str(path))
    except Exception as exc:  # no linker: the VM JITs the executable, as before
        logger.debug("weight transforms not exported (%s); JIT instead", str(exc).splitlines()[0][:200])
        return exe


@contextmanager
def _beside(run: Callable[..., Any], transform: Any, *args: Any) -> Iterator[Future]:
    """``run(transform, *args)`` on a thread of its own (nothing where ``transform`` is None); joined on exit.

    The weight transforms (``_transform_params``: TVM's build of the run-once module at LLVM
    -O0, its export and one run) share nothing with the model's build. They run while the model
    is compiled (``relax.build``: TIR lowering and LLVM, C++ that releases the GIL), so the
    transforms' own Python (legalizing PP-OCR cls int8's 423 weight transforms, about half of
    their 1.7 s) does not wait for the GIL as it did beside the scheduling (Python): PP-OCR cls
    int8 a fresh compile 0.96x of running them beside the scheduling, which was ~0.9 s shorter
    than in turn (Zen 4, BENCHMARKS.md "Compile time of int8 models"); the packages are
    byte-identical. TVM keeps the current target and pass context per thread. With one core the
    two interleave as the steps ran in turn.
    An error of ``run`` is raised by ``result()``; leaving the block waits for the thread.
    """
    if transform is None:
        done: Future = Future()
        done.set_result(None)
        yield done
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgekit-weights") as pool:
        yield pool.submit(run, transform, *args)


def build_cpu(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    params: Sequence[Any] | None = None,
    *,
    database: Any | None = None,
    num_threads: int = 0,
    opt_level: int = 3,
    use_shipped: bool = True,
    fast_math: bool = True,
    exec_mode: str | None = None,
) -> CpuBuild:
    """Compiles a Relax module (as imported from ONNX) into fast CPU code.

    Args:
        mod: Relax module whose ``main`` takes the model inputs followed by the
            weights (``from_onnx(..., keep_params_in_input=True)`` +
            ``relax.frontend.detach_params``), with a ``num_input`` attribute.
        target: An LLVM ``tvm.target.Target``.
        params: The weights in the order ``main`` takes them (numpy arrays or
            ``tvm.runtime.Tensor``). When given, weight-only computations
            (layout transposes) are run once now and :attr:`CpuBuild.params`
            holds the transformed weights; when None, they stay in the graph
            and run on every call, and the original weights are passed.
        database: A MetaSchedule database (see
            :func:`edgekit.compiler.backends.llvm.tuning.open_database`); kernels it holds
            records for are used instead of the default schedules.
        num_threads: Runtime threads (``Board.cores``; 0 = every core),
            applied to this process's TVM thread pool with
            :func:`set_num_threads`; the kernels are also split for that
            many threads (:func:`schedule_passes`).
        opt_level: ``PassContext`` optimisation level.
        use_shipped: With no ``database``, use the pre-tuned records shipped in
            ``edgekit/tuning_records`` for the target's ISA class, if any.
        fast_math: TVM's polynomial exp/erf/tanh/softmax (relative error about
            1e-7, vectorized) instead of libm calls. Tuning records are made
            with it on.
        exec_mode: How ``main`` runs (:data:`EXEC_MODES`; None: :data:`DEFAULT_EXEC_MODE`).
            "bytecode" for per-kernel profiles: the VM's instrumentation
            (``VirtualMachine.set_instrument``) sees no call of a compiled ``main``.

    Returns:
        A :class:`CpuBuild`.

    Raises:
        CompileError: if TVM fails to lower or build the module.
        ValueError: if ``exec_mode`` is not one of :data:`EXEC_MODES`.
    """
    import tvm
    from tvm import relax

    mode = DEFAULT_EXEC_MODE if exec_mode is None else exec_mode
    if mode not in EXEC_MODES:
        raise ValueError(f"exec_mode {exec_mode!r}: use one of {', '.join(EXEC_MODES)}")
    set_num_threads(num_threads)
    cores = num_threads if num_threads > 0 else usable_cores()  # 0: the host board, this machine's cores
    lift = params is not None
    try:
        num_input = _num_input(mod["main"])
        prepared, transform = prepare_cpu_module(
            mod, target, lift_params=lift, fast_math=fast_math, weights=_weights_by_name(mod, num_input, params, target)
        )
        new_params: list[Any] = list(params or [])
        if database is None and use_shipped:
            from edgekit.compiler.tuning_db import shipped_database

            database = shipped_database(target)
        with target, tvm.transform.PassContext(opt_level=opt_level):
            tuned: list[str] = []
            if database is not None:
                prepared, tuned = apply_database(prepared, database, target)
            scheduled = tvm.transform.Sequential(schedule_passes(target, cores))(prepared)
            lowered = tvm.transform.Sequential(_lowering_passes(target))(scheduled)
            # The weight transforms build and run on another thread while this one compiles the
            # model (see _beside).
            with _beside(_transform_params, transform, target, new_params) as transformed:
                exe = relax.build(lowered, target, relax_pipeline=None, exec_mode=mode)
        if transform is not None:
            new_params = transformed.result()
        if tuned:
            logger.info("%d kernels from the tuning database, the rest with default schedules", len(tuned))
    except CompileError:
        raise
    except Exception as exc:
        raise CompileError(
            f"TVM failed to build the model for {target.kind.name} ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})",
            hint="Re-run with --debug for the full TVM error; try `--opt-level 0` or report the model.",
        ) from exc
    return CpuBuild(executable=exe, params=new_params, num_input=num_input, tuned_kernels=tuned, lowered=lowered,
                    exec_mode=mode)


#: A tuned record replaces the default schedule only if it measured at least
#: this much faster. MetaSchedule times a kernel alone, called back to back
#: with its weights hot in cache; inside the model they are not. Measured on
#: PP-OCR rec (2-core host, 2026-11-23): with a 10% margin three kernels were
#: taken and the model ran 10% slower than untuned; with 50% only the
#: classifier matmul was, and the model ran 1% faster.
TUNED_MARGIN = 0.5


def apply_database(mod: tvm.IRModule, database: Any, target: tvm.target.Target) -> tuple[tvm.IRModule, list[str]]:
    """Schedules the PrimFuncs of ``mod`` that ``database`` has a clearly better record for.

    Like ``relax.transform.MetaScheduleApplyDatabase`` (the record's trace is
    replayed on the kernel), with one difference: the best record is only
    used if it beat the measured default schedule of the kernel (tuning
    stores it first, :func:`edgekit.compiler.backends.llvm.tuning._measure_default`) by
    :data:`TUNED_MARGIN`; otherwise, or if the database has no record of the
    current default schedule (it changed since the tuning run), the kernel is
    left to :func:`schedule_passes`. Kernels no default rule schedules take
    the best record.

    Returns:
        ``(module, names)``: the module with those kernels scheduled, and their names.
    """
    import tvm
    from tvm import s_tir

    from edgekit.compiler.tuning_db import record_seconds

    out = mod
    names: list[str] = []
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or _is_scheduled(func):
            continue
        # Workloads are stored as {"main": func} with that global symbol.
        workload_mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
        if not database.has_workload(workload_mod):
            continue
        records = [r for r in database.get_top_k(database.commit_workload(workload_mod), 1 << 30) if r.run_secs]
        if not records:
            continue
        best = records[0]
        default = default_schedule(func, target)
        if default is not None:
            text = str(default.trace)
            base = next((r for r in records if str(r.trace) == text), None)
            # No record of the current default schedule (records from before
            # it last changed): nothing measured to beat, the default stays.
            if base is None or best is base or record_seconds(best) > (1 - TUNED_MARGIN) * record_seconds(base):
                # Keep the default schedule already computed here, so that
                # schedule_passes does not schedule the kernel a second time.
                out = _replace(out, gv, default.mod["main"].with_attr("tirx.is_scheduled", True))
                continue
        sch = s_tir.Schedule(func)
        try:
            best.trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception as exc:  # a record from another TVM version: fall back to the default
            logger.warning("tuning record for %s does not apply (%s); using the default schedule", gv.name_hint, exc)
            continue
        out = _replace(out, gv, sch.mod["main"].with_attr("tirx.is_scheduled", True))
        names.append(gv.name_hint)
    return out, names


def _replace(mod: tvm.IRModule, gv: Any, func: Any) -> tvm.IRModule:
    import tvm

    funcs = {g: (func if g.same_as(gv) else f) for g, f in mod.functions_items()}
    return tvm.IRModule(funcs, attrs=mod.attrs)


def _without(mod: tvm.IRModule, name: str) -> tvm.IRModule:
    import tvm

    funcs = {gv: f for gv, f in mod.functions_items() if gv.name_hint != name}
    return tvm.IRModule(funcs, attrs=mod.attrs)


def _is_scheduled(func: Any) -> bool:
    attrs = func.attrs
    return attrs is not None and "tirx.is_scheduled" in attrs and bool(attrs["tirx.is_scheduled"])


def import_onnx(prepared: Any) -> tuple[tvm.IRModule, list[Any]]:
    """Imports a :class:`~edgekit.frontend.loader.PreparedModel` into Relax with weights as inputs.

    The host backend's import (:func:`edgekit.compiler.importer.import_onnx`,
    integer-only lowering included), so tuning sees the kernels compile builds.

    Returns:
        ``(module, weights)`` with the weights in the order ``main`` takes them.
    """
    from edgekit.compiler.importer import import_onnx as shared_import

    mod, weights, _ = shared_import(prepared)
    return mod, weights


def set_num_threads(num_threads: int = 0) -> int:
    """Sets the number of threads TVM's runtime thread pool uses in this process.

    Args:
        num_threads: Threads to use (a board's ``cores``); 0 means every core
            of this machine.

    Returns:
        The number of threads now in use (``runtime.NumThreads``).

    The setup ``edgekit run``/``bench`` use too
    (:func:`edgekit.core.threads.configure_tvm_threads`): the pool is sized
    before it exists, and its threads are not pinned to cores. Call this
    before the first inference of the process.
    """
    from edgekit.core.threads import configure_tvm_threads

    return configure_tvm_threads(num_threads)

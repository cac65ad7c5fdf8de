"""Per-layer int8/fp32 choice for QDQ models compiled for a CPU (issue #14, item 4).

int8 is not faster everywhere: a small layer pays its requantization and the
conversions at its boundary, and a depthwise or tiny model can run slower in
int8 than in fp32. For a QDQ model compiled for a CPU target, :func:`choose`
decides which quantized layers to keep in fp32, and guarantees (within
measurement noise) that the package is never slower than the fp32 build of
the same graph:

1. **Per layer** (``auto``, where the target runs on this machine): each
   quantized layer is cut out as a model of its own (int8 in, int8 out,
   :func:`edgekit.frontend.qdq_graph.layer_subgraph`), built int8 and with the
   layer in float (:func:`~edgekit.frontend.qdq_graph.float_layers`: the
   conversions at its boundary included), and both are timed with TVM's
   ``time_evaluator``, interleaved, 10th percentile of the rounds that other
   processes did not disturb (:mod:`.steady_timing`). Layers of the same shape
   are timed once; the largest layers go first and the phase stops at
   :attr:`~edgekit.compiler.backend.CompileOptions.int8_choice_budget_s`
   (layers not reached stay int8, the report counts them). A layer whose fp32
   time is below its int8 time by more than :data:`LAYER_MARGIN` is kept in
   fp32.
2. **Whole model**: the int8 build, the mixed build (those layers in fp32)
   and the fp32 build of the same graph
   (:func:`~edgekit.frontend.qdq_graph.float_model`) are timed side by side;
   the faster of int8 and mixed is taken, unless the fp32 build is faster
   still, then the whole model is compiled in fp32.

Where load from other processes leaves a measurement unreliable after
re-measuring (:attr:`~.steady_timing.Timing.reliable`), nothing goes to fp32
on its account: such a layer stays int8, a mixed build is not taken, and the
whole model goes to fp32 only if its fp32 build won every round (and on one
thread, :attr:`~.steady_timing.Timing.check`). The manifest's
``int8_choice.noise`` and the report say so, with what to do
(:data:`NOISE_ADVICE`).

A target that cannot run here (another ISA, a CPU with features this one
lacks) is not measured and no cost model is claimed for it: every layer stays
int8 and the report says ``unknown``. Tests inject a :class:`CostProvider`.
``int8_choice="fp32"`` compiles the fp32 build of the same graph, unmeasured,
for timing both precisions on such a board.

Layers kept in fp32 compute in float32: their outputs differ from the QDQ
graph as written by up to that layer's quantization error (they are closer to
the fp32 model). The package's ``model.onnx`` is the graph actually compiled,
so ``edgekit bench --compare-ort`` compares like with like.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Protocol, Sequence

import numpy as np
import onnx

from edgekit.compiler.backend import INT8_CHOICES, BuildResult, ChosenBuild, CompileOptions, ProgressFn
from edgekit.compiler.backends.llvm.pipeline import build as build_llvm
from edgekit.compiler.backends.llvm.steady_timing import (  # interleaved_times: for benchmarks/int8_choice.py
    CONSISTENT_SHARE,
    MIN_REPEAT_MS,
    PERCENTILE,
    REPEAT,
    Timing,
    TimingNoise,
    TimingPolicy,
    interleaved_times,
    steady_times,
)
from edgekit.core import cpu_features
from edgekit.core.errors import CompileError
from edgekit.frontend.legalize import legalize_prepared
from edgekit.frontend.qdq_graph import float_layers, float_model, has_qdq, layer_subgraph, named_nodes, quantized_nodes
from edgekit.package.sections import Section, SectionReader

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target
    from edgekit.frontend.loader import PreparedModel

__all__ = [
    "INT8_CHOICES",
    "LAYER_MARGIN",
    "CostProvider",
    "HostTimer",
    "Int8Choice",
    "LayerCost",
    "LayerProbe",
    "MODEL_POLICY",
    "LAYER_POLICY",
    "NOISE_ADVICE",
    "TIMED_OPS",
    "choose",
    "choose_precision",
    "interleaved_times",
    "ms_texts",
    "runs_here",
    "vm_of_members",
]

logger = logging.getLogger(__name__)

#: Layers timed alone: the ones with weights, whose int8 and fp32 kernels
#: differ. Elementwise layers (Mul, Add, Div, HardSigmoid, ...) are not: the
#: integer lowering merges a chain of them on one int8 tensor into a single
#: table (hard-swish's ``x * hardsigmoid(x)``), which a layer cut out alone
#: cannot show -- PP-OCR cls's hard-swish Mul timed 5x faster in fp32 alone,
#: and the model with those Muls in fp32 ran 1.8x slower than all-int8. They
#: stay int8 unless the whole model goes to fp32.
TIMED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})

#: A layer is kept in fp32 only if its fp32 time is this much below its int8
#: time: closer than that is within the noise of a shared machine.
LAYER_MARGIN = 0.05
#: A mixed build that saves more than this many times what its fp32 layers
#: saved alone (plus :data:`LAYER_MARGIN` of the int8 build) was timed under load.
MIXED_PLAUSIBLE_GAIN = 2.0
#: Interleaved rounds per comparison (the first batch; :mod:`.steady_timing` adds more under load).
ROUNDS = 5
#: Side-by-side measurements on a loaded machine (:mod:`.steady_timing`): a
#: single layer may wait a few seconds for a burst of load to pass (the layer
#: phase's budget bounds them all), a whole-model comparison longer.
LAYER_POLICY = TimingPolicy(rounds=ROUNDS, max_seconds=5.0)
MODEL_POLICY = TimingPolicy(rounds=ROUNDS, max_seconds=20.0)
#: What a user can do when the timing stayed noisy (report and manifest).
NOISE_ADVICE = ("the choice kept int8 where the timing could not tell; for the fastest package recompile on an "
                "idle machine, or choose with --int8-choice int8 or --int8-choice fp32")
#: Significant digits of the times in the manifest (text shows 4 or more, :func:`ms_texts`).
JSON_DIGITS = 6


def _json_ms(value: float | None) -> float | None:
    """A time for the manifest, to :data:`JSON_DIGITS` significant digits:
    four decimals of a millisecond made a 9-us model's builds 0.0091 and 0.0091."""
    return None if value is None else float(f"{float(value):.{JSON_DIGITS}g}")


def _time_text(ms: float, digits: int) -> str:
    value, unit = (ms, "ms") if ms >= 1 else (ms * 1e3, "µs")
    decimals = max(digits - 1 - math.floor(math.log10(value)), 0) if value > 0 else digits - 1
    return f"{value:.{decimals}f} {unit}"


def ms_texts(values: Sequence[float]) -> list[str]:
    """Times (ms) as text, in µs below a millisecond, with 4 significant
    digits or as many more as it takes for times that differ to read
    differently (at three decimals of a millisecond the digits CNN's fp32 and
    int8 builds both read "0.009 ms", the guard's reason saying one was faster)."""
    texts = [_time_text(v, 4) for v in values]
    for digits in range(5, 10):
        if len(set(texts)) == len(set(values)):
            break
        texts = [_time_text(v, digits) for v in values]
    return texts


@dataclass(frozen=True)
class LayerProbe:
    """One quantized layer as a model of its own, in both precisions.

    Attributes:
        node: The layer's node name.
        op_type: Its ONNX operator.
        int8: The layer alone, int8 in and out (QDQ).
        fp32: The same with the layer computing in float.
        work: Relative size used to time the largest layers first.
    """

    node: str
    op_type: str
    int8: onnx.ModelProto
    fp32: onnx.ModelProto
    work: int = 0


@dataclass
class LayerCost:
    """The int8 and fp32 time of one layer and what was kept.

    Attributes:
        node, op_type: The layer.
        int8_ms, fp32_ms: Its time in each precision (None: not measured).
        source: ``measured`` (this machine), ``modeled`` or ``unknown``.
        kept: ``int8`` or ``fp32``.
        reason: Why.
    """

    node: str
    op_type: str
    int8_ms: float | None
    fp32_ms: float | None
    source: str
    kept: str = "int8"
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "int8_ms": _json_ms(self.int8_ms),
                "fp32_ms": _json_ms(self.fp32_ms),
                "source": self.source, "kept": self.kept, "reason": self.reason}  # fmt: skip

    @classmethod
    def from_json(cls, data: Any, *, where: str = "package") -> LayerCost:
        """One entry of the manifest's ``int8_choice.timed_layers``."""
        r = SectionReader(data, "int8_choice.timed_layers[]", where)
        return cls(r.get("node", str), r.get("op_type", str, ""), r.get("int8_ms", float, None, optional=True),
                   r.get("fp32_ms", float, None, optional=True), r.get("source", str, ""), r.get("kept", str, "int8"),
                   r.get("reason", str, ""))  # fmt: skip


class CostProvider(Protocol):
    """Times layers and whole builds in int8 and fp32 (measured or modeled).

    ``source`` is ``measured``, ``modeled`` or ``unknown`` (no costs: every
    layer stays int8). A provider that measures returns a
    :class:`~edgekit.compiler.backends.llvm.steady_timing.Timing`, which says
    whether the times can be relied on (:attr:`Timing.reliable`); plain
    numbers are taken as given (a cost model).
    """

    source: str
    timing: str

    def layer_times(self, probe: LayerProbe) -> "tuple[float, float] | Timing | None":
        """``(int8_ms, fp32_ms)`` of one layer (or their Timing), None when it cannot be timed."""
        ...

    def model_times(self, builds: Mapping[str, BuildResult],
                    prepared: "PreparedModel") -> "Mapping[str, float] | Timing":  # fmt: skip
        """Time (ms) of each whole build, by variant name (``int8``, ``mixed``, ``fp32``), or their Timing."""
        ...


def _as_timing(value: "Mapping[str, float] | Timing") -> Timing:
    """A provider's answer as a :class:`Timing` (numbers given: reliable)."""
    return value if isinstance(value, Timing) else Timing.trusted(value)


@dataclass
class Int8Choice(Section):
    """What :func:`choose` decided; the manifest's ``int8_choice`` (the llvm
    backend's section, read with ``Int8Choice.of(manifest)``).

    Attributes:
        mode: The option (``auto``, ``int8`` or ``fp32``).
        source: ``measured``, ``modeled``, ``unknown`` or ``off`` (modes
            ``int8`` and ``fp32``: nothing measured).
        decision: ``int8`` (every quantized layer int8), ``mixed`` (the
            layers in :attr:`fp32_layers` in fp32) or ``fp32`` (the whole
            model: by the whole-model guard, or asked for).
        reason: One sentence on why.
        layers: Every layer that was timed, with its times and what was kept.
        model_ms: Whole-model times by variant.
        candidates: Quantized layers in the model.
        not_timed: Layers with weights the per-layer phase did not reach
            (budget) or could not cut out; they stay int8.
        elementwise: Quantized layers without weights, never timed alone
            (see :data:`TIMED_OPS`); they stay int8.
        extra_seconds: Compile time the choice added.
        timing: How times were obtained.
        noise: How steady the timings were (load from other processes);
            status ``""`` in packages from before it.
    """

    mode: str
    source: str
    decision: str = "int8"
    reason: str = ""
    layers: list[LayerCost] = field(default_factory=list)
    model_ms: dict[str, float] = field(default_factory=dict)
    candidates: int = 0
    not_timed: int = 0
    elementwise: int = 0
    extra_seconds: float = 0.0
    timing: str = ""
    noise: TimingNoise = field(default_factory=TimingNoise)

    KEY: ClassVar[str] = "int8_choice"

    @property
    def fp32_layers(self) -> list[LayerCost]:
        """Layers compiled in fp32, each with its times and the reason."""
        return [c for c in self.layers if c.kept == "fp32"]

    def in_words(self) -> str:
        """What the choice kept in fp32, in words; "" where every quantized layer stayed int8."""
        if self.decision == "fp32" and self.mode == "fp32":
            return "compiled in fp32 (--int8-choice fp32)"
        if self.decision == "fp32":
            return "compiled in fp32: int8 measured slower on this board (whole-model guard)"
        if self.decision == "mixed":
            return f"compiled with {len(self.fp32_layers)} of {self.candidates} quantized layers in fp32 (faster there)"
        return ""

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "source": self.source,
            "decision": self.decision,
            "reason": self.reason,
            "fp32_layers": [c.to_json() for c in self.fp32_layers],
            "timed_layers": [c.to_json() for c in self.layers],
            "model_ms": {k: _json_ms(v) for k, v in self.model_ms.items()},
            "candidates": self.candidates,
            "not_timed": self.not_timed,
            "elementwise": self.elementwise,
            "extra_seconds": round(self.extra_seconds, 2),
            "timing": self.timing,
            **({"noise": self.noise.to_json()} if self.noise.status else {}),  # measured: how steady
        }

    @classmethod
    def from_json(cls, data: Any, *, where: str = "package") -> Int8Choice:
        """The manifest's ``int8_choice`` (``fp32_layers`` is derived from ``timed_layers``)."""
        r = SectionReader(data, cls.KEY, where)
        model_ms = r.get("model_ms", dict, {})
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in model_ms.values()):
            r.bad("int8_choice.model_ms", "an object of numbers")
        return cls(
            mode=r.get("mode", str, ""), source=r.get("source", str, ""), decision=r.get("decision", str, "int8"),
            reason=r.get("reason", str, ""),
            layers=[LayerCost.from_json(c, where=where) for c in r.get("timed_layers", list, [])],
            model_ms={k: float(v) for k, v in model_ms.items()}, candidates=r.get("candidates", int, 0),
            not_timed=r.get("not_timed", int, 0), elementwise=r.get("elementwise", int, 0),
            extra_seconds=float(r.get("extra_seconds", float, 0.0)), timing=r.get("timing", str, ""),
            noise=TimingNoise.from_json(r.get("noise", dict, {}), where=where),
        )  # fmt: skip


# --------------------------------------------------------------------------- #
# Measuring on this machine
# --------------------------------------------------------------------------- #


def runs_here(target: "Target") -> bool:
    """True when code compiled for ``target`` can run (and be timed) on this machine.

    The ISA must be this machine's, and on x86 every instruction-set
    extension LLVM gives the target's CPU must be present here (code for an
    AVX-512 CPU would stop with an illegal instruction on an AVX2 one):
    :func:`edgekit.core.cpu_features.runs_here`.
    """
    if target.codegen != "llvm" or target.isa.lower() != cpu_features.host_arch():
        return False
    return cpu_features.runs_here(target.tvm_target())


def _random_inputs(specs: Sequence[Any], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for s in specs:
        dt = np.dtype(s.dtype)
        if dt.kind == "f":
            out.append(rng.standard_normal(s.shape).astype(dt))
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            out.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1, s.shape).astype(dt))
        else:
            out.append(np.zeros(s.shape, dtype=dt))
    return out


class HostTimer:
    """Measures on this machine (the target must :func:`runs_here`)."""

    source = "measured"
    timing = (f"TVM time_evaluator on this machine, interleaved rounds of {REPEAT} timings (each >= "
              f"{MIN_REPEAT_MS:g} ms), {PERCENTILE}th percentile of the rounds not disturbed by load "
              f"(CPU pressure or a round > {MODEL_POLICY.tolerance:.0%} above the best); at least "
              f"{MODEL_POLICY.min_clean} of them, re-measured after pauses for up to "
              f"{LAYER_POLICY.max_seconds:g} s (a layer) or {MODEL_POLICY.max_seconds:g} s (the builds)")  # fmt: skip

    def __init__(self, target: "Target", threads: int = 0) -> None:
        self.target = target
        self.threads = threads

    def _vm(self, model: onnx.ModelProto) -> Any:
        import tvm
        from tvm import relax

        from edgekit.compiler.backends.llvm.relax_build import build_cpu
        from edgekit.compiler.importer import import_onnx
        from edgekit.frontend.loader import load_model

        prepared = load_model(model, simplify=False, check=False)
        mod, weights, _ = import_onnx(prepared)
        built = build_cpu(mod, self.target.tvm_target(), weights, num_threads=self.threads)
        vm = relax.VirtualMachine(built.executable, tvm.cpu())
        args = [tvm.runtime.tensor(a) for a in _random_inputs(prepared.inputs)]
        vm.set_input("main", *args, *built.params)
        return vm

    def layer_times(self, probe: LayerProbe) -> Timing | None:
        try:
            vms = {"int8": self._vm(probe.int8), "fp32": self._vm(probe.fp32)}
        except Exception as exc:  # a layer that does not build alone is left int8
            logger.info("int8 choice: layer %s not timed alone (%s)", probe.node, str(exc).splitlines()[0][:200])
            return None
        # An unreliable layer stays int8 whatever one thread says: no check.
        return steady_times(vms, LAYER_POLICY, self.threads, one_thread_check=False)

    def model_times(self, builds: Mapping[str, BuildResult], prepared: "PreparedModel") -> Timing:
        inputs = _random_inputs(prepared.inputs)
        with tempfile.TemporaryDirectory(prefix="edgekit-int8-choice-") as tmp:
            vms = {name: vm_of_members(b.members, inputs, Path(tmp) / f"{name}.so") for name, b in builds.items()}
            return steady_times(vms, MODEL_POLICY, self.threads)


def vm_of_members(members: Mapping[str, bytes], inputs: Sequence[np.ndarray], lib_path: Path) -> Any:
    """A Relax VM of a host package's members (``lib/model.so``, ``params.bin``),
    with ``inputs`` and the weights set for ``invoke_stateful("main")``.
    ``lib_path`` is where the library is written to be loaded."""
    import tvm
    from tvm import relax

    from edgekit.compiler.backends.llvm.host import LIBRARY_MEMBER, PARAMS_MEMBER

    lib_path.write_bytes(members[LIBRARY_MEMBER])
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu())
    params = tvm.runtime.load_param_dict(bytearray(members[PARAMS_MEMBER]))
    vm.set_input("main", *[tvm.runtime.tensor(a) for a in inputs], *[params[k] for k in sorted(params.keys())])
    return vm


class UnknownCost:
    """A target that cannot run here: no times, every layer stays int8."""

    source = "unknown"
    timing = "not measured: the target cannot run on this machine, and no cost model is claimed for it"

    def layer_times(self, probe: LayerProbe) -> tuple[float, float] | None:
        return None

    def model_times(self, builds: Mapping[str, BuildResult], prepared: "PreparedModel") -> dict[str, float]:
        return {}


# --------------------------------------------------------------------------- #
# The choice
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def _lowering_logs_quiet() -> Iterator[None]:
    """The integer lowering logs a summary per build at INFO; the variants'
    and single layers' builds would repeat it dozens of times."""
    log = logging.getLogger("edgekit.compiler.integer.lower")
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def _work(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    """Output elements times weight elements per output channel: MACs for conv/matmul, a size otherwise."""
    infos = {v.name: v for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    inits = {t.name: t for t in model.graph.initializer}

    def numel(dims: Sequence[int]) -> int:
        return int(np.prod([max(int(d), 1) for d in dims], dtype=np.int64)) if dims else 1

    out = infos.get(node.output[0]) if node.output else None
    out_n = numel([d.dim_value for d in out.type.tensor_type.shape.dim]) if out is not None else 1
    weights = [inits[i] for i in node.input if i in inits and len(inits[i].dims) >= 2]
    if weights:
        w = weights[0]
        return out_n * max(numel(w.dims) // max(int(w.dims[0]), 1), 1)
    return out_n


def _signature(sub: onnx.ModelProto) -> tuple[Any, ...]:
    """Layers with equal signatures have the same kernels and cost."""
    g = sub.graph

    def shape(v: onnx.ValueInfoProto) -> tuple[Any, ...]:
        t = v.type.tensor_type
        return (t.elem_type, tuple(d.dim_value for d in t.shape.dim))

    nodes = tuple((n.op_type, tuple(sorted(str(a).replace("\n", " ") for a in n.attribute))) for n in g.node)
    inits = tuple(sorted((t.data_type, tuple(t.dims)) for t in g.initializer))
    return nodes, inits, tuple(shape(v) for v in g.input), tuple(shape(v) for v in g.output)


def _probes(model: onnx.ModelProto, names: Sequence[str]) -> tuple[list[LayerProbe], int]:
    """One probe per layer that can be cut out, largest first; and how many could not."""
    by_name = {n.name: n for n in model.graph.node}
    probes, failed = [], 0
    for name in names:
        sub = layer_subgraph(model, name)
        if sub is None:
            failed += 1
            continue
        node = by_name[name]
        probes.append(LayerProbe(name, node.op_type, sub, float_layers(sub, [name]), _work(model, node)))
    probes.sort(key=lambda p: -p.work)
    return probes, failed


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = width * done // max(total, 1)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


def _time_layers(choice: Int8Choice, probes: Sequence[LayerProbe], cost: CostProvider, budget_s: float,
                 progress: ProgressFn) -> None:  # fmt: skip
    started = time.perf_counter()
    seen: dict[tuple[Any, ...], Timing | None] = {}
    for k, probe in enumerate(probes):
        if time.perf_counter() - started > budget_s:
            choice.not_timed += len(probes) - k
            break
        progress("int8-choice", f"{_bar(k, len(probes))} timing {probe.op_type} {probe.node} in int8 and fp32")
        sig = _signature(probe.int8)
        if sig not in seen:
            times = cost.layer_times(probe)
            seen[sig] = None if times is None else _as_timing(
                times if isinstance(times, Timing) else {"int8": times[0], "fp32": times[1]})
            if seen[sig] is not None:
                choice.noise.add(seen[sig])
        timing = seen[sig]
        if timing is None:
            choice.not_timed += 1
            continue
        t8, t32 = timing.ms["int8"], timing.ms["fp32"]
        entry = LayerCost(probe.node, probe.op_type, t8, t32, cost.source)
        if not timing.reliable:  # a burst of load, not the layer: int8 is the safe side
            entry.reason = (f"timing unreliable (load: slowest round {timing.spread:.1f}x the fastest, "
                            f"{timing.disturbed} of {len(timing.clean)} rounds disturbed), so kept int8")  # fmt: skip
        elif t32 < t8 * (1 - LAYER_MARGIN):
            entry.kept, entry.reason = "fp32", f"fp32 {t8 / t32:.2f}x faster than int8 for this layer alone"
        else:
            entry.reason = "int8 not slower" if t8 <= t32 else f"fp32 faster by less than the {LAYER_MARGIN:.0%} noise margin"
        choice.layers.append(entry)


BuildFn = Callable[["PreparedModel", ProgressFn], BuildResult]


def _all_layers_fp32(choice: Int8Choice, ops: Mapping[str, str], names: Sequence[str]) -> None:
    by_node = {c.node: c for c in choice.layers}
    choice.layers = [by_node.get(n) or LayerCost(n, ops[n], None, None, choice.source) for n in names]
    for c in choice.layers:
        c.kept, c.reason = "fp32", "whole model in fp32 (whole-model guard)"


def _decide(choice: Int8Choice, ops: Mapping[str, str], names: Sequence[str], timing: Timing | None = None) -> None:
    """The faster of int8 and mixed, unless the fp32 build is faster still
    (the whole-model guard); from :attr:`Int8Choice.model_ms`. Where
    ``timing`` is unreliable (load), int8 everywhere unless the fp32 build
    won every round (:func:`_decide_noisy`)."""
    t = choice.model_ms
    if timing is not None and not timing.reliable and "int8" in t:
        _decide_noisy(choice, ops, names, timing)
        return
    fp32_names = [c.node for c in choice.fp32_layers]
    implausible = _implausible_mixed(choice, t)
    best = "mixed" if not implausible and "mixed" in t and t["mixed"] < t.get("int8", float("inf")) else "int8"
    text = dict(zip(t, ms_texts(list(t.values()))))
    if "fp32" in t and t["fp32"] < t.get(best, float("inf")):
        choice.decision = "fp32"
        choice.reason = (f"whole-model guard: the fp32 build ({text['fp32']}) is faster than the "
                         f"{best} build ({text[best]})")  # fmt: skip
        _all_layers_fp32(choice, ops, names)
        return
    times = ", ".join(f"{k} {v}" for k, v in text.items()) or "no other build to compare"
    if best == "mixed":
        choice.decision, choice.reason = "mixed", f"{len(fp32_names)} layer(s) in fp32: {times}"
        return
    choice.decision, choice.reason = "int8", times
    fp32_layers = choice.fp32_layers
    if "mixed" in t:
        why = implausible or "the mixed build measured slower than all-int8"
        choice.reason += f"; {implausible}" if implausible else ""
    elif len(fp32_layers) == len(names) and "fp32" in t:
        why = "the fp32 build measured slower than all-int8"
    else:
        why = "no mixed build was measured"
    for c in fp32_layers:
        c.kept, c.reason = "int8", f"{c.reason}, but {why}"


def _implausible_mixed(choice: Int8Choice, t: Mapping[str, float]) -> str:
    """Why the mixed build's time is load rather than speed, or "": it saved
    more than :data:`MIXED_PLAUSIBLE_GAIN` times what its fp32 layers saved
    alone, plus the noise margin (a loaded YOLOX compile: mixed 24 ms, int8 228 ms)."""
    if "mixed" not in t or "int8" not in t:
        return ""
    alone = sum((c.int8_ms or 0.0) - (c.fp32_ms or 0.0) for c in choice.fp32_layers)
    saved = t["int8"] - t["mixed"]
    if saved <= MIXED_PLAUSIBLE_GAIN * alone + LAYER_MARGIN * t["int8"]:
        return ""
    a, b = ms_texts([saved, alone])
    return (f"the mixed build measured {a} faster than int8, over {MIXED_PLAUSIBLE_GAIN:g}x what its layers "
            f"saved alone ({b}): taken for load, not speed")  # fmt: skip


def _decide_noisy(choice: Int8Choice, ops: Mapping[str, str], names: Sequence[str], timing: Timing) -> None:
    """The whole-model times stayed unreliable: no layer goes to fp32 on their
    account (a mixed build is never taken), and the whole model only where the
    fp32 build beat the int8 build consistently (:meth:`Timing.consistently_faster`)."""
    rounds = len(timing.clean)
    noise = (f"the whole-model timing stayed unreliable under load (slowest round {timing.spread:.1f}x the "
             f"fastest, {timing.disturbed} of {rounds} rounds disturbed)")  # fmt: skip
    if "fp32" in timing.ms and timing.consistently_faster("fp32", "int8", LAYER_MARGIN):
        choice.decision = "fp32"
        choice.reason = (f"whole-model guard: the fp32 build was faster than the int8 build in "
                         f"{CONSISTENT_SHARE:.0%} or more of {rounds} rounds, though {noise}")  # fmt: skip
        _all_layers_fp32(choice, ops, names)
        return
    choice.decision = "int8"
    choice.reason = f"kept int8: {noise}, and int8 is the safe side"
    for c in choice.fp32_layers:
        c.kept, c.reason = "int8", f"{c.reason}, but the whole-model timing was unreliable"


def choose(
    prepared: "PreparedModel",
    board: "Board",
    target: "Target",
    options: CompileOptions,
    build: BuildFn,
    progress: ProgressFn,
    *,
    cost: CostProvider | None = None,
) -> tuple["PreparedModel", BuildResult, Int8Choice]:
    """Builds a QDQ model with the int8/fp32 choice of its layers.

    Args:
        prepared: The prepared QDQ model.
        board, target: Where it will run.
        options: ``int8_choice`` and ``int8_choice_budget_s`` are read.
        build: Builds a prepared model into package members (the backend's
            ``build`` with the board, target and options bound).
        progress: Stage callback; the choice reports as stage ``int8-choice``.
        cost: Cost provider; default :class:`HostTimer` where the target
            :func:`runs_here`, else nothing is measured.

    Returns:
        ``(prepared, result, choice)``: the model actually compiled (its
        ``model`` replaced by the mixed or fp32 graph where chosen), its
        build, and the :class:`Int8Choice` for the manifest. With
        ``int8_choice="fp32"`` that is the fp32 build of the same graph
        (:func:`~edgekit.frontend.qdq_graph.float_model`), and nothing is
        built in int8 or timed.
    """
    if options.int8_choice == "fp32":
        return _all_fp32(prepared, build, progress)
    int8_build = build(prepared, progress)  # legalizes prepared.model in place first
    started = time.perf_counter()
    model = named_nodes(prepared.model)
    names = quantized_nodes(model)
    if options.int8_choice == "int8":
        choice = Int8Choice("int8", "off", "int8", "--int8-choice int8: every quantized layer int8, nothing measured",
                            candidates=len(names))  # fmt: skip
        return prepared, int8_build, choice
    if not names:  # only QuantizeLinear/DequantizeLinear: no layer to choose a precision for
        return prepared, int8_build, Int8Choice(options.int8_choice, "off", "int8", "no quantized compute layers")
    if cost is None:
        cost = HostTimer(target, board.cores) if runs_here(target) else UnknownCost()
    choice = Int8Choice(options.int8_choice, cost.source, candidates=len(names), timing=cost.timing)
    if cost.source == "unknown":
        choice.reason = f"kept int8: {cost.timing}"
        choice.not_timed = len(names)  # nothing measured at all
        return prepared, int8_build, choice

    with _lowering_logs_quiet():
        return _choose_measured(prepared, model, names, choice, cost, options, build, progress, int8_build, started)


def _all_fp32(prepared: "PreparedModel", build: BuildFn,
              progress: ProgressFn) -> tuple["PreparedModel", BuildResult, Int8Choice]:  # fmt: skip
    """``--int8-choice fp32``: every quantized layer in fp32, the graph the
    whole-model guard compiles (range clips dropped, folded activations
    restored: docs/int8-choice.md), for a board where the user times both
    precisions (one that cannot run here)."""
    legalize_prepared(prepared)  # what the int8 build does first: the rewrite reads the legalized graph
    model = named_nodes(prepared.model)
    names = quantized_nodes(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    reason = "--int8-choice fp32: every quantized layer in fp32, nothing measured"
    layers = [LayerCost(n, ops[n], None, None, "off", kept="fp32", reason="--int8-choice fp32") for n in names]
    choice = Int8Choice("fp32", "off", "fp32", reason, layers=layers, candidates=len(names))
    final = replace(prepared, model=float_model(model), notes=[*prepared.notes, f"int8 choice: {reason}"])
    return final, build(final, progress), choice


def choose_precision(
    prepared: "PreparedModel",
    board: "Board",
    target: "Target",
    options: CompileOptions,
    progress: ProgressFn,
    *,
    cost: CostProvider | None = None,
) -> ChosenBuild | None:
    """The llvm backend's precision hook (:class:`~edgekit.compiler.backend.PrecisionChooser`):
    a QDQ model gets :func:`choose` over the backend's own build, with
    ``cost`` as its cost provider; a model without quantized layers has
    nothing to choose (``None``)."""
    if not has_qdq(prepared.model):
        return None

    def build(p: "PreparedModel", prog: ProgressFn) -> BuildResult:
        return build_llvm(p, board, target, options, prog)

    final, result, choice = choose(prepared, board, target, options, build, progress, cost=cost)
    return ChosenBuild(final, result, choice.to_json())


def _model_timing(choice: Int8Choice, cost: CostProvider, builds: Mapping[str, BuildResult],
                  prepared: "PreparedModel") -> Timing | None:  # fmt: skip
    """The whole builds timed side by side (None with only the int8 build), counted in the choice's noise."""
    if len(builds) < 2:
        return None
    timing = _as_timing(cost.model_times(builds, prepared))
    choice.noise.add(timing)
    return timing


def _choose_measured(prepared: "PreparedModel", model: onnx.ModelProto, names: list[str], choice: Int8Choice,
                     cost: CostProvider, options: CompileOptions, build: BuildFn, progress: ProgressFn,
                     int8_build: BuildResult, started: float) -> tuple["PreparedModel", BuildResult, Int8Choice]:  # fmt: skip
    failures: list[str] = []

    def variant(label: str, graph: onnx.ModelProto) -> BuildResult | None:
        def quiet(stage: str, message: str) -> None:
            progress("int8-choice", f"{label}: {stage}: {message}")

        try:
            return build(replace(prepared, model=graph), quiet)
        except CompileError as exc:  # the int8 build stands; the report says what could not be compared
            failures.append(f"the {label} failed ({exc.message[:160]})")
            logger.warning("int8 choice: %s", failures[-1])
            return None

    ops = {n.name: n.op_type for n in model.graph.node}
    timed = [n for n in names if ops[n] in TIMED_OPS]
    choice.elementwise = len(names) - len(timed)
    probes, failed = _probes(model, timed)
    choice.not_timed += failed
    _time_layers(choice, probes, cost, options.int8_choice_budget_s, progress)

    graphs: dict[str, onnx.ModelProto] = {"int8": prepared.model, "fp32": float_model(model)}
    builds: dict[str, BuildResult] = {"int8": int8_build}
    if (result := variant("fp32 build of the same graph", graphs["fp32"])) is not None:
        builds["fp32"] = result
    progress("int8-choice", f"timing the {' / '.join(builds)} builds side by side")
    timing = _model_timing(choice, cost, builds, prepared)
    t = timing.ms if timing is not None else {}
    notes: list[str] = []
    fp32_layers = choice.fp32_layers
    if fp32_layers and len(fp32_layers) < len(names):
        gain = sum((c.int8_ms or 0.0) - (c.fp32_ms or 0.0) for c in fp32_layers)
        if "int8" in t and gain < LAYER_MARGIN * t["int8"]:
            # Within the whole model's noise even if the gains added up: not worth a build.
            saved, whole = ms_texts([gain, t["int8"]])
            notes.append(f"no mixed build: the {len(fp32_layers)} layer(s) faster in fp32 alone save {saved}, "
                         f"under {LAYER_MARGIN:.0%} of the int8 build's {whole}")  # fmt: skip
            for c in fp32_layers:
                c.kept, c.reason = "int8", c.reason + ", but too little in all for a mixed build"
        else:
            graphs["mixed"] = float_layers(model, [c.node for c in fp32_layers])
            if (result := variant(f"mixed build ({len(fp32_layers)} layers fp32)", graphs["mixed"])) is not None:
                builds["mixed"] = result
                progress("int8-choice", f"timing the {' / '.join(builds)} builds side by side")
                timing = _model_timing(choice, cost, builds, prepared)
                t = timing.ms if timing is not None else {}
    choice.model_ms = t
    _decide(choice, ops, names, timing)
    if notes or failures:
        choice.reason += "; " + "; ".join(notes + failures)
    if choice.noise.status == "noisy":
        choice.noise.advice = NOISE_ADVICE
    if noise := choice.noise.in_words():  # a warning where the decision could not rely on the times
        logger.log(logging.WARNING if choice.noise.advice else logging.INFO, "int8 choice: %s",
                   noise + (f"; {choice.noise.advice}" if choice.noise.advice else ""))  # fmt: skip
    choice.extra_seconds = time.perf_counter() - started  # beyond the int8 build itself
    if choice.decision == "int8":
        return prepared, int8_build, choice
    final = replace(prepared, model=graphs[choice.decision],
                    notes=[*prepared.notes, f"int8 choice: {choice.reason}"])  # fmt: skip
    return final, builds[choice.decision], choice

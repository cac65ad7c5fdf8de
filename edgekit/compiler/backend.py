"""Compiler backends: one per code generation path, chosen by ``target.codegen``.

A backend turns a :class:`~edgekit.frontend.loader.PreparedModel` into package
members. Built-in backends are packages under :mod:`edgekit.compiler.backends`
(one folder each) exposing a ``build`` function and ``PASSES``, the named list
of the steps ``build`` runs (:class:`Pass`), and optionally a
``choose_precision`` hook (:class:`PrecisionChooser`) that builds a quantized
model with each layer's precision chosen for the board; they are imported only when used
(TVM is slow to import, and a board's backend may not exist yet). Third
parties register more through the ``edgekit.backends`` entry-point group,
pointing at a module or at a ``build`` function.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Protocol

from edgekit.core.errors import CompileError, ConfigError
from edgekit.core.registry import Registry

if TYPE_CHECKING:
    from edgekit.core.profiles import Board, Target
    from edgekit.frontend.loader import PreparedModel

__all__ = [
    "CompileOptions",
    "BuildResult",
    "Backend",
    "ChosenBuild",
    "PrecisionChooser",
    "build_with_choice",
    "Pass",
    "CHECK_OPERATORS",
    "ProgressFn",
    "BACKENDS",
    "get_backend",
    "backend_passes",
    "format_passes",
    "no_progress",
    "refuse_tuning",
    "check_operators",
    "INT8_CHOICES",
    "WEIGHT_STORAGE",
    "SPARSE_STORAGE_CODEGENS",
    "refuse_weight_storage",
]

logger = logging.getLogger(__name__)

#: Called with ``(stage, message)`` when a compile stage starts. A backend's
#: stages are the names in its ``PASSES`` (and ``int8-choice`` for its
#: precision hook); the driver adds ``load``, ``normalize``, ``check-image``
#: and ``package``.
ProgressFn = Callable[[str, str], None]


def no_progress(stage: str, message: str) -> None:
    """A :data:`ProgressFn` that only logs."""
    logger.debug("%s: %s", stage, message)


def refuse_tuning(options: "CompileOptions", backend: str) -> None:
    """Raises for ``tune_trials > 0`` on a backend that has no tuning yet."""
    if options.tune_trials:
        raise CompileError(
            f"tuning (tune_trials > 0) is not available for {backend} yet",
            hint="Compile without tuning (no --tune).",
        )


def check_operators(prepared: Any, options: "CompileOptions", progress: ProgressFn) -> None:
    """edgekit's whole-model operator scan (every TVM-importing backend runs
    it before importing): first the rules that keep TVM's importer from a
    wrong answer, always; then, unless ``allow_unsupported``, the scan for ops
    it cannot convert."""
    from edgekit.frontend.legalize import legalize_prepared
    from edgekit.frontend.support import check_supported

    progress("check", "checking operator support")
    legalize_prepared(prepared)
    if options.allow_unsupported:
        return
    check_supported(prepared.model)


#: Values of :attr:`CompileOptions.int8_choice` (see :mod:`edgekit.compiler.backends.llvm.int8_choice`).
INT8_CHOICES = ("auto", "int8", "fp32")

#: Values of :attr:`CompileOptions.weight_storage`.
WEIGHT_STORAGE = ("auto", "dense", "sparse")
#: Codegens that can store weights sparse (the ones whose weights sit in an
#: MCU's flash); every other backend keeps weights dense.
SPARSE_STORAGE_CODEGENS = ("aot-c",)


def refuse_weight_storage(options: "CompileOptions", codegen: str, board_name: str) -> None:
    """Raises for ``weight_storage="sparse"`` on a codegen that keeps weights
    dense (``auto`` and ``dense`` mean dense there and are accepted)."""
    if options.weight_storage == "sparse" and codegen not in SPARSE_STORAGE_CODEGENS:
        raise ConfigError(
            f"weight storage 'sparse' is for microcontroller boards (codegen {', '.join(SPARSE_STORAGE_CODEGENS)}); "
            f"board '{board_name}' uses codegen {codegen}, which loads weights dense into RAM",
            hint="Drop --weight-storage (or use auto/dense) for this board; pick an MCU board such as rv32-mcu-sim "
            "to store pruned weights sparse.",
            codegen=codegen,
            board=board_name,
        )


@dataclass(frozen=True)
class CompileOptions:
    """Options every backend understands.

    Attributes:
        opt_level: TVM ``PassContext`` optimisation level, 0 to 3.
        tune_trials: MetaSchedule trials (0 = untuned).
        tune_tracker: ``HOST:PORT`` of a TVM RPC tracker that tuning measures
            the board through ("" = the profile's, or this machine).
        tune_key: Key of the board's RPC servers ("" = the profile's rpc_key or the board name).
        allow_unsupported: Skip edgekit's operator scan and let TVM try anyway.
        weight_storage: How an ``aot-c`` package stores weights in flash:
            ``auto`` — bitmask-sparse for each weight where that is smaller,
            unless the decode buffers make the arena exceed the board's RAM
            (then all dense); ``dense`` — as the kernels read them;
            ``sparse`` — sparse where smaller, and an error if RAM then does
            not fit. Other codegens store weights dense and refuse ``sparse``.
        mcu_int8_kernels: ``aot-c`` only: run int8 conv2d / depthwise /
            matmul layers on edgekit's hand-written C kernels
            (``firmware_stubs/nn``) instead of TVM's loop nests.
        int8_choice: ``llvm`` (CPU) boards, QDQ models: ``auto`` keeps a
            quantized layer -- or the whole model -- in fp32 where that
            measured faster on the target (only where the target runs on
            this machine; see :mod:`edgekit.compiler.backends.llvm.int8_choice`);
            ``int8`` keeps every quantized layer int8, unmeasured; ``fp32``
            compiles every quantized layer in fp32 (the fp32 build of the
            same graph, to time both precisions on a board that cannot be
            measured here). Backends without the choice refuse ``fp32`` for
            a QDQ model (:func:`build_with_choice`).
        int8_choice_budget_s: Seconds ``auto`` may spend timing single
            layers (the whole-model comparison comes on top); 0 = only the
            whole-model comparison.
    """

    opt_level: int = 3
    tune_trials: int = 0
    tune_tracker: str = ""
    tune_key: str = ""
    allow_unsupported: bool = False
    weight_storage: str = "auto"
    mcu_int8_kernels: bool = True
    int8_choice: str = "auto"
    int8_choice_budget_s: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.opt_level, bool) or not isinstance(self.opt_level, int) or not 0 <= self.opt_level <= 3:
            raise ConfigError(f"opt_level must be 0, 1, 2 or 3, got {self.opt_level!r}", hint="Use 3 unless debugging.")
        if isinstance(self.tune_trials, bool) or not isinstance(self.tune_trials, int) or self.tune_trials < 0:
            raise ConfigError(f"tune_trials must be a non-negative integer, got {self.tune_trials!r}", hint="Use 0 for no tuning.")
        if self.weight_storage not in WEIGHT_STORAGE:
            raise ConfigError(
                f"weight_storage must be one of {', '.join(WEIGHT_STORAGE)}, got {self.weight_storage!r}",
                hint="Use auto unless you need to force dense or sparse weights.",
            )
        if self.int8_choice not in INT8_CHOICES:
            raise ConfigError(
                f"int8_choice must be one of {', '.join(INT8_CHOICES)}, got {self.int8_choice!r}",
                hint="Use auto (keep a layer in fp32 where that measured faster), int8 (every quantized layer int8) "
                "or fp32 (every quantized layer fp32).",
            )
        budget = self.int8_choice_budget_s
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0:
            raise ConfigError(f"int8_choice_budget_s must be a number of seconds >= 0, got {budget!r}",
                              hint="E.g. 30; 0 times only the whole model.")

    def to_json(self) -> dict[str, Any]:
        """The form recorded in the manifest's ``options``."""
        return asdict(self)


@dataclass
class BuildResult:
    """What a backend produced.

    Attributes:
        members: Package member name -> bytes (``model.onnx`` and
            ``manifest.json`` are added by the driver).
        runtime: Runtime that executes the members (``tvm-vm``, ``aot-c`` ...);
            selects the runner in :func:`edgekit.runtime.runner.open_runner`.
        memory: ``arena_bytes``, ``weight_bytes``, ``code_bytes`` (and more if known).
        extra_manifest: Backend-specific manifest keys.
    """

    members: dict[str, bytes]
    runtime: str
    memory: dict[str, int] = field(default_factory=dict)
    extra_manifest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pass:
    """One step of a backend's pipeline, as data (docs and users print the lists).

    Attributes:
        name: The stage the step reports to :data:`ProgressFn` (``compile``
            shows it); steps of one backend have distinct names.
        summary: What the step does, in one line.
        function: Where it is implemented, ``module:qualified_name``.
        when: When the step runs ("" = always).
    """

    name: str
    summary: str
    function: str
    when: str = ""

    def describe(self) -> str:
        """One line: name, summary, condition and function."""
        when = f" (when {self.when})" if self.when else ""
        return f"{self.name:<8} {self.summary}{when}  [{self.function}]"


#: The operator scan every TVM-importing backend runs first (:func:`check_operators`).
CHECK_OPERATORS = Pass(
    "check", "edgekit's operator scan: rules that keep TVM's importer right, then every unsupported op in one error",
    "edgekit.compiler.backend:check_operators",
)


def format_passes(passes: "tuple[Pass, ...]") -> str:
    """A numbered, printable list of ``passes``."""
    return "\n".join(f"{i:2d}. {p.describe()}" for i, p in enumerate(passes, 1))


class Backend(Protocol):
    """A code generation path (a module with a ``build`` function satisfies it)."""

    def build(
        self,
        prepared: "PreparedModel",
        board: "Board",
        target: "Target",
        options: CompileOptions,
        progress: ProgressFn,
    ) -> BuildResult:
        """Compiles ``prepared`` for ``board`` and returns the package members."""
        ...


@dataclass(frozen=True)
class ChosenBuild:
    """A build, with the precision its backend chose for the model's layers.

    Attributes:
        prepared: The model actually compiled (a precision hook may have put a
            layer, or the whole model, back in float).
        result: Its build.
        choice: What was chosen and why, the manifest's ``int8_choice`` (JSON);
            ``None`` where the backend had no choice to make.
    """

    prepared: "PreparedModel"
    result: BuildResult
    choice: dict[str, Any] | None = None


class PrecisionChooser(Protocol):
    """A backend's optional precision hook (a module-level ``choose_precision``
    function satisfies it); the llvm backend's decides int8 or fp32 per layer."""

    def choose_precision(
        self,
        prepared: "PreparedModel",
        board: "Board",
        target: "Target",
        options: CompileOptions,
        progress: ProgressFn,
        *,
        cost: Any = None,
    ) -> ChosenBuild | None:
        """Builds ``prepared`` with each layer's precision chosen for ``board``,
        or returns ``None`` when there is nothing to choose for this model
        (the driver then calls ``build``). ``cost`` is the caller's cost model,
        for boards that are not attached (the backend documents its type)."""
        ...


def build_with_choice(
    backend: Backend,
    prepared: "PreparedModel",
    board: "Board",
    target: "Target",
    options: CompileOptions,
    progress: ProgressFn,
    *,
    cost: Any = None,
) -> ChosenBuild:
    """``backend``'s build, through its ``choose_precision`` hook where it has one.

    Raises:
        ConfigError: ``int8_choice="fp32"`` for a QDQ model on a backend
            without the hook: it compiles quantized layers as they are, and
            would silently build int8.
    """
    hook = getattr(backend, "choose_precision", None)
    if options.int8_choice == "fp32" and not callable(hook):
        _refuse_fp32_choice(prepared, board, target)
    chosen = hook(prepared, board, target, options, progress, cost=cost) if callable(hook) else None
    if chosen is not None:
        return chosen
    return ChosenBuild(prepared, backend.build(prepared, board, target, options, progress))


def _refuse_fp32_choice(prepared: "PreparedModel", board: "Board", target: "Target") -> None:
    from edgekit.frontend.qdq_graph import has_qdq

    if not has_qdq(prepared.model):  # already fp32: nothing to put back in float
        return
    raise ConfigError(
        f"--int8-choice fp32 is for CPU boards (codegen llvm); board '{board.name}' uses codegen {target.codegen}, "
        "which compiles a quantized model's layers as they are",
        hint="Compile the fp32 model for this board instead (the one the int8 model was quantized from), "
        "or drop --int8-choice.",
        board=board.name,
        codegen=target.codegen,
    )


#: codegen -> module path of its backend (or a registered backend object).
BACKENDS: Registry[Any] = Registry("backend", CompileError)  # type: ignore[arg-type]
BACKENDS.register("llvm", "edgekit.compiler.backends.llvm")
BACKENDS.register("aot-c", "edgekit.compiler.backends.aot_c")
BACKENDS.register("cuda", "edgekit.compiler.backends.cuda")
BACKENDS.register("npu", "edgekit.compiler.backends.npu")


class _FunctionBackend:
    """Adapts a bare ``build`` function registered by a plugin."""

    def __init__(self, fn: Callable[..., BuildResult]) -> None:
        self.build = fn


def get_backend(codegen: str, board_name: str = "") -> Backend:
    """Returns the backend for ``codegen``.

    Raises:
        CompileError: for an unknown codegen, or one whose backend is not
            available (yet) in this installation.
    """
    entry = BACKENDS.get(codegen)
    if isinstance(entry, str):
        try:
            entry = importlib.import_module(entry)
        except ModuleNotFoundError as exc:
            if exc.name != entry:
                raise
            who = f"board '{board_name}'" if board_name else "this target"
            raise CompileError(
                f"compiling for {who} (codegen {codegen}) is not available yet",
                hint="Choose a board whose target uses another codegen (`edgekit boards` lists them), e.g. --board host.",
                codegen=codegen,
            ) from None
    if isinstance(entry, ModuleType) or hasattr(entry, "build"):
        if not callable(getattr(entry, "build", None)):
            raise CompileError(f"backend for codegen {codegen} has no build function", hint="Report this as a bug.")
        return entry  # type: ignore[return-value]
    if callable(entry):
        return _FunctionBackend(entry)
    raise CompileError(f"backend for codegen {codegen} is not usable ({type(entry).__name__})", hint="Check the plugin.")


def backend_passes(codegen: str) -> "tuple[Pass, ...]":
    """The named pass list of ``codegen``'s backend (empty for a backend that declares none)."""
    return tuple(getattr(get_backend(codegen), "PASSES", ()))

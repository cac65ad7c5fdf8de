"""Compression recipes: a reviewable file that chains compression steps.

A recipe is TOML (or YAML) with one table per step, run in order::

    # recipe.toml
    [[steps]]
    type = "prune-structured"
    ratio = 0.3
    criterion = "l1"

    [[steps]]
    type = "recover"
    method = "refit"

    [[steps]]
    type = "low-rank"
    method = "svd"
    rank_energy = 0.9

    [[steps]]
    type = "quantize"
    max_drop = 1.0

Step types: ``prune`` (unstructured), ``prune-nm``, ``prune-structured``,
``low-rank``, ``recover`` and ``quantize``. Every key other than ``type`` is a
field of the step's configuration dataclass, validated when the recipe loads,
so a typo fails before any work is done — with the file and the key named.

The ``quantize`` step calls :func:`edgekit.compress.quantize.quantize` through
:class:`QuantizeStep`, a small adapter; tests (or a third party) can register
another implementation under the same name in :data:`STEP_TYPES`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import onnx

from edgekit.core.errors import ConfigError
from edgekit.core.registry import Registry
from edgekit.compress.distillation import DistillConfig
from edgekit.compress.lowrank import LowRankConfig, LowRankPass
from edgekit.compress.passes import CompressionPass, PassContext, PassResult, PipelineResult, run_pipeline
from edgekit.compress.prune import NMConfig, NMPrunePass, PruneConfig, UnstructuredPrunePass
from edgekit.compress.layer_recovery import RecoveryConfig
from edgekit.compress.recovery import RECOVERY_METHODS, RecoveryPass
from edgekit.compress.structured import StructuredConfig, StructuredPrunePass

__all__ = [
    "Recipe",
    "StepBuilder",
    "STEP_TYPES",
    "QuantizeStep",
    "load_recipe",
    "parse_recipe",
    "run_recipe",
]

logger = logging.getLogger(__name__)

#: Builds a pass from a step's keys (``type`` removed); ``where`` names the
#: step in error messages (``recipe.toml, steps[2]``).
StepBuilder = Callable[[Mapping[str, Any], str], CompressionPass]

#: Step type -> builder. Third parties add types through the
#: ``edgekit.compression_steps`` entry-point group.
STEP_TYPES: Registry[StepBuilder] = Registry("compression_step")


def _make_config(cls: type, params: Mapping[str, Any], where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            hint=f"Keys of this step: type, {', '.join(sorted(fields))}.",
            where=where,
            keys=unknown,
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}", hint=exc.hint, where=where) from None
    except TypeError as exc:  # wrong value types the dataclass could not take
        raise ConfigError(f"{where}: {exc}", hint="Check the values' types.", where=where) from None


def _simple(cls: type, pass_cls: type) -> StepBuilder:
    def build(params: Mapping[str, Any], where: str) -> CompressionPass:
        return pass_cls(_make_config(cls, params, where))

    return build


def _nm(params: Mapping[str, Any], where: str) -> CompressionPass:
    params = dict(params)
    pattern = params.pop("pattern", None)
    if pattern is not None:
        try:
            base = NMConfig.parse(str(pattern))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}", hint=exc.hint, where=where) from None
        params.setdefault("n", base.n)
        params.setdefault("m", base.m)
    return NMPrunePass(_make_config(NMConfig, params, where))


def _recover(params: Mapping[str, Any], where: str) -> CompressionPass:
    params = dict(params)
    method = params.pop("method", "refit")
    if method not in RECOVERY_METHODS:
        raise ConfigError(
            f"{where}: unknown recovery method {method!r}",
            hint=f"Choose one of: {', '.join(RECOVERY_METHODS)}.",
            where=where,
        )
    cls = DistillConfig if method == "distill" else RecoveryConfig
    return RecoveryPass(method, _make_config(cls, params, where))


class QuantizeStep(CompressionPass):
    """Recipe step ``quantize``: the adapter in front of
    :func:`edgekit.compress.quantize.quantize` (int8 QDQ with accuracy
    control). The keys are :class:`edgekit.compress.config.QuantConfig`
    fields; calibration data comes from the pipeline context.
    """

    name = "quantize"

    def __init__(self, params: Mapping[str, Any], where: str = "quantize step") -> None:
        from edgekit.compress.config import QuantConfig

        self.config = _make_config(QuantConfig, params, where)

    def describe(self) -> dict[str, Any]:
        to_json = getattr(self.config, "to_json", None)
        return to_json() if callable(to_json) else dataclasses.asdict(self.config)

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        from edgekit.compress.quantize import quantize

        if ctx.calibration is None:
            raise ConfigError(
                "the quantize step needs calibration data",
                hint="Pass --calibration CAL.npz (one array per model input, first axis = samples).",
            )
        result = quantize(model, self.config, calibration=ctx.calibration, board=ctx.board)
        report = result.report.to_json() if hasattr(result.report, "to_json") else {}
        notes = [f"kept in float: {', '.join(result.fallback_layers)}"] if result.fallback_layers else []
        return PassResult(result.model, True, {"quality": report}, notes)


STEP_TYPES.register("prune", _simple(PruneConfig, UnstructuredPrunePass))
STEP_TYPES.register("prune-nm", _nm)
STEP_TYPES.register("prune-structured", _simple(StructuredConfig, StructuredPrunePass))
STEP_TYPES.register("low-rank", _simple(LowRankConfig, LowRankPass))
STEP_TYPES.register("recover", _recover)
STEP_TYPES.register("quantize", lambda params, where: QuantizeStep(params, where))


@dataclasses.dataclass
class Recipe:
    """A parsed recipe: the passes in order and where they came from.

    Attributes:
        steps: The passes.
        source: File the recipe was read from ("" for in-memory recipes).
    """

    steps: list[CompressionPass]
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form (for reports)."""
        return {"source": self.source, "steps": [{"type": s.name, **s.describe()} for s in self.steps]}


def parse_recipe(data: Mapping[str, Any], source: str = "") -> Recipe:
    """Builds a :class:`Recipe` from parsed TOML/YAML data.

    Args:
        data: A mapping with a ``steps`` list of tables, each with ``type``.
        source: Name of the file, for error messages.

    Raises:
        ConfigError: a step is malformed, of an unknown type, or has a bad
            key or value (the message names the file, the step and the key).
    """
    where0 = source or "recipe"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where0}: a recipe must be a table with a 'steps' list", hint="See docs/pruning.md.")
    extra = sorted(set(data) - {"steps"})
    if extra:
        raise ConfigError(f"{where0}: unknown top-level key(s) {', '.join(extra)}", hint="A recipe has only [[steps]].")
    steps = data.get("steps")
    if not isinstance(steps, Sequence) or isinstance(steps, str) or not steps:
        raise ConfigError(
            f"{where0}: no steps", hint='Add [[steps]] tables, each with type = "..." (see docs/pruning.md).'
        )
    passes: list[CompressionPass] = []
    for i, step in enumerate(steps):
        where = f"{where0}, steps[{i}]"
        if not isinstance(step, Mapping) or "type" not in step:
            raise ConfigError(f"{where}: a step needs a 'type'", hint=f"One of: {', '.join(STEP_TYPES.available())}.")
        params = {k: v for k, v in step.items() if k != "type"}
        try:
            builder = STEP_TYPES.get(str(step["type"]))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}", hint=exc.hint, where=where) from None
        passes.append(builder(params, where))
    return Recipe(passes, source)


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Reads a recipe file (``.toml``, or ``.yaml``/``.yml`` when PyYAML is
    installed).

    Raises:
        ConfigError: the file is missing, unparsable or invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe file '{p}' does not exist", hint="Check the --recipe path.")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"'{p}' is YAML, but PyYAML is not installed", hint="pip install pyyaml, or write TOML."
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"'{p}' is not valid YAML ({exc})", hint="Fix the syntax.") from None
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"'{p}' is not valid TOML ({exc})", hint="Fix the syntax.") from None
    return parse_recipe(data or {}, str(p))


def run_recipe(
    model: onnx.ModelProto,
    recipe: Recipe | str | os.PathLike[str],
    ctx: PassContext | None = None,
) -> PipelineResult:
    """Runs a recipe (or recipe file) on ``model``; see :func:`run_pipeline`."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    return run_pipeline(model, recipe.steps, ctx)

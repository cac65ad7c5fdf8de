"""What each compression step buys on a board: the "what paid off" tables of
BENCHMARKS.md.

For every model, each compression pipeline starts from the same fp32 model
and is compiled and benchmarked with :func:`edgekit.api.payoff.measure_payoffs`
(all packages of one model timed in the same interleaved rounds on the host;
deterministic cycle counts on the simulated MCU)::

    .venv/bin/python benchmarks/compression.py --out /tmp/compression.md --json /tmp/compression.json

Run it from a snapshot of the tree (``git archive HEAD | tar -x -C DIR``,
then ``PYTHONPATH=DIR``) when files may change during the run: the
hand-written kernels are TVMScript, parsed from their source file when a
model is compiled, and a file edited after the import fails the build
("Function must be decorated").

Models (all from wheels, nothing downloaded):

* ``digits``: the digits CNN shipped with edgekit (trained on scikit-learn's
  digits); top-1 on the 450 held-out test images, calibration on the
  training images.
* ``ppocr-cls``: PP-OCR's text-angle classifier from the rapidocr wheel (real
  weights, 1x3x48x192). No images ship with it, so calibration and fidelity
  use seeded uniform noise in [-1, 1] (its normalised input range): the
  fidelity column compares with the fp32 model on those inputs, not accuracy.
* ``squeezenet``: SqueezeNet 1.0 from the onnx wheel's "light" models, whose
  placeholder weights are replaced by seeded He-scaled random ones; fidelity
  against fp32 on seeded normal inputs.

Boards: ``host-1core`` (this machine's CPU, one thread: the profile is
written to a temporary folder; on a shared 2-core machine a 2-thread TVM pool
measured scheduler waits, not kernels) for all; ``rv32-mcu-sim`` (512 KiB RAM, 2 MiB flash) for
models that fit it (``--mcu-models``; SqueezeNet never does: 4.8 MiB of
weights and multi-MiB activations).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.compress.passes import PassContext
from edgekit.api.payoff import measure_payoffs
from edgekit.compress.payoff import StagedResult, run_staged
from edgekit.compress.recipe import parse_recipe
from edgekit.frontend.loader import load_model

logger = logging.getLogger("benchmarks.compression")

STRUCTURED = {"type": "prune-structured", "ratio": 0.3}
# Channel counts that stay multiples of 4 need no channel pad before the
# host's int8 convolutions (4 input channels per dot-product step): PP-OCR cls
# pruned 30 %, int8, ran 0.86x the unpruned int8 model with round_to 4 and
# 0.97x with round_to 1 (Zen 5, one thread, 2026-12-06).
STRUCTURED4 = {"type": "prune-structured", "ratio": 0.3, "round_to": 4}
REFIT = {"type": "recover", "method": "refit"}
UNSTRUCTURED = {"type": "prune", "sparsity": 0.5}
LOW_RANK = {"type": "low-rank", "method": "auto", "rank_energy": 0.9}
INT8 = {"type": "quantize"}


def pipelines(refit: bool) -> dict[str, list[dict[str, Any]]]:
    """Pipeline name -> recipe steps. Each starts from fp32."""
    structured = [STRUCTURED, REFIT] if refit else [STRUCTURED]
    structured4 = [STRUCTURED4, REFIT] if refit else [STRUCTURED4]
    return {
        "structured 30 %" + (" + refit" if refit else ""): structured,
        "structured 30 %, round_to 4" + (" + refit" if refit else ""): structured4,
        "unstructured 50 %": [UNSTRUCTURED],
        "low-rank (energy 0.9)": [LOW_RANK],
        "int8": [INT8],
        # int8 of the pruned model, without low-rank: its latency against the
        # "int8" row's says whether pruned channel counts still pay in int8.
        "structured 30 %" + (" + refit" if refit else "") + " + int8": [*structured, INT8],
        "recipe": [*structured4, LOW_RANK, INT8],
    }


class Model:
    """A model with its calibration and evaluation data."""

    def __init__(self, name: str, model: onnx.ModelProto, calibration: dict[str, np.ndarray],
                 eval_data: dict[str, np.ndarray], labels: np.ndarray | None, refit: bool, max_eval: int) -> None:  # fmt: skip
        self.name = name
        self.model = model
        self.calibration = calibration
        self.eval_data = eval_data
        self.labels = labels
        self.refit = refit
        self.max_eval = max_eval


def digits_model() -> Model:
    from edgekit.examples import digits

    data = digits.load_digits_data(seed=0)  # the split the shipped model was trained on
    model = load_model(str(digits.example_model_path())).model
    return Model("digits CNN (trained, sklearn digits)", model, {"input": data.x_train}, {"input": data.x_test},
                 data.y_test, refit=True, max_eval=len(data.x_test))  # fmt: skip


def _static_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    # The PP-OCR export writes its batch dimension as dim_value -1, which the
    # loader refuses; a symbolic dimension says what the exporter meant.
    for vi in [*model.graph.input, *model.graph.output]:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                d.Clear()
                d.dim_param = "batch"
    return model


def ppocr_model() -> Model:
    import rapidocr

    path = Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
    model = load_model(_static_dims(onnx.load(str(path))), {"x": (1, 3, 48, 192)}).model
    rng = np.random.default_rng(0)
    cal = rng.uniform(-1, 1, (64, 3, 48, 192)).astype(np.float32)
    ev = rng.uniform(-1, 1, (64, 3, 48, 192)).astype(np.float32)
    return Model("PP-OCR cls (real weights, 48x192)", model, {"x": cal}, {"x": ev}, None, refit=False, max_eval=64)


def randomize(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """He-scaled random weights in place of the light models' placeholders."""
    rng = np.random.default_rng(seed)
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        for slot, name in enumerate(node.input):
            if slot == 0 or name not in inits:
                continue
            w = numpy_helper.to_array(inits[name])
            if w.dtype != np.float32 or w.size < 2:
                continue
            if node.op_type in ("Conv", "Gemm", "MatMul") and slot == 1:
                value = rng.standard_normal(w.shape) * np.sqrt(2.0 / max(1, int(np.prod(w.shape[1:]))))
            else:
                value = 0.1 * rng.standard_normal(w.shape)
            inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    return model


def squeezenet_model() -> Model:
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
    prepared = load_model(str(path))
    model = randomize(prepared.model)
    name = model.graph.input[0].name
    shape = tuple(int(d.dim_value) for d in model.graph.input[0].type.tensor_type.shape.dim)
    rng = np.random.default_rng(0)
    cal = rng.standard_normal((16, *shape[1:])).astype(np.float32)
    ev = rng.standard_normal((16, *shape[1:])).astype(np.float32)
    return Model("SqueezeNet 1.0 (light, seeded random weights)", model, {name: cal}, {name: ev}, None,
                 refit=False, max_eval=16)  # fmt: skip


MODELS: dict[str, Callable[[], Model]] = {
    "digits": digits_model,
    "ppocr-cls": ppocr_model,
    "squeezenet": squeezenet_model,
}


def run_pipelines(m: Model) -> dict[str, StagedResult]:
    out = {}
    for name, steps in pipelines(m.refit).items():
        started = time.perf_counter()
        recipe = parse_recipe({"steps": steps}, f"{m.name}: {name}")
        out[name] = run_staged(m.model, recipe.steps, PassContext(calibration=m.calibration), fidelity=False)
        logger.info("%s / %s compressed in %.1f s", m.name, name, time.perf_counter() - started)
    return out


def write_host_1core(folder: Path) -> Path:
    """Writes a ``host-1core`` board profile: ``host`` with one thread."""
    from edgekit.core.resources import data_dir

    text = (data_dir("board_configs") / "host.toml").read_text(encoding="utf-8")
    text = text.replace('name = "host"', 'name = "host-1core"', 1)
    text = "\n".join("cores = 1" if line.startswith("cores") else line for line in text.splitlines()) + "\n"
    path = folder / "host-1core.toml"
    path.write_text(text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--boards", default="host-1core,rv32-mcu-sim")
    parser.add_argument("--mcu-models", default="digits", help="models also measured on rv32-mcu-sim")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the Markdown tables here")
    parser.add_argument("--json", type=Path, help="write the full reports here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    board_dir = Path(tempfile.mkdtemp(prefix="edgekit-boards-"))
    write_host_1core(board_dir)
    mcu_models = set(args.mcu_models.split(",")) if args.mcu_models else set()
    sections, reports = [], []
    for key in args.models.split(","):
        m = MODELS[key]()
        staged = run_pipelines(m)
        for board in args.boards.split(","):
            if not board.startswith("host") and key not in mcu_models:
                logger.info("skipping %s on %s (see --mcu-models)", key, board)
                continue
            started = time.perf_counter()
            report = measure_payoffs(staged, board, rounds=args.rounds, runs=args.runs, eval_data=m.eval_data,
                                     labels=m.labels, max_eval=m.max_eval, model_name=m.name,
                                     board_dirs=[board_dir])  # fmt: skip
            logger.info("%s on %s measured in %.0f s", key, board, time.perf_counter() - started)
            sections.append(report.to_markdown())
            reports.append(report.to_json())
            print(sections[-1], flush=True)
    text = "\n".join(sections)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

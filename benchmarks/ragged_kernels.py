"""The pad and pool kernels of the structured-pruned digits CNN in int8, each timed alone (#14 item 6).

``benchmarks/compression.py`` times whole models; the digits CNN runs ten
kernels of well under a microsecond, so a kernel that a ragged channel count
makes slower (12 channels instead of 16, 23 instead of 32) is a few percent
of the model and drowns in the VM's per-call cost. This script quantizes the
shipped digits CNN unpruned and pruned 30 % (``round_to`` 1: 12/23/12/23
channels, or ``--round-to``), compiles each int8 model for ``--mcpu``, builds
every kernel whose name matches ``--kernels`` alone (``tvm.tirx.build``) and
times them with ``time_evaluator`` (``--number`` calls per round) in
interleaved rounds, the order reversed every other round; it prints the 10th
percentile and median per kernel, in microseconds, with the kernel's input
and output shapes. One thread (the kernels' parallel loops run on the
calling thread's pool of one).

Usage::

    .venv/bin/python benchmarks/ragged_kernels.py --mcpu znver4 [--kernels 'pad|pool'] [--round-to 1]
        [--rounds 15] [--number 2000]

Run it from a snapshot (``git archive``) of each tree to compare two commits.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quantization import cpu_description, runnable_target  # noqa: E402

from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes, set_num_threads  # noqa: E402
from edgekit.compiler.importer import import_onnx  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402


def int8_models(folder: Path, round_to: int) -> dict[str, str]:
    """The digits CNN quantized (calibrated on its training split): unpruned, and pruned 30 % with ``round_to``."""
    import onnx

    from edgekit.compress.passes import PassContext
    from edgekit.compress.payoff import run_staged
    from edgekit.compress.structured import StructuredConfig, StructuredPrunePass
    from edgekit.examples import digits

    data = digits.load_digits_data(seed=0)
    cal = {"input": data.x_train[:256]}
    model = load_model(str(digits.example_model_path())).model
    pruned = run_staged(model, [StructuredPrunePass(StructuredConfig(ratio=0.3, round_to=round_to))],
                        PassContext(calibration=cal)).model  # fmt: skip
    out = {}
    for name, fp32 in (("unpruned", model), (f"pruned-{round_to}", pruned)):
        src = folder / f"{name}.onnx"
        onnx.save(fp32, str(src))
        out[name] = str(quantize(str(src), QuantConfig(), calibration=cal).save(folder / f"{name}-int8.onnx"))
    return out


def kernels(path: str, target, pattern: str) -> dict[str, tuple]:
    """``name -> (runtime module, arguments, shapes)`` for every scheduled kernel of ``path`` matching ``pattern``."""
    import tvm

    prepared, _ = prepare_cpu_module(import_onnx(load_model(path))[0], target)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(target))(prepared)
    rng = np.random.default_rng(0)
    out = {}
    for gv, func in scheduled.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or not re.search(pattern, gv.name_hint):
            continue
        lib = tvm.tirx.build(tvm.IRModule({"k": func.with_attr("global_symbol", "k")}), target)
        args, shapes = [], []
        for buf in func.params:  # TVM 0.27: a PrimFunc's parameters are its buffers
            shape, dtype = tuple(int(s) for s in buf.shape), str(buf.dtype)
            value = rng.integers(-100, 100, shape) if "int" in dtype else rng.standard_normal(shape)
            args.append(tvm.runtime.tensor(value.astype(dtype)))
            shapes.append(f"{'x'.join(map(str, shape))} {dtype}")
        out[gv.name_hint] = (lib, args, " -> ".join(shapes))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mcpu", required=True, help="LLVM CPU to compile for (its code must run here)")
    parser.add_argument("--kernels", default="pad|pool", help="regular expression: which kernels to time")
    parser.add_argument("--round-to", type=int, default=1, help="structured pruning's channel multiple")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=2000, help="calls per round (time_evaluator's number)")
    args = parser.parse_args(argv)

    import tvm

    set_num_threads(1)
    target = runnable_target(args.mcpu)
    found: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-ragged-") as tmp:
        for model, path in int8_models(Path(tmp), args.round_to).items():
            found.update({f"{model}:{name}": k for name, k in kernels(path, target, args.kernels).items()})
    names = list(found)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            lib, call_args, _ = found[name]
            timer = lib.time_evaluator("k", tvm.cpu(), number=args.number, repeat=1)
            times[name].append(timer(*call_args).mean * 1e6)
    print(f"CPU: {cpu_description()}; code for {args.mcpu}; one thread; {args.rounds} rounds x {args.number} calls")
    print("| kernel | shapes | p10 us | median us |")
    print("|---|---|---:|---:|")
    for name in names:
        t = np.asarray(times[name])
        print(f"| {name} | {found[name][2]} | {np.percentile(t, 10):.4f} | {np.median(t):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

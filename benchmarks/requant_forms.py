"""What the half-up requantization form saves on the CPUs that keep the int64 fixed point (issue #14).

x86 hosts requantize in float32 (``compiler/backends/llvm/requant.py``);
every other CPU target -- aarch64 (raspberry-pi-4, Cortex-A72) and riscv64
(visionfive2, SiFive U74) -- runs the integer lowering's int64 form. That
form rounds half to even with ``(x + 2**(n-1) - 1 + ((x >> n) & 1)) >> n``
on layers whose products can tie, and half up, ``(x + 2**(n-1)) >> n``,
where none can (``core.fixedpoint.ties_possible``: the same value, three
int64 operations fewer per element). This script compiles each model twice
for each board -- "before": every layer half to even, as the lowering did
until 2026-12-06 (``ties_possible`` patched to True), "after": the lowering
as it is -- and counts instructions, never time:

* **executed**, one inference of the board's static runner (the Linux
  cross path of ``edgekit compile``: edgekit's C kernels for int8
  conv/depthwise/matmul, TVM kernels for the rest) and of the same runner
  with every int8 layer on TVM kernels (``int8_kernels=False``: the integer
  lowering's own requantization inside the conv loops). Counted from
  qemu-user's translation-block trace (``-d in_asm,exec,nochain``: each
  executed block's instruction count), so deterministic; qemu's run time is
  not a figure for the board and is not reported.
* **static**, the instructions of every kernel that ``build_cpu`` (the
  Relax/llvm path a board compiles on itself, or RPC tuning) generates.

Usage::

    .venv/bin/python benchmarks/requant_forms.py [--models conv,digits,ppocr-cls] [--boards raspberry-pi-4,visionfive2]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgekit.compiler.integer.requant as requant  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.core.profiles import get_board  # noqa: E402
from edgekit.frontend.loader import PreparedModel, load_model  # noqa: E402

#: The board's qemu-user program, by zig architecture.
QEMU = {"aarch64": "qemu-aarch64", "riscv64": "qemu-riscv64"}
_TRACE_PC = re.compile(r"^Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/")
_INSN = re.compile(r"^0x([0-9a-f]+):")


def kernel_of(symbol: str) -> str:
    """The TVM kernel a compiled function belongs to (its FFI wrapper, its body)."""
    return symbol.removeprefix("__tvm_ffi_").removesuffix("_compute_")


def conv_case() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One 3x3 conv, 32 -> 32 channels on 28x28, + Relu (per-channel int8 weights)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((32, 32, 3, 3)) / np.sqrt(288)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 28, 28])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.standard_normal((8, 32, 28, 28)).astype(np.float32)}


def model_case(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The fp32 model and calibration data of ``conv``, ``digits`` or ``ppocr-cls``."""
    if name == "conv":
        return conv_case()
    from quantization import digits_case, ppocr_case

    case = digits_case(calibration_samples=256, eval_samples=1) if name == "digits" else ppocr_case(8, 1)
    return case.fp32, case.calibration


def int8_model(name: str, tmp: Path) -> PreparedModel:
    fp32, calibration = model_case(name)
    path = tmp / f"{name}-int8.onnx"
    quantize(fp32, QuantConfig(), calibration=calibration).save(path)
    return load_model(str(path))


@contextlib.contextmanager
def form(before: bool) -> Iterator[None]:
    """``before``: every layer rounds half to even (the lowering until 2026-12-06)."""
    if not before:
        yield
        return
    original = requant.ties_possible
    requant.ties_possible = lambda m, n, bound=None: np.ones(np.broadcast_shapes(np.shape(m), np.shape(n)), bool)
    try:
        yield
    finally:
        requant.ties_possible = original


def rounding_forms(prepared: PreparedModel) -> tuple[int, int]:
    """(half-up, half-even) requantizations in the lowered Relax module."""
    import tvm
    from tvm import relax

    from edgekit.compiler.importer import import_onnx

    ops: Counter = Counter()
    for block in import_onnx(prepared)[0]["main"].body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op):
                ops[b.value.op.name] += 1
    even = ops["relax.bitwise_and"]
    return ops["relax.right_shift"] - 2 * even, even


# --------------------------------------------------------------------------- #
# Executed instructions: the board's static runner under qemu-user
# --------------------------------------------------------------------------- #


def build_runner(prepared: PreparedModel, board_name: str, int8_kernels: bool, tmp: Path) -> tuple[Path, set[str]]:
    """The Linux cross build's runner and weights in ``tmp``; returns the runner and TVM's kernel names."""
    from edgekit.compiler.backends.aot_c.pipeline import compile_aot
    from edgekit.compiler.backends.llvm.linux_cross import link_runner, zig_flags

    _board, target = get_board(board_name)
    tvm_target = target.tvm_target()
    artifacts = compile_aot(prepared, tvm_target, fast_math=False, int8_kernels=int8_kernels)
    members = artifacts.members()
    runner = tmp / "runner"
    runner.write_bytes(link_runner(members, zig_flags(target, tvm_target), tmp, strip=False))
    runner.chmod(0o755)
    (tmp / "weights.bin").write_bytes(members["weights.bin"])
    return runner, set(artifacts.graph.kernel_names())


def _functions(runner: Path) -> tuple[list[int], list[str]]:
    from elftools.elf.elffile import ELFFile

    with runner.open("rb") as f:
        symbols = [(s["st_value"], s.name) for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols()
                   if s["st_info"]["type"] == "STT_FUNC" and s["st_value"]]  # fmt: skip
    symbols.sort()
    return [a for a, _ in symbols], [n for _, n in symbols]


def executed(runner: Path, arch: str, prepared: PreparedModel, kernels: set[str]) -> dict[str, int]:
    """Instructions one inference executes, split into TVM kernels, edgekit's C int8 kernels and the rest."""
    per_function = executed_by_function(runner, arch, prepared)
    tvm = sum(n for f, n in per_function.items() if kernel_of(f) in kernels)
    c_int8 = sum(n for f, n in per_function.items() if f.startswith("ek_nn_"))
    return {"total": sum(per_function.values()), "tvm": tvm, "c_int8": c_int8}


def executed_by_function(runner: Path, arch: str, prepared: PreparedModel) -> Counter:
    """Instructions one inference executes in each function of the runner (seeded uniform inputs)."""
    rng = np.random.default_rng(0)
    args = [str(runner), str(runner.parent / "weights.bin"), "0", "1"]
    for i, spec in enumerate(prepared.inputs):
        path = runner.parent / f"in{i}.bin"
        rng.uniform(-1, 1, spec.shape).astype(spec.dtype).tofile(path)
        args.append(str(path))
    args += [str(runner.parent / f"out{i}.bin") for i in range(len(prepared.outputs))]
    addresses, names = _functions(runner)
    sizes: dict[int, int] = {}
    per_function: Counter = Counter()
    proc = subprocess.Popen([QEMU[arch], "-d", "in_asm,exec,nochain", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    block_pc, count = None, 0
    assert proc.stderr is not None
    for line in proc.stderr:
        insn = _INSN.match(line)
        if insn:
            if block_pc is None:
                block_pc = int(insn.group(1), 16)
            count += 1
            continue
        if block_pc is not None:
            sizes[block_pc], block_pc, count = count, None, 0
        trace = _TRACE_PC.match(line)
        if trace:
            pc = int(trace.group(1), 16)
            i = bisect.bisect_right(addresses, pc) - 1
            per_function[names[i] if i >= 0 else "?"] += sizes[pc]
    if proc.wait() != 0:
        raise RuntimeError(f"{QEMU[arch]} {runner} failed")
    return per_function


# --------------------------------------------------------------------------- #
# Static instructions: the Relax/llvm path's kernels
# --------------------------------------------------------------------------- #


def static_kernels(prepared: PreparedModel, board_name: str) -> dict[str, int]:
    """Instructions in the assembly of every kernel ``build_cpu`` schedules, by kernel."""
    import tvm

    from edgekit.compiler.backends.llvm.relax_build import prepare_cpu_module, schedule_passes
    from edgekit.compiler.importer import import_onnx

    target = get_board(board_name)[1].tvm_target()
    mod, weights = import_onnx(prepared)[:2]
    num_input = int(mod["main"].attrs["num_input"])
    by_name = {p.name: (w.numpy() if hasattr(w, "numpy") else np.asarray(w))
               for p, w in zip(mod["main"].params[num_input:], weights)}  # fmt: skip
    prepared_mod, _ = prepare_cpu_module(mod, target, weights=by_name)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = tvm.transform.Sequential(schedule_passes(target))(prepared_mod)
    funcs = {gv.name_hint: f.with_attr("global_symbol", gv.name_hint)
             for gv, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}  # fmt: skip
    asm = tvm.tirx.build(tvm.IRModule(funcs), target).inspect_source("asm")
    counts: Counter = Counter()
    current = "?"
    for line in asm.splitlines():
        label = re.match(r"^([A-Za-z_][\w.$]*):", line)
        if label:
            current = kernel_of(label.group(1)) if kernel_of(label.group(1)) in funcs else current
        elif re.match(r"^\s+[a-z]", line) and not line.lstrip().startswith("."):
            counts[current] += 1
    return dict(counts)


# --------------------------------------------------------------------------- #


def measure(name: str, board_name: str, tmp: Path) -> dict[str, Any]:
    from edgekit.compiler.backends.llvm.linux_cross import linux_arch

    prepared = int8_model(name, tmp)
    arch = linux_arch(get_board(board_name)[1])
    row: dict[str, Any] = {"model": name, "board": board_name}
    for before in (True, False):
        key = "before" if before else "after"
        with form(before):
            row[f"forms_{key}"] = rounding_forms(prepared)
            for int8_kernels in (True, False):
                work = tmp / f"{board_name}-{key}-{int8_kernels}"
                work.mkdir()
                runner, kernels = build_runner(prepared, board_name, int8_kernels, work)
                row[f"run_{'c' if int8_kernels else 'tvm'}_{key}"] = executed(runner, arch, prepared, kernels)
            static = static_kernels(prepared, board_name)
            row[f"static_{key}"] = (sum(static.values()),
                                    sum(n for k, n in static.items() if "conv2d" in k or "matmul" in k))  # fmt: skip
    return row


def _pct(before: int, after: int) -> str:
    return f"{before:,} -> {after:,} ({100.0 * (after - before) / before:+.1f} %)" if before else "0"


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | board | requantizations half up / half even | executed, C int8 kernels (TVM kernels' part) "
        "| executed, every int8 layer on TVM kernels (TVM kernels' part) | static, build_cpu kernels (conv/matmul) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        fb, fa = r["forms_before"], r["forms_after"]
        cells = [r["model"], r["board"], f"{fb[0]} / {fb[1]} -> {fa[0]} / {fa[1]}"]
        for mode in ("c", "tvm"):
            b, a = r[f"run_{mode}_before"], r[f"run_{mode}_after"]
            cells.append(f"{_pct(b['total'], a['total'])} ({_pct(b['tvm'], a['tvm'])})")
        sb, sa = r["static_before"], r["static_after"]
        cells.append(f"{_pct(sb[0], sa[0])} ({_pct(sb[1], sa[1])})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="conv,digits,ppocr-cls")
    parser.add_argument("--boards", default="raspberry-pi-4,visionfive2")
    args = parser.parse_args(argv)
    missing = [q for q in QEMU.values() if shutil.which(q) is None]
    if missing:
        print(f"needs {', '.join(missing)}: apt-get install qemu-user", file=sys.stderr)
        return 2
    rows = []
    for name in args.models.split(","):
        for board in args.boards.split(","):
            with tempfile.TemporaryDirectory(prefix="requant-forms-") as tmp:
                rows.append(measure(name, board, Path(tmp)))
                print(rows[-1], file=sys.stderr, flush=True)
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Instructions per MAC on the simulated RV32 MCU: edgekit vs a naive C loop nest.

For each model, edgekit compiles it for ``rv32-mcu-sim`` and benchmarks it in
the unicorn simulator; the same fp32 model is also written as naive C loop
nests (``benchmarks/naive_c.py``), linked into the same agent firmware with
the same compiler flags and run in the same simulator. Both outputs are
checked against onnxruntime. Prints a markdown table for BENCHMARKS.md.

With ``--layers``, it measures instead the four int8 layers of issue #15
(``benchmarks/mcu_layers.py``: 3x3 conv, 1x1 conv, depthwise, fully
connected; int8 in/out) and their fp32 twins on each board given:
instructions per MAC = the simulator's instruction count for one run minus
that of an empty model with the same interface, over the layer's MACs.

Usage::

    .venv/bin/python benchmarks/mcu.py [--board rv32-mcu-sim] [--runs 3]
    .venv/bin/python benchmarks/mcu.py --layers [--board stm32h7 --board rv32-mcu-sim]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcu_layers import LAYERS, empty_model, layer_model  # noqa: E402
from naive_c import emit_naive_model  # noqa: E402

from edgekit.compiler.driver import compile_model  # noqa: E402
from edgekit.compress import QuantConfig, quantize  # noqa: E402
from edgekit.core.profiles import load_profiles  # noqa: E402
from edgekit.examples.digits import example_model_path, load_digits_data  # noqa: E402
from edgekit.frontend.analysis import analyze  # noqa: E402
from edgekit.frontend.loader import load_model  # noqa: E402
from edgekit.runtime.device import DeviceClient  # noqa: E402
from edgekit.runtime.runner import bench_package  # noqa: E402
from edgekit.runtime.transport import SerialTransport  # noqa: E402
from edgekit.sim.agent_build import build_agent, port_for_board  # noqa: E402
from edgekit.sim.mcu import McuSimulator  # noqa: E402


def kws_like_cnn(seed: int = 0) -> onnx.ModelProto:
    """A keyword-spotting-shaped CNN (1x1x32x16 'spectrogram', strided convs,
    a depthwise conv, Gemm) with seeded random weights."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    inits = {
        "w1": w(16, 1, 3, 3), "b1": w(16, 1)[:, 0],
        "w2": w(32, 16, 3, 3), "b2": w(32, 1)[:, 0],
        "w3": w(32, 1, 3, 3), "b3": w(32, 1)[:, 0],
        "w4": w(32, 32, 1, 1), "b4": w(32, 1)[:, 0],
        "wf": w(12, 32 * 4 * 2), "bf": w(12, 1)[:, 0],
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2], group=32),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Conv", ["r3", "w4", "b4"], ["c4"]),
        helper.make_node("Relu", ["c4"], ["r4"]),
        helper.make_node("MaxPool", ["r4"], ["p4"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p4"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "kws_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 32, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 12])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def naive_instructions(model: onnx.ModelProto, board_name: str, x: np.ndarray, want: np.ndarray) -> tuple[int, float]:
    """Runs the naive loop nest in the simulator; returns (instructions, max rel error)."""
    board = load_profiles().board(board_name)
    source, blob, sizes = emit_naive_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "naive_model.c"
        path.write_text(source)
        elf = build_agent(port_for_board(board_name).name, [path])
    sim = McuSimulator(elf, board)
    link = SerialTransport(sim.port_name, board.transport.baudrate)
    try:
        client = DeviceClient(link)
        client.hello()
        client.load(blob)
        client.set_input(0, x.astype(np.float32).tobytes())
        result = client.run(1)
        got = np.frombuffer(client.get_output(0, sizes["output_bytes"]), np.float32).reshape(want.shape)
    finally:
        link.close()
        sim.close()
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    return int(result.instret[0] or result.cycles[0]), err


def edgekit_instructions(model_path: Path, board: str, runs: int, out_dir: Path, tag: str) -> dict:
    pkg = out_dir / f"{tag}.ekpkg"
    manifest = compile_model(str(model_path), board, str(pkg)).manifest
    report = bench_package(str(pkg), runs=runs, warmup=1, compare_ort=True)
    return {"manifest": manifest, "report": report}


def _measure(path: Path, board: str, out_dir: Path, tag: str, row: dict, key: str) -> int:
    """Compiles and benchmarks ``path``; records arena and error under ``key``; returns one run's instructions."""
    t0 = time.perf_counter()
    rep = edgekit_instructions(path, board, 1, out_dir, tag)["report"]
    row[f"{key}_arena"] = rep["memory"]["arena_bytes"]
    row[f"{key}_err"] = rep.get("ort_max_rel_error", {}).get("max")
    ins = int(rep["instructions"]["p50"])
    print(f"{tag}: {ins:,} instructions ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return ins


def _instructions(model: onnx.ModelProto, board: str, out_dir: Path, tag: str, row: dict, key: str) -> int:
    path = out_dir / f"{tag}.onnx"
    onnx.save(model, path)
    return _measure(path, board, out_dir, tag, row, key)


def layer_rows(boards: list[str]) -> list[dict]:
    """Instructions per MAC of the four layers (int8 and fp32) on each board."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-mcu-layers-") as tmp:
        out = Path(tmp)
        for board in boards:
            empty: dict = {}
            base = {dt: _instructions(empty_model(int8=dt == "int8"), board, out, f"{board}-empty-{dt}", empty, dt)
                    for dt in ("int8", "fp32")}  # fmt: skip
            for i, layer in enumerate(LAYERS):
                row = {"board": board, "layer": layer.name, "macs": layer.macs}
                for dt in ("int8", "fp32"):
                    ins = _instructions(layer_model(layer, int8=dt == "int8"), board, out, f"{board}-{i}-{dt}", row, dt)
                    row[dt] = (ins - base[dt]) / layer.macs
                rows.append(row)
    return rows


def print_layer_table(rows: list[dict], boards: list[str]) -> None:
    print("### Four int8 layers: instructions per MAC (issue #15)\n")
    print(f"Command: `.venv/bin/python benchmarks/mcu.py --layers {' '.join('--board ' + b for b in boards)}`; "
          f"date: {date.today()}. Counts are executed instructions from the unicorn instruction-counting "
          "simulator (one run, minus an empty model with the same interface), deterministic.\n")  # fmt: skip
    print("| board | layer | MACs | int8 instr/MAC | fp32 instr/MAC | int8 / fp32 |")
    print("|---|---|---:|---:|---:|---:|")
    for board in boards:
        mine = [r for r in rows if r["board"] == board]
        for r in mine:
            print(f"| {board} | {r['layer']} | {r['macs']:,} | {r['int8']:.2f} | {r['fp32']:.2f} | {r['int8'] / r['fp32']:.2f} |")
        macs = sum(r["macs"] for r in mine)
        w8 = sum(r["int8"] * r["macs"] for r in mine) / macs
        w32 = sum(r["fp32"] * r["macs"] for r in mine) / macs
        print(f"| {board} | **all four, MAC-weighted** | {macs:,} | **{w8:.2f}** | {w32:.2f} | {w8 / w32:.2f} |")


def model_files(out: Path) -> Iterator[tuple[str, Path, Path]]:
    """``(name, fp32 path, int8 path)`` of the digits CNN (calibrated on 256 training
    images) and PP-OCR cls (rapidocr's wheel), quantized with edgekit's defaults, under ``out``."""
    import quantization as qcases

    for case in (qcases.digits_case(calibration_samples=256), qcases.ppocr_case()):
        fp32 = out / f"{case.name}-fp32.onnx"
        onnx.save(case.fp32, fp32)
        int8 = out / f"{case.name}-int8.onnx"
        quantize(str(fp32), QuantConfig(), calibration=case.calibration).save(int8)
        yield case.name, fp32, int8


def model_rows(boards: list[str]) -> list[dict]:
    """fp32 against int8 for the digits CNN and PP-OCR cls (rapidocr's wheel) on each board."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-mcu-models-") as tmp:
        out = Path(tmp)
        for name, fp32, int8 in model_files(out):
            for board in boards:
                row = {"board": board, "model": name}
                for dt, path in (("fp32", fp32), ("int8", int8)):
                    row[dt] = _measure(path, board, out, f"{board}-{name}-{dt}", row, dt)
                rows.append(row)
    return rows


def print_model_table(rows: list[dict]) -> None:
    print("\n| board | model | fp32 instructions | int8 instructions | int8 / fp32 | fp32 arena B | int8 arena B | "
          "int8 / fp32 arena | int8 max rel err vs onnxruntime |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        err = "-" if r["int8_err"] is None else f"{r['int8_err']:.1e}"
        print(f"| {r['board']} | {r['model']} | {r['fp32']:,.0f} | {r['int8']:,.0f} | {r['int8'] / r['fp32']:.2f} | "
              f"{r['fp32_arena']:,} | {r['int8_arena']:,} | {r['int8_arena'] / r['fp32_arena']:.2f} | {err} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", action="append", default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--layers", action="store_true", help="the four int8 layers of issue #15")
    args = parser.parse_args(argv)
    if args.layers:
        boards = args.board or ["stm32h7", "rv32-mcu-sim"]
        print_layer_table(layer_rows(boards), boards)
        print_model_table(model_rows(boards))
        return 0
    args.board = (args.board or ["rv32-mcu-sim"])[0]

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-mcu-bench-") as tmp:
        out = Path(tmp)
        data = load_digits_data()
        kws_path = out / "kws_like.onnx"
        onnx.save(kws_like_cnn(), kws_path)
        models = {"digits_cnn": example_model_path(), "kws_like_cnn": kws_path}
        rng = np.random.default_rng(0)
        calibration = {
            "digits_cnn": {"input": data.x_train[:256]},
            "kws_like_cnn": {"x": rng.random((256, 1, 32, 16), dtype=np.float32)},
        }
        for name, path in models.items():
            prepared = load_model(path)
            macs = analyze(prepared).macs
            x = rng.random(prepared.inputs[0].shape, dtype=np.float32)
            want = ort.InferenceSession(prepared.serialize()).run(None, {prepared.inputs[0].name: x})[0]
            t0 = time.perf_counter()
            naive, naive_err = naive_instructions(prepared.model, args.board, x, want)
            fp32 = edgekit_instructions(path, args.board, args.runs, out, f"{name}-fp32")
            q = quantize(path, QuantConfig(), calibration=calibration[name])
            qpath = out / f"{name}-int8.onnx"
            q.save(qpath)
            int8 = edgekit_instructions(qpath, args.board, args.runs, out, f"{name}-int8")
            for label, res, ref in (("fp32", fp32, naive), ("int8", int8, None)):
                rep = res["report"]
                ins = rep["instructions"]["p50"]
                rows.append({
                    "model": name, "dtype": label, "macs": macs,
                    "instructions": ins, "ipm": ins / macs,
                    "naive_ipm": (ref / macs) if ref else None,
                    "cycles": rep["cycles"]["p50"], "ms": rep["latency_ms"]["p50"],
                    "arena": rep["memory"]["arena_bytes"], "weights": rep["memory"]["weight_bytes"],
                    "code": rep["memory"]["code_bytes"],
                    "agree": rep.get("outputs_agree"), "err": rep.get("ort_max_rel_error", {}).get("max"),
                })
            rows[-2]["naive_err"] = naive_err
            print(f"{name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    board = load_profiles().board(args.board)
    print(f"### Instructions per MAC on `{args.board}` ({board.clock_hz / 1e6:g} MHz, CPI {board.simulator.cpi})\n")
    print(f"Command: `.venv/bin/python benchmarks/mcu.py --board {args.board} --runs {args.runs}`; "
          f"machine: {platform.machine()} {platform.processor() or ''} ({platform.platform()}); date: {date.today()}.\n")
    print("| model | dtype | MACs | instructions | instr/MAC | naive C instr/MAC | latency @clock (ms) | arena B | weights B | code B | max rel err vs onnxruntime |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        naive = f"{r['naive_ipm']:.2f}" if r["naive_ipm"] else "-"
        err = "-" if r["err"] is None else f"{r['err']:.1e}"
        print(f"| {r['model']} | {r['dtype']} | {r['macs']:,} | {int(r['instructions']):,} | {r['ipm']:.2f} | {naive} | "
              f"{r['ms']:.2f} | {r['arena']:,} | {r['weights']:,} | {r['code']:,} | {err} |")
    print("\nErrors: edgekit's outputs against onnxruntime on the same model (int8: onnxruntime running the "
          "QDQ graph as written, graph optimizations off). naive C: one plain loop nest per layer "
          "(benchmarks/naive_c.py), fp32 only, same compiler flags, same agent firmware, same simulator.")
    for r in rows:
        if "naive_err" in r:
            print(f"\nnaive C {r['model']} max rel err vs onnxruntime: {r['naive_err']:.1e}", end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

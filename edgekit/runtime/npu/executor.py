"""End-to-end execution: host sub-graphs on the CPU, offloaded layers on the accelerator.

:class:`HybridExecutor` runs the steps that the NPU backend's
:func:`~edgekit.compiler.backends.npu.host_split.split_host_graph` ordered
(host sub-graphs, :class:`~edgekit.npu.package.HostSegment`, and offloaded
layers): host sub-graphs with onnxruntime (on a board this is the
TVM-compiled host code), accelerator layers through
:class:`~edgekit.runtime.npu.driver.NpuDriver`.
Tensors passed between two accelerator layers stay in accelerator DRAM;
only those the host reads are converted (NHWC padded <-> ONNX layout), and
that conversion is counted as host time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from edgekit.core.errors import InputError
from edgekit.npu.package import HostSegment
from edgekit.npu.placement import TensorPlace
from edgekit.runtime.npu.driver import NpuDriver

__all__ = ["HybridExecutor", "StepTiming"]

logger = logging.getLogger(__name__)


@dataclass
class StepTiming:
    """One executed step."""

    kind: str
    name: str
    host_ms: float = 0.0
    cycles: int = 0
    stats: Any = None


@dataclass
class HybridExecutor:
    """Runs a compiled model: host segments with onnxruntime, layers on the NPU.

    Args:
        steps: From :func:`~edgekit.compiler.backends.npu.host_split.split_host_graph` (``("host", i)`` / ``("npu", k)``).
        segments: Host sub-graphs.
        layer_programs: Per layer: (name, program address, instruction count, inputs, output).
        tensors: Accelerator DRAM placement of every tensor a layer touches.
        driver: The accelerator driver.
        inputs, outputs: Model input/output names.
        stats_source: Optional callable returning the detailed stats of the last program (simulator only).
    """

    steps: list[tuple[str, int]]
    segments: list[HostSegment]
    layer_programs: list[tuple[str, int, int, tuple[str, ...], str]]
    tensors: Mapping[str, TensorPlace]
    driver: NpuDriver
    inputs: list[str]
    outputs: list[str]
    stats_source: Any = None
    _sessions: list[Any] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        # Keep onnxruntime from fusing Q/DQ pairs: the host must compute exactly what the graph says.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self._sessions = [
            ort.InferenceSession(seg.model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]) for seg in self.segments
        ]
        host_reads: set[str] = set(self.outputs)
        for seg in self.segments:
            host_reads |= set(seg.inputs)
        self._host_reads = host_reads

    def run(self, feeds: Mapping[str, np.ndarray], *, trace: bool = False) -> tuple[dict[str, np.ndarray], list[StepTiming]]:
        """Runs one inference; returns the outputs and the per-step timings.

        Args:
            feeds: One array per model input.
            trace: Return every tensor a step produced (host sub-graph
                outputs and each accelerator layer's output, read back from
                accelerator DRAM), not only the model outputs: for comparing
                the package tensor by tensor with another compile.
        """
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise InputError(f"missing input(s): {', '.join(missing)}", hint="Give one array per model input.")
        env: dict[str, np.ndarray] = {n: np.asarray(feeds[n]) for n in self.inputs}
        in_dram: set[str] = set()
        timings: list[StepTiming] = []
        for kind, index in self.steps:
            if kind == "host":
                seg, sess = self.segments[index], self._sessions[index]
                t0 = time.perf_counter()
                result = sess.run(seg.outputs, {n: env[n] for n in seg.inputs})
                env.update(zip(seg.outputs, result))
                timings.append(StepTiming("host", f"host_{index}", (time.perf_counter() - t0) * 1e3))
                continue
            name, addr, count, ins, out = self.layer_programs[index]
            t0 = time.perf_counter()
            for t in ins:
                if t not in in_dram:
                    place = self.tensors[t]
                    self.driver.mem.write(place.addr, place.pack(env[t]))
                    in_dram.add(t)
            upload_ms = (time.perf_counter() - t0) * 1e3
            cpl = self.driver.run(addr, count)
            in_dram.add(out)
            t1 = time.perf_counter()
            if trace or out in self._host_reads:
                place = self.tensors[out]
                env[out] = place.unpack(self.driver.mem.read(place.addr, place.nbytes))
            download_ms = (time.perf_counter() - t1) * 1e3
            stats = self.stats_source() if self.stats_source is not None else None
            timings.append(StepTiming("npu", name, upload_ms + download_ms, cpl.cycles, stats))
        return (env if trace else {n: env[n] for n in self.outputs}), timings

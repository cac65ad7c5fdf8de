"""Deadlines for host<->device exchanges, derived from the board and the work.

A dead device must never make the host wait without bound (issue 16). Every
wait the protocol client does gets a limit computed here from the board's
link speed and clock and from what the command has to do:

- a frame exchange: the wire time of a largest frame at the board's baud
  rate, several times over, plus a fixed allowance for the device to act;
- RUN: an upper bound of the model's cycles (MACs x a generous cycles-per-MAC
  plus a cost per activation element), at the board's clock, or for a
  simulator at the slowest instruction rate it runs on a loaded host;
- VERIFY: the device hashes the whole image at a generous cycles-per-byte.

A simulated core gets the same bound as an instruction budget
(:meth:`edgekit.sim.mcu.McuSimulator.set_budget`), which is deterministic,
and its liveness is checked while the host waits, so a fault is reported at
once rather than at the deadline. The limits are upper bounds by design:
they only decide how long a *dead* device can hold the host.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edgekit.runtime import protocol as P
from edgekit.runtime.device import DEFAULT_RETRY, RetryPolicy

if TYPE_CHECKING:
    from edgekit.package import Package
    from edgekit.core.profiles import Board

__all__ = ["WorkEstimate", "estimate_work", "retry_for", "CYCLES_PER_MAC_BOUND", "SIM_MIN_IPS"]

logger = logging.getLogger(__name__)

#: Cycles per multiply-accumulate no edgekit kernel exceeds: a naive int8
#: loop needs ~7 instructions/MAC on rv32 (DESIGN.md), float soft paths more.
CYCLES_PER_MAC_BOUND = 64
#: Cycles per activation element for element-wise work (exp, requantize, copies).
CYCLES_PER_ELEMENT_BOUND = 400
#: Fixed cycles per run (agent, kernel calls).
CYCLES_PER_RUN_BASE = 2_000_000
#: SHA-256 on a small core: ~20-60 cycles/byte; bounded generously.
HASH_CYCLES_PER_BYTE = 200
#: Slowest simulated instruction rate on a loaded 2-core host (measured ~6 MIPS idle).
SIM_MIN_IPS = 500_000
#: Time a device gets to act on a request, beyond the wire time.
ACT_ALLOWANCE_S = 0.5
#: Fixed allowance on top of long computations (scheduling, the first frame).
BASE_ALLOWANCE_S = 2.0
#: Wire-time multiple for one exchange (request, answer, and slack).
WIRE_FACTOR = 4


@dataclass(frozen=True)
class WorkEstimate:
    """Upper bounds of what one inference costs a device.

    Attributes:
        macs: Multiply-accumulates of one inference.
        elements: Activation elements written by one inference.
        cycles: Upper bound of the cycles one inference takes.
    """

    macs: int
    elements: int

    @property
    def cycles(self) -> int:
        return CYCLES_PER_MAC_BOUND * self.macs + CYCLES_PER_ELEMENT_BOUND * self.elements + CYCLES_PER_RUN_BASE


def estimate_work(package: "Package") -> WorkEstimate:
    """MACs and activation elements of the package's ``model.onnx``; a
    package without it gets a bound from its arena size alone."""
    import math

    arena = int((package.manifest.memory or {}).get("arena_bytes", 0))
    if "model.onnx" not in package:
        return WorkEstimate(macs=arena * 64, elements=arena)
    import onnx

    from edgekit.frontend.analysis import analyze
    from edgekit.frontend.loader import load_model

    prepared = load_model(onnx.load_from_string(package.read("model.onnx")), simplify=False, check=False)
    report = analyze(prepared)
    elements = sum(math.prod(layer.output_shape) for layer in report.layers if layer.output_shape)
    return WorkEstimate(macs=report.macs, elements=max(elements, arena))


def _wire_s(board: "Board", nbytes: int) -> float:
    baud = board.transport.baudrate or 115200
    return nbytes * 10 / baud


def retry_for(
    board: "Board", *, simulated: bool, work: WorkEstimate | None = None, image_bytes: int = 0,
    base: RetryPolicy = DEFAULT_RETRY,
) -> RetryPolicy:  # fmt: skip
    """``base`` with its timeouts derived from the board and the work.

    Args:
        board: Clock, baud rate and (for simulators) CPI come from here.
        simulated: Time a simulator: instructions at :data:`SIM_MIN_IPS`.
        work: The model's work; None keeps ``base.run_timeout_s``.
        image_bytes: Largest image the device may hash at VERIFY.
    """
    frame = P.MAX_PAYLOAD + 64
    response = WIRE_FACTOR * _wire_s(board, frame) + ACT_ALLOWANCE_S

    def seconds(cycles: int) -> float:
        if simulated:
            cpi = board.simulator.cpi or 1.0
            return cycles / cpi / SIM_MIN_IPS + BASE_ALLOWANCE_S
        return cycles / (board.clock_hz or 1_000_000) + BASE_ALLOWANCE_S

    policy = replace(base, response_timeout_s=response)
    if work is not None:
        policy = replace(policy, run_timeout_s=seconds(work.cycles))
    if image_bytes:
        policy = replace(policy, verify_timeout_s=seconds(HASH_CYCLES_PER_BYTE * image_bytes))
    logger.debug(
        "deadlines for %s: response %.2f s, run %.1f s, verify %.1f s",
        board.name, policy.response_timeout_s, policy.run_timeout_s, policy.verify_timeout_s,
    )  # fmt: skip
    return policy

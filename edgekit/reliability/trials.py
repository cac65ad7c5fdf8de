"""Fault-injection trials over simulated devices (issue 10).

Shared by ``tests/sim/test_faults.py`` (a few dozen trials) and
``benchmarks/reliability.py`` (thousands). Every trial drives the real host
stack (:class:`~edgekit.runtime.device.DeviceClient` over a
:class:`~edgekit.runtime.faults.FaultyTransport`) against the real device agent
(POSIX process or rv32 firmware on the unicorn simulator), and judges the
result with an oracle that does not trust the device: the slot storage is
parsed from outside (:mod:`edgekit.reliability.slots`).

Outcomes of one transfer:

* ``verified`` — ``load`` returned and the image the device would boot is
  byte-identical to the one sent;
* ``typed_error`` — ``load`` raised an :class:`EdgekitError` and the device still
  boots an intact image (the previous one) or had none before;
* ``silent_corruption`` — ``load`` returned but the device would boot anything
  else (must never happen);
* ``bricked`` — after the attempt the device boots nothing, or an image whose
  hash does not match its record, although it had a valid one before;
* ``untyped_error`` — any other exception (a bug);
* ``over_time`` — the outcome took longer than the stated bound.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from edgekit.core.errors import EdgekitError
from edgekit.runtime.device import DeviceClient, RetryPolicy
from edgekit.runtime.faults import FAULT_KINDS, FaultSpec, FaultyTransport
from edgekit.sim.agent_build import build_blob_agent
from edgekit.sim.posix import PosixAgent
from edgekit.reliability.slots import boot_image

__all__ = [
    "OUTCOMES",
    "TrialSummary",
    "StepSweepResult",
    "log_sizes",
    "trial_policy",
    "time_bound_s",
    "run_transfer_trials",
    "reset_sweep",
    "PowerCutResult",
    "power_cut_sweep",
    "judge",
]

logger = logging.getLogger(__name__)

OUTCOMES = ("verified", "typed_error", "silent_corruption", "bricked", "untyped_error")


def trial_policy(size: int) -> RetryPolicy:
    """Retry limits used by the trials: short timeouts (the simulated link is
    fast), a deadline that grows with the image size."""
    return RetryPolicy(
        attempts=6,
        response_timeout_s=0.25,
        verify_timeout_s=2.0,
        upload_resumes=6,
        upload_deadline_s=10.0 + 0.1 * size / 1024,
    )


def time_bound_s(size: int) -> float:
    """Stated bound on one transfer's wall time: the upload deadline plus one
    request's worst retry series (``attempts`` x the longest timeout) plus one
    stall, since the deadline is checked between requests."""
    p = trial_policy(size)
    assert p.upload_deadline_s is not None
    return p.upload_deadline_s + p.attempts * max(p.response_timeout_s, p.verify_timeout_s) + 2.0


def log_sizes(count: int, lo: int = 1, hi: int = 1 << 20) -> list[int]:
    """``count`` sizes spaced evenly in log scale from ``lo`` to ``hi`` inclusive."""
    if count == 1:
        return [hi]
    return sorted({round(math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / (count - 1))) for i in range(count)})


@dataclass
class TrialSummary:
    """Counts of outcomes and measured times of a series of transfers.

    Attributes:
        outcomes: Outcome name -> count (see module docstring).
        over_time: Transfers that ended after :func:`time_bound_s`.
        errors: Error class name -> count for ``typed_error`` outcomes.
        injected: Fault kind -> count injected.
        max_seconds / total_seconds: Slowest transfer and the sum.
        max_ratio: Largest (time / bound) seen.
        failures: Descriptions of silent corruptions, bricks and untyped errors.
    """

    outcomes: Counter[str] = field(default_factory=Counter)
    over_time: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    max_seconds: float = 0.0
    total_seconds: float = 0.0
    max_ratio: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Number of transfers."""
        return sum(self.outcomes.values())

    @property
    def success_rate(self) -> float:
        """Fraction that ended verified."""
        return self.outcomes["verified"] / self.count if self.count else 0.0

    def merge(self, other: "TrialSummary") -> None:
        """Adds another summary's counts into this one."""
        self.outcomes.update(other.outcomes)
        self.errors.update(other.errors)
        self.injected.update(other.injected)
        self.over_time += other.over_time
        self.max_seconds = max(self.max_seconds, other.max_seconds)
        self.total_seconds += other.total_seconds
        self.max_ratio = max(self.max_ratio, other.max_ratio)
        self.failures += other.failures

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly view."""
        return {
            "transfers": self.count,
            "outcomes": {k: self.outcomes.get(k, 0) for k in OUTCOMES},
            "success_rate": self.success_rate,
            "over_time": self.over_time,
            "errors": dict(self.errors),
            "injected": {k: self.injected.get(k, 0) for k in FAULT_KINDS},
            "max_seconds": round(self.max_seconds, 3),
            "mean_seconds": round(self.total_seconds / self.count, 3) if self.count else 0.0,
            "max_time_over_bound": round(self.max_ratio, 3),
            "failures": self.failures[:20],
        }


def judge(storage: bytes, image: bytes, previous: bytes | None, returned: bool) -> str:
    """Classifies one attempt from the device's storage (the oracle).

    Args:
        storage: The device's slot storage after the attempt.
        image: What the host tried to upload.
        previous: The image the device booted before the attempt (None: none).
        returned: ``load`` returned normally (claimed success).
    """
    boot = boot_image(storage)
    if returned:
        return "verified" if boot.intact and boot.data == image else "silent_corruption"
    if previous is None and boot.slot is None:
        return "typed_error"
    if boot.intact and boot.data in (previous, image):
        return "typed_error"
    return "bricked"


def run_transfer_trials(
    sizes: Iterable[int],
    per_size: int,
    spec: FaultSpec,
    *,
    workdir: Path | None = None,
    policy: Callable[[int], RetryPolicy] = trial_policy,
    on_result: Callable[[int, str, float], None] | None = None,
) -> TrialSummary:
    """Uploads ``per_size`` random images of each size to a POSIX agent over a
    :class:`FaultyTransport` and judges every attempt.

    Each size gets its own agent (its model's ``weight_bytes`` is the size)
    with storage in a file, so the oracle reads what a reset would find.
    """
    total = TrialSummary()
    rng = random.Random(spec.seed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for n, size in enumerate(sizes):
            storage = Path(tmp) / f"slots-{size}.bin"
            agent = PosixAgent(build_blob_agent("posix", size), storage=storage)
            sub_spec = FaultSpec(**{**spec.__dict__, "seed": spec.seed * 1000 + n})
            transport = FaultyTransport(agent.port, sub_spec, reset_device=agent.reset)
            try:
                total.merge(_series(agent, transport, storage, size, per_size, rng, policy(size), on_result))
            finally:
                transport.close()
                agent.close()
    return total


def _series(
    agent: PosixAgent,
    transport: FaultyTransport,
    storage: Path,
    size: int,
    count: int,
    rng: random.Random,
    policy: RetryPolicy,
    on_result: Callable[[int, str, float], None] | None,
) -> TrialSummary:
    out = TrialSummary()
    client = DeviceClient(transport, policy)
    previous: bytes | None = None
    bound = time_bound_s(size)
    for _ in range(count):
        image = rng.randbytes(size)
        start = time.monotonic()
        returned = False
        try:
            client.hello()  # a session per transfer, as `edgekit flash` does
            client.load(image)
            returned = True
        except EdgekitError as exc:
            out.errors[type(exc).__name__] += 1
        except Exception as exc:  # a bug: reported, never hidden
            outcome = "untyped_error"
            out.failures.append(f"{size} B: {type(exc).__name__}: {exc}")
            out.outcomes[outcome] += 1
            continue
        elapsed = time.monotonic() - start
        # Let an in-flight reset finish before reading the storage file.
        outcome = judge(storage.read_bytes(), image, previous, returned)
        out.outcomes[outcome] += 1
        if outcome in ("silent_corruption", "bricked"):
            out.failures.append(f"{size} B: {outcome} (sha256 sent {hashlib.sha256(image).hexdigest()[:12]})")
        boot = boot_image(storage.read_bytes())
        previous = boot.data if boot.slot is not None else None
        out.max_seconds = max(out.max_seconds, elapsed)
        out.total_seconds += elapsed
        out.max_ratio = max(out.max_ratio, elapsed / bound)
        if elapsed > bound:
            out.over_time += 1
        if on_result is not None:
            on_result(size, outcome, elapsed)
    out.injected.update(transport.injected)
    return out


@dataclass
class StepSweepResult:
    """Result of resetting the device at every step of one upload.

    Attributes:
        steps: Host frames the fault-free upload takes.
        trials: Resets injected (steps x {before, after}).
        without_valid_image: Trials after which the device booted nothing or a
            damaged image (must be 0).
        old_image / new_image: Trials after which it booted the old / new image.
        finished: Trials whose upload then resumed and verified.
        resumed_from_offset: Trials whose upload resumed at a non-zero offset.
    """

    steps: int = 0
    trials: int = 0
    without_valid_image: int = 0
    old_image: int = 0
    new_image: int = 0
    finished: int = 0
    resumed_from_offset: int = 0
    failures: list[str] = field(default_factory=list)


def reset_sweep(size: int, *, workdir: Path | None = None, seed: int = 0) -> StepSweepResult:
    """Resets a POSIX agent before and after every host frame of an upload.

    The device first holds a committed image A; the host uploads B. For each
    step k and each side, the device is reset exactly there; the oracle then
    checks it would boot A or B, intact; then the same client continues and
    must finish with B verified.
    """
    rng = random.Random(seed)
    old, new = rng.randbytes(size), rng.randbytes(size)
    result = StepSweepResult()
    exe = build_blob_agent("posix", size)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        # Count the frames of a clean upload first.
        storage = Path(tmp) / "count.bin"
        with PosixAgent(exe, storage=storage) as agent:
            t = FaultyTransport(agent.port, FaultSpec(), reset_device=agent.reset)
            c = DeviceClient(t, trial_policy(size))
            c.hello()
            c.load(old)
            before = t.writes
            c.load(new)
            result.steps = t.writes - before
            t.close()
        for k in range(1, result.steps + 1):
            for after in (False, True):
                result.trials += 1
                storage = Path(tmp) / f"s{k}{int(after)}.bin"
                with PosixAgent(exe, storage=storage) as agent:
                    t = FaultyTransport(agent.port, FaultSpec(), reset_device=agent.reset)
                    try:
                        _sweep_one(agent, t, storage, old, new, k, after, result)
                    finally:
                        t.close()
    return result


def _sweep_one(
    agent: PosixAgent,
    t: FaultyTransport,
    storage: Path,
    old: bytes,
    new: bytes,
    k: int,
    after: bool,
    result: StepSweepResult,
) -> None:
    c = DeviceClient(t, trial_policy(len(new)))
    c.hello()
    c.load(old)
    boot_after_reset: list[bytes | None] = []

    def check() -> None:
        boot = boot_image(storage.read_bytes())
        boot_after_reset.append(boot.data if boot.intact and boot.slot is not None else None)

    real_reset = t._reset_device
    assert real_reset is not None

    def reset_and_look() -> None:
        real_reset()
        check()  # what the freshly booted device holds

    t._reset_device = reset_and_look
    t.schedule_reset(k, after=after)
    resumed_at: list[int] = []
    c_begin = c._begin

    def spy_begin(total: int, digest: bytes) -> int:
        off = c_begin(total, digest)
        resumed_at.append(off)
        return off

    c._begin = spy_begin  # type: ignore[method-assign]
    where = f"step {k} {'after' if after else 'before'}"
    try:
        c.load(new)
        finished = boot_image(storage.read_bytes()).data == new
    except EdgekitError as exc:
        finished = False
        result.failures.append(f"{where}: upload did not finish after the reset ({exc})")
    if finished:
        result.finished += 1
    if any(off > 0 for off in resumed_at[1:]):
        result.resumed_from_offset += 1
    seen = boot_after_reset[0] if boot_after_reset else None
    if seen is None:
        result.without_valid_image += 1
        result.failures.append(f"{where}: no valid image after the reset")
    elif seen == old:
        result.old_image += 1
    elif seen == new:
        result.new_image += 1
    else:
        result.without_valid_image += 1
        result.failures.append(f"{where}: booted an image that is neither old nor new")


@dataclass
class PowerCutResult:
    """Result of cutting power at every flash write of one upload (rv32 simulator).

    Attributes:
        writes: Storage writes a fault-free upload performs.
        trials: Power cuts injected.
        without_valid_image / old_image / new_image / finished: As in
            :class:`StepSweepResult`.
    """

    writes: int = 0
    trials: int = 0
    without_valid_image: int = 0
    old_image: int = 0
    new_image: int = 0
    finished: int = 0
    failures: list[str] = field(default_factory=list)


def power_cut_sweep(
    size: int, *, board_name: str = "rv32-mcu-sim", torn: bool = False, cuts: Iterable[int] | None = None, seed: int = 0
) -> PowerCutResult:
    """Halts the simulated MCU on entry to its ``n``-th flash write during an
    upload (for every ``n``, or those in ``cuts``), checks what it would boot,
    powers it on again and lets the host finish the upload.

    Args:
        size: Image size (the blob model is built for it).
        board_name: A unicorn-simulated board.
        torn: The interrupted write programs half its bytes first.
        cuts: Which writes to cut at (1-based); default all.
        seed: Seed for the two images.
    """
    import threading

    from edgekit.core.profiles import get_board
    from edgekit.runtime.transport import SerialTransport
    from edgekit.sim.agent_build import port_for_board
    from edgekit.sim.mcu import McuSimulator

    board, _ = get_board(board_name)
    elf = build_blob_agent(port_for_board(board_name).name, size)
    rng = random.Random(seed)
    old, new = rng.randbytes(size), rng.randbytes(size)
    result = PowerCutResult()
    policy = trial_policy(size)
    with McuSimulator(elf, board) as sim, SerialTransport(sim.port_name) as t:
        c = DeviceClient(t, policy)
        c.hello()
        c.load(old)
        before = sim.storage_writes
        c.load(new)
        result.writes = sim.storage_writes - before
    for n in list(cuts) if cuts is not None else range(1, result.writes + 1):
        result.trials += 1
        where = f"write {n}{' (torn)' if torn else ''}"
        with McuSimulator(elf, board) as sim, SerialTransport(sim.port_name) as t:
            c = DeviceClient(t, policy)
            c.hello()
            c.load(old)
            seen: list[bytes | None] = []

            def power_cycle() -> None:
                if not sim.power_cut.wait(60):
                    return
                sim.stop()
                boot = boot_image(sim.read_storage())
                seen.append(boot.data if boot.intact and boot.slot is not None else None)
                sim.start()

            watcher = threading.Thread(target=power_cycle, daemon=True)
            sim.arm_power_cut(n, torn=torn)
            watcher.start()
            try:
                c.load(new)
                finished = True
            except EdgekitError as exc:
                finished = False
                result.failures.append(f"{where}: upload did not finish after power-on ({exc})")
            sim.disarm_power_cut()
            sim.power_cut.set()  # release the watcher if the cut never fired
            watcher.join(10)
            final = boot_image(sim.read_storage())
            if finished and final.data == new and final.intact:
                result.finished += 1
            elif finished:
                result.failures.append(f"{where}: load returned but the device boots another image")
        if not seen or seen[0] is None:
            result.without_valid_image += 1
            result.failures.append(f"{where}: {'cut never fired' if not seen else 'no valid image after the cut'}")
        elif seen[0] == old:
            result.old_image += 1
        elif seen[0] == new:
            result.new_image += 1
        else:
            result.without_valid_image += 1
            result.failures.append(f"{where}: booted an image that is neither old nor new")
    return result

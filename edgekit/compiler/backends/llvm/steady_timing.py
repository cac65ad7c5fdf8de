"""Side-by-side timings that stay right while other processes load the machine.

The int8/fp32 choice (:mod:`edgekit.compiler.backends.llvm.int8_choice`)
compares builds timed on the machine that compiles, and a compile often runs
beside other jobs (a CI runner, a laptop). Load only ever adds time, but not
evenly: TVM's thread pool spins at the end of every parallel loop until its
slowest thread arrives, so on a 2-core machine one busy process can make a
two-thread run 10x slower for as long as it runs, and a burst that hits one
variant's turn and not the other's reverses the comparison (a YOLOX compile
measured int8 228 ms, fp32 146 ms, mixed 24 ms; idle: int8 ~9, fp32 ~26).

So each comparison is measured in interleaved rounds (order rotated), and a
round is *disturbed* when

* tasks waited for a CPU during it (Linux pressure stall information,
  ``/proc/pressure/cpu`` "some": the share of the round's wall time during
  which at least one runnable task had no core) above
  :attr:`TimingPolicy.max_contention`; or
* any variant's best time in it is more than :attr:`TimingPolicy.tolerance`
  above that variant's best round (a burst the kernel did not report, or no
  pressure information on this system).

A variant's time is the low percentile of the timings in the undisturbed
rounds. While fewer than :attr:`TimingPolicy.min_clean` rounds are
undisturbed, more rounds are measured after a growing pause (the burst may
pass), until :attr:`TimingPolicy.max_seconds`; a measurement that never gets
them is *unreliable* (:attr:`Timing.reliable`), and its caller must not
decide on its times alone (:meth:`Timing.consistently_faster` says whether one
variant won every round even so).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgekit.package.sections import SectionReader

__all__ = [
    "LoadProbe",
    "NO_PROBE",
    "Timing",
    "TimingNoise",
    "TimingPolicy",
    "interleaved_times",
    "measure_interleaved",
    "steady_times",
]

#: The low percentile of a variant's timings that is its time.
PERCENTILE = 10
#: Under load, a variant is consistently faster than another where it is by the
#: margin in at least this share of the rounds, and by its low-percentile time
#: (:meth:`Timing.consistently_faster`): random bursts hit either variant, so
#: "every round" fails a 1.3x difference under two busy processes.
CONSISTENT_SHARE = 0.8
#: Timings per variant and round (:func:`steady_times`).
REPEAT = 5
#: Each timing repeats the call until it lasts this long (tiny layers).
MIN_REPEAT_MS = 1
#: Where Linux reports CPU pressure (kernel 4.20+, CONFIG_PSI).
PSI_CPU = Path("/proc/pressure/cpu")


@dataclass(frozen=True)
class TimingPolicy:
    """Named limits of one side-by-side measurement.

    Attributes:
        rounds: Interleaved rounds measured first (each variant timed
            ``repeat`` times per round).
        more_rounds: Rounds measured after each pause while too few are undisturbed.
        min_clean: Undisturbed rounds a reliable time needs.
        tolerance: A round whose best time for a variant is more than this
            fraction above that variant's best round is disturbed.
        max_contention: A round during which tasks waited for a CPU for more
            than this fraction of its wall time is disturbed.
        max_seconds: Measuring (pauses included) stops after this long.
        max_rounds: ... or after this many rounds.
        pauses_s: The pauses before each further batch (the last repeats):
            a burst of load often passes within seconds.
    """

    rounds: int = 5
    more_rounds: int = 3
    min_clean: int = 3
    tolerance: float = 0.25
    max_contention: float = 0.05
    max_seconds: float = 20.0
    max_rounds: int = 60
    pauses_s: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class _ProbeReading:
    wall: float
    stall_us: float | None
    busy_s: float | None
    own_s: float


class LoadProbe:
    """How much other tasks competed for the CPUs between two readings.

    Contention is the share of wall time during which some runnable task had
    no CPU (``/proc/pressure/cpu``, "some"); a run of the package's threads on
    a machine with a core free for each shows none, whatever else runs.
    Other processes' CPU use (``/proc/stat`` minus this process) is kept for
    the report. Both are ``None`` where the system does not report them.
    """

    def __init__(self, psi: Path = PSI_CPU, stat: Path = Path("/proc/stat")) -> None:
        self.psi, self.stat = psi, stat

    def read(self) -> _ProbeReading:
        t = os.times()
        return _ProbeReading(time.perf_counter(), self._stall_us(), self._busy_s(), t.user + t.system)

    def contention(self, before: _ProbeReading, after: _ProbeReading) -> float | None:
        """The share of the wall time between two readings during which some task waited for a CPU."""
        wall_us = (after.wall - before.wall) * 1e6
        if before.stall_us is None or after.stall_us is None or wall_us <= 0:
            return None
        return max(0.0, after.stall_us - before.stall_us) / wall_us

    def other_cores(self, before: _ProbeReading, after: _ProbeReading) -> float | None:
        """CPUs other processes used on average between two readings (10-ms clock ticks: read over seconds)."""
        wall = after.wall - before.wall
        if before.busy_s is None or after.busy_s is None or wall <= 0:
            return None
        return max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / wall

    def _stall_us(self) -> float | None:
        try:
            for line in self.psi.read_text().splitlines():
                if line.startswith("some "):
                    return float(dict(kv.split("=") for kv in line.split()[1:])["total"])
        except (OSError, ValueError, KeyError):
            pass
        return None

    def _busy_s(self) -> float | None:
        try:
            first = self.stat.read_text().splitlines()[0].split()
            ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
            return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None


class _NoProbe(LoadProbe):
    """Reports nothing (tests with fake timers; systems without /proc)."""

    def read(self) -> _ProbeReading:
        return _ProbeReading(0.0, None, None, 0.0)


#: A probe that measures nothing: only the times themselves tell disturbed rounds.
NO_PROBE: LoadProbe = _NoProbe()


@dataclass(frozen=True)
class Timing:
    """One side-by-side measurement of variants (builds or layers).

    Attributes:
        ms: Each variant's time: the low percentile of its timings in the
            undisturbed rounds (all rounds where too few were undisturbed).
        round_ms: Each round's best time of each variant.
        clean: Which rounds were undisturbed.
        contention: Each round's share of time some task waited for a CPU (None: not reported).
        other_cores: CPUs other processes used on average while measuring (None: not reported).
        seconds: Wall time the measurement took, pauses included.
        min_clean: Undisturbed rounds a reliable time needs (the policy's).
        check: Where this measurement (on two or more threads) was
            unreliable: the same variants timed on one thread. TVM's thread
            pool waits at every parallel loop for its slowest thread, so a
            busy core slows a variant in proportion to its parallel loops, not
            its time, and can favour one variant in every round; one thread
            shares a core in proportion to time (PP-OCR cls, 2-core Zen 4, one
            busy process: two threads had every round contended, one thread
            4 of 8 rounds clean).
    """

    ms: dict[str, float]
    round_ms: tuple[dict[str, float], ...] = ()
    clean: tuple[bool, ...] = ()
    contention: tuple[float | None, ...] = ()
    other_cores: float | None = None
    seconds: float = 0.0
    min_clean: int = 0
    check: "Timing | None" = None

    @classmethod
    def trusted(cls, ms: Mapping[str, float]) -> "Timing":
        """Times given rather than measured (an injected cost model): reliable, one round."""
        return cls({k: float(v) for k, v in ms.items()}, (dict(ms),), (True,), (None,))

    @property
    def reliable(self) -> bool:
        """True when enough rounds were undisturbed to decide on :attr:`ms`."""
        return sum(self.clean) >= self.min_clean

    @property
    def disturbed(self) -> int:
        """Rounds left out."""
        return len(self.clean) - sum(self.clean)

    @property
    def spread(self) -> float:
        """The worst variant's slowest round over its fastest (1.0: steady)."""
        worst = 1.0
        for k in self.ms:
            vals = [r[k] for r in self.round_ms if k in r and r[k] > 0]
            if vals:
                worst = max(worst, max(vals) / min(vals))
        return worst

    @property
    def max_contention(self) -> float | None:
        vals = [c for c in self.contention if c is not None]
        return max(vals) if vals else None

    def consistently_faster(self, a: str, b: str, margin: float) -> bool:
        """True when ``a`` beat ``b`` by more than ``margin`` in at least
        :data:`CONSISTENT_SHARE` of the rounds measured, disturbed or not, and
        by its time (:attr:`ms`); and on one thread too where that was
        checked (by its times where reliable, else the same way)."""
        rounds = [r for r in self.round_ms if a in r and b in r]
        wins = sum(r[a] < r[b] * (1 - margin) for r in rounds)
        if not rounds or wins < CONSISTENT_SHARE * len(rounds) or not self.ms[a] < self.ms[b] * (1 - margin):
            return False
        c = self.check
        if c is None:
            return True
        return c.ms[a] < c.ms[b] * (1 - margin) if c.reliable else c.consistently_faster(a, b, margin)


def _best(samples: Sequence[float]) -> float:
    return float(min(samples)) if len(samples) else float("inf")


def _clean_rounds(rounds: Sequence[Mapping[str, Sequence[float]]], contention: Sequence[float | None],
                  policy: TimingPolicy) -> tuple[bool, ...]:  # fmt: skip
    keys = list(rounds[0]) if rounds else []
    best = {k: min(_best(r[k]) for r in rounds) for k in keys}
    return tuple(
        (c is None or c <= policy.max_contention) and all(_best(r[k]) <= best[k] * (1 + policy.tolerance) for k in keys)
        for r, c in zip(rounds, contention)
    )


def measure_interleaved(
    time_once: Callable[[str], Sequence[float]],
    variants: Sequence[str],
    policy: TimingPolicy = TimingPolicy(),
    *,
    probe: LoadProbe | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> Timing:
    """Times ``variants`` side by side until enough rounds are undisturbed, or the policy's limits.

    Args:
        time_once: Times one variant once (a few repeats): its timings in ms.
        variants: The variants' names.
        policy: The limits.
        probe: Reads CPU contention around each round (default
            :class:`LoadProbe`; :data:`NO_PROBE` to rely on the times alone).
        clock, sleep: Injected by tests.

    Returns:
        The :class:`Timing`; check :attr:`Timing.reliable` before deciding on it.
    """
    probe = LoadProbe() if probe is None else probe
    keys = list(variants)
    rounds: list[dict[str, list[float]]] = []
    contention: list[float | None] = []
    started = clock()
    first = probe.read()
    pauses = iter(policy.pauses_s)
    pause = 0.0
    batch = policy.rounds
    clean: tuple[bool, ...] = ()
    while True:
        for _ in range(batch):
            shift = len(rounds) % len(keys)
            before = probe.read()
            got = {k: [float(x) for x in time_once(k)] for k in keys[shift:] + keys[:shift]}
            contention.append(probe.contention(before, probe.read()))
            rounds.append({k: got[k] for k in keys})
        clean = _clean_rounds(rounds, contention, policy)
        if (sum(clean) >= policy.min_clean or clock() - started >= policy.max_seconds
                or len(rounds) >= policy.max_rounds):  # fmt: skip
            break
        pause = next(pauses, pause)
        sleep(min(pause, max(0.0, policy.max_seconds - (clock() - started))))
        batch = policy.more_rounds
    reliable = sum(clean) >= policy.min_clean
    used = [r for r, ok in zip(rounds, clean) if ok or not reliable]
    ms = {k: float(np.percentile([x for r in used for x in r[k]], PERCENTILE)) for k in keys}
    return Timing(
        ms,
        tuple({k: _best(r[k]) for k in keys} for r in rounds),
        clean,
        tuple(contention),
        probe.other_cores(first, probe.read()),
        clock() - started,
        policy.min_clean,
    )


def interleaved_times(vms: Mapping[str, Any], rounds: int = 5) -> dict[str, float]:
    """Low-percentile time (ms) of each VM's ``main``, timed in interleaved rounds (order rotated)."""
    import tvm

    dev = tvm.cpu()
    keys = list(vms)
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for vm in vms.values():
        vm.invoke_stateful("main")  # warm-up
    for r in range(rounds):
        shift = r % len(keys)
        for k in keys[shift:] + keys[:shift]:
            timer = vms[k].time_evaluator("invoke_stateful", dev, number=1, repeat=REPEAT, min_repeat_ms=MIN_REPEAT_MS)
            samples[k] += [float(x) * 1e3 for x in timer("main").results]
    return {k: float(np.percentile(v, PERCENTILE)) for k, v in samples.items()}


def steady_times(vms: Mapping[str, Any], policy: TimingPolicy, threads: int = 0, *,
                 one_thread_check: bool = True) -> Timing:
    """Each VM's ``main`` timed side by side, rounds disturbed by load left
    out and re-measured (:func:`measure_interleaved`);
    where that stays unreliable on ``threads`` (0: every core) > 1 threads,
    timed again on one thread (:attr:`Timing.check`) if ``one_thread_check``."""
    import tvm

    from edgekit.core.threads import configure_tvm_threads, usable_cores

    dev = tvm.cpu()
    for vm in vms.values():
        vm.invoke_stateful("main")  # warm-up

    def once(key: str) -> list[float]:
        timer = vms[key].time_evaluator("invoke_stateful", dev, number=1, repeat=REPEAT, min_repeat_ms=MIN_REPEAT_MS)
        return [float(x) * 1e3 for x in timer("main").results]

    timing = measure_interleaved(once, list(vms), policy)
    if timing.reliable or not one_thread_check or (threads or usable_cores()) < 2:
        return timing
    configure_tvm_threads(1)
    try:
        return replace(timing, check=measure_interleaved(once, list(vms), policy))
    finally:
        configure_tvm_threads(threads)


@dataclass
class TimingNoise:
    """How steady the int8/fp32 choice's timings were; the manifest's ``int8_choice.noise``.

    Attributes:
        status: ``steady`` (no round left out), ``disturbed`` (rounds left
            out, but enough undisturbed ones to decide), ``noisy`` (a
            measurement stayed unreliable: the decision did not rely on it),
            or ``""`` (nothing measured, or a package from before this field).
        measurements: Side-by-side measurements made (layers and whole builds).
        unreliable: Those that never got enough undisturbed rounds.
        rounds, disturbed_rounds: Rounds measured, and left out, in all.
        spread: The worst slowest-to-fastest round ratio of one variant seen.
        max_contention: The highest share of a round during which tasks waited for a CPU.
        other_cores: The most CPUs other processes used, on average, during one measurement.
        advice: What to do about it, where noisy.
        one_thread_checks: Unreliable measurements repeated on one thread
            (:attr:`Timing.check`).
    """

    status: str = ""
    measurements: int = 0
    unreliable: int = 0
    rounds: int = 0
    disturbed_rounds: int = 0
    spread: float = 1.0
    max_contention: float | None = None
    other_cores: float | None = None
    advice: str = ""
    one_thread_checks: int = 0

    def add(self, timing: Timing) -> None:
        """Counts one measurement."""
        self.measurements += 1
        self.unreliable += not timing.reliable
        self.rounds += len(timing.clean)
        self.disturbed_rounds += timing.disturbed
        self.spread = max(self.spread, timing.spread)
        if timing.max_contention is not None:
            self.max_contention = max(self.max_contention or 0.0, timing.max_contention)
        if timing.other_cores is not None:
            self.other_cores = max(self.other_cores or 0.0, timing.other_cores)
        self.one_thread_checks += timing.check is not None
        self.status = "noisy" if self.unreliable else "disturbed" if self.disturbed_rounds else "steady"

    def in_words(self) -> str:
        """One sentence for the report; "" when steady or unknown."""
        if self.status not in ("noisy", "disturbed"):
            return ""
        load = []
        if self.max_contention is not None:
            load.append(f"tasks waited for a CPU up to {self.max_contention:.0%} of a round")
        if self.other_cores is not None:
            load.append(f"other processes used up to {self.other_cores:.1f} CPUs")
        text = (f"timing {self.status}: {self.disturbed_rounds} of {self.rounds} rounds disturbed by load "
                f"(slowest round {self.spread:.1f}x the fastest{'; ' + ', '.join(load) if load else ''})")  # fmt: skip
        if self.status == "noisy":
            text += f"; {self.unreliable} of {self.measurements} measurements stayed unreliable"
        return text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status, "measurements": self.measurements, "unreliable": self.unreliable,
            "rounds": self.rounds, "disturbed_rounds": self.disturbed_rounds, "spread": round(self.spread, 3),
            "max_contention": None if self.max_contention is None else round(self.max_contention, 3),
            "other_cores": None if self.other_cores is None else round(self.other_cores, 2),
            "advice": self.advice, "one_thread_checks": self.one_thread_checks,
        }  # fmt: skip
        return out

    @classmethod
    def from_json(cls, data: Any, *, where: str = "package") -> "TimingNoise":
        """The manifest's ``int8_choice.noise`` (absent in packages from before it: status "")."""
        r = SectionReader(data, "int8_choice.noise", where)
        return cls(
            r.get("status", str, ""), r.get("measurements", int, 0), r.get("unreliable", int, 0),
            r.get("rounds", int, 0), r.get("disturbed_rounds", int, 0), float(r.get("spread", float, 1.0)),
            r.get("max_contention", float, None, optional=True), r.get("other_cores", float, None, optional=True),
            r.get("advice", str, ""), r.get("one_thread_checks", int, 0),
        )  # fmt: skip

"""A fake machine under load, for the int8/fp32 choice's timing tests: no wall time is measured."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from edgekit.compiler.backends.llvm.steady_timing import NO_PROBE, LoadProbe, Timing, TimingPolicy, measure_interleaved


class LoadedMachine:
    """A fake machine: each variant's quiet time, and load that inflates a
    variant's turn by ``factor`` with probability ``p`` while ``load_until``
    (fake seconds) has not passed. Time advances by what it measures and sleeps.
    ``contended``: the kernel reports CPU pressure in every round (busy
    processes that slow a turn only now and then)."""

    def __init__(self, quiet: dict[str, float], *, p: float = 1.0, factor: float = 10.0, load_until: float = 1e9,
                 hit: tuple[str, ...] = (), seed: int = 0, contended: bool = False) -> None:  # fmt: skip
        self.quiet, self.p, self.factor, self.load_until = quiet, p, factor, load_until
        self.hit_names = set(hit)
        self.hit = self.hit_names or set(quiet)
        self.rng = np.random.default_rng(seed)
        self.now = 0.0
        self.slow_turns: list[bool] = []
        self.contended = contended

    def loaded(self) -> bool:
        return self.now < self.load_until

    def time_once(self, key: str) -> list[float]:
        slow = self.loaded() and key in self.hit and self.rng.random() < self.p
        times = [self.quiet[key] * (self.factor if slow else 1.0) * (1 + 0.01 * self.rng.random()) for _ in range(5)]
        self.now += sum(times) / 1e3
        self.slow_turns.append(slow)
        return times

    def probe(self) -> LoadProbe:
        """What /proc/pressure/cpu would say: contention in a round where the load slowed a turn."""
        machine = self

        class Pressure(LoadProbe):
            def read(self):
                return len(machine.slow_turns)

            def contention(self, before, after):
                return 0.5 if machine.contended or any(machine.slow_turns[before:after]) else 0.0

            def other_cores(self, before, after):
                return None

        return Pressure()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def measure(self, quiet: Mapping[str, float], policy: TimingPolicy = TimingPolicy(), *,
                pressure: bool = True) -> Timing:  # fmt: skip
        """``quiet`` (variant: ms) timed side by side on this machine, by the real measuring code."""
        self.quiet = dict(quiet)
        self.hit = self.hit_names & set(quiet) if self.hit_names else set(quiet)
        return measure_interleaved(self.time_once, list(quiet), policy, probe=self.probe() if pressure else NO_PROBE,
                                   clock=self.clock, sleep=self.sleep)  # fmt: skip


class LoadedCost:
    """A cost provider that times quiet layer and build times on a :class:`LoadedMachine`.

    ``one_thread``: the builds' quiet times on one thread, measured as the
    host timer's check where the package's threads gave no reliable time
    (that load does not hit one thread: its turns are not slowed).
    """

    source = "measured"
    timing = "a fake loaded machine"

    def __init__(self, machine: LoadedMachine, layers: Mapping[str, tuple[float, float]], model: Mapping[str, float],
                 one_thread: Mapping[str, float] | None = None, pressure: bool = True) -> None:  # fmt: skip
        self.machine, self.layers, self.model = machine, layers, model
        self.one_thread, self.pressure = one_thread, pressure
        self.asked: list[str] = []

    def layer_times(self, probe: Any) -> Timing:
        self.asked.append(probe.node)
        t8, t32 = self.layers.get(probe.node, (1.0, 2.0))
        return self.machine.measure({"int8": t8, "fp32": t32}, TimingPolicy(max_seconds=5.0), pressure=self.pressure)

    def model_times(self, builds: Mapping[str, Any], prepared: Any) -> Timing:
        t = self.machine.measure({k: self.model[k] for k in builds}, pressure=self.pressure)
        if t.reliable or self.one_thread is None:
            return t
        quiet = LoadedMachine({k: self.one_thread[k] for k in builds}, load_until=0)
        return replace(t, check=quiet.measure(quiet.quiet))

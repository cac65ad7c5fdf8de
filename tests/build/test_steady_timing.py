"""Side-by-side timings on a loaded machine (edgekit.compiler.backends.llvm.steady_timing).

Fake timers and a fake clock: no wall time is measured or asserted.
"""

from __future__ import annotations

import pytest
from _loaded_machine import LoadedMachine

from edgekit.compiler.backends.llvm.steady_timing import (
    NO_PROBE,
    LoadProbe,
    Timing,
    TimingNoise,
    TimingPolicy,
    measure_interleaved,
)


def _measure(machine: LoadedMachine, policy: TimingPolicy = TimingPolicy(), probe: LoadProbe = NO_PROBE) -> Timing:
    return measure_interleaved(machine.time_once, list(machine.quiet), policy, probe=probe, clock=machine.clock,
                               sleep=machine.sleep)  # fmt: skip


def test_a_quiet_machine_is_measured_in_the_first_rounds():
    m = LoadedMachine({"int8": 1.0, "fp32": 2.0}, load_until=0)
    t = _measure(m)
    assert t.reliable and len(t.clean) == TimingPolicy().rounds and t.disturbed == 0
    assert t.ms["int8"] == pytest.approx(1.0, rel=0.02) and t.ms["fp32"] == pytest.approx(2.0, rel=0.02)
    assert t.spread < 1.05


def test_a_burst_that_passes_is_waited_out_and_left_out():
    # int8's turn is 10x slower in every round of the first 5 fake seconds: the
    # first rounds look steady by their times (a plain percentile of them says
    # int8 is 10 ms); the kernel's CPU pressure says they were contended.
    m = LoadedMachine({"int8": 1.0, "fp32": 2.0}, load_until=5.0, hit=("int8",))
    t = _measure(m, probe=m.probe())
    assert t.reliable and t.disturbed >= TimingPolicy().rounds
    assert t.ms["int8"] == pytest.approx(1.0, rel=0.02) and t.ms["fp32"] == pytest.approx(2.0, rel=0.02)
    assert t.spread > 9
    assert m.now > 5.0  # it paused until the burst had passed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bursts_on_one_variant_are_told_by_the_times_alone(seed):
    # No pressure information (NO_PROBE): a round is disturbed when a variant is
    # far above its best round.
    m = LoadedMachine({"int8": 1.0, "fp32": 2.0}, p=0.5, hit=("int8",), seed=seed)
    t = _measure(m)
    slow_int8 = [r["int8"] > 5 for r in t.round_ms]
    assert any(slow_int8) and not all(slow_int8), "the seed must give some bursts"
    assert t.clean == tuple(not s for s in slow_int8)
    assert t.reliable and t.ms["int8"] == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bursts_with_pressure_reported_give_the_quiet_times(seed):
    m = LoadedMachine({"int8": 1.0, "fp32": 2.0, "mixed": 1.5}, p=0.3, seed=seed)
    t = _measure(m, probe=m.probe())
    assert t.reliable and t.disturbed > 0
    assert t.ms == pytest.approx({"int8": 1.0, "fp32": 2.0, "mixed": 1.5}, rel=0.02)


def test_load_that_never_passes_is_unreliable_within_the_limits():
    m = LoadedMachine({"int8": 1.0, "fp32": 2.0}, p=0.5, seed=1)
    policy = TimingPolicy(max_seconds=8.0)

    class Contended(LoadProbe):  # what /proc/pressure/cpu reports while a busy process competes
        def read(self):
            return super().read()

        def contention(self, before, after):
            return 0.5

        def other_cores(self, before, after):
            return 1.0

    t = _measure(m, policy, Contended())
    assert not t.reliable and sum(t.clean) == 0
    assert m.now <= policy.max_seconds + 1.0  # the limit holds (one batch may run past it)
    assert t.max_contention == 0.5 and t.other_cores == 1.0
    noise = TimingNoise()
    noise.add(t)
    assert noise.status == "noisy" and "tasks waited for a CPU up to 50%" in noise.in_words()


def test_contention_reported_by_the_kernel_disturbs_a_round_whose_times_look_steady():
    m = LoadedMachine({"int8": 1.0, "fp32": 2.0}, load_until=0)
    calls = iter(range(10_000))

    class FirstRoundsContended(LoadProbe):
        def read(self):
            return super().read()

        def contention(self, before, after):
            return 0.4 if next(calls) < 5 else 0.0

    t = _measure(m, probe=FirstRoundsContended())
    assert t.clean[:5] == (False,) * 5 and t.reliable and t.disturbed == 5


def test_consistently_faster_needs_every_round_and_the_one_thread_check():
    rounds = ({"int8": 3.0, "fp32": 2.0}, {"int8": 9.0, "fp32": 2.5}, {"int8": 2.2, "fp32": 2.0})
    t = Timing({"int8": 3.0, "fp32": 2.0}, rounds, (False,) * 3, (0.5,) * 3, min_clean=3)
    assert t.consistently_faster("fp32", "int8", 0.05)
    assert not Timing(t.ms, rounds[:2] + ({"int8": 2.0, "fp32": 2.0},), t.clean, t.contention,
                      min_clean=3).consistently_faster("fp32", "int8", 0.05)  # fmt: skip
    # On one thread (every round clean) int8 is the faster: the two-thread rounds were the pool's barriers.
    check = Timing({"int8": 1.0, "fp32": 2.0}, ({"int8": 1.0, "fp32": 2.0},) * 3, (True,) * 3, (0.0,) * 3,
                   min_clean=3)  # fmt: skip
    assert not Timing(t.ms, rounds, t.clean, t.contention, min_clean=3, check=check).consistently_faster(
        "fp32", "int8", 0.05)  # fmt: skip


def test_the_probe_reads_this_machine_or_nothing(tmp_path):
    probe = LoadProbe(psi=tmp_path / "missing", stat=tmp_path / "missing")
    a, b = probe.read(), probe.read()
    assert probe.contention(a, b) is None and probe.other_cores(a, b) is None
    (tmp_path / "psi").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\nfull total=0\n")
    assert LoadProbe(psi=tmp_path / "psi").read().stall_us == 1000.0


def test_noise_round_trips_and_old_manifests_read_as_unknown():
    noise = TimingNoise()
    noise.add(Timing({"a": 1.0}, ({"a": 1.0}, {"a": 5.0}), (True, False), (None, 0.3), 1.2, 3.0, 1))
    assert TimingNoise.from_json(noise.to_json()) == noise
    assert noise.status == "disturbed" and "1 of 2 rounds disturbed" in noise.in_words()
    assert TimingNoise.from_json({}).status == "" and TimingNoise.from_json({}).in_words() == ""

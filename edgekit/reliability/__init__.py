"""Fault-injection trials over simulated devices and their independent oracle.

Not simulators: :mod:`~edgekit.reliability.trials` drives the real host stack
(``runtime``) against the device agent on a simulator (``sim``) through a
faulty link and judges each transfer; :mod:`~edgekit.reliability.slots`
parses the agent's weights-slot storage from outside, so the verdict never
trusts the device's own answers. Used by ``tests/sim/test_faults.py`` and
``benchmarks/reliability.py`` (docs/reliability.md); nothing in the library
imports it, so it sits in the top layer beside ``cli`` and ``testing``.
"""

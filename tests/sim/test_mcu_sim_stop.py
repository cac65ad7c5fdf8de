"""The unicorn MCU simulator stopped from two threads at once.

A test's timer (or a watchdog) may kill the simulated core while the caller
closes the simulator: both call ``stop()``. One must halt the core and the
other return once it is halted, with no exception in either thread.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from edgekit.core.profiles import get_board
from edgekit.sim.mcu import McuSimulator

from _agent_helpers import build


def _slow_join(sim: McuSimulator) -> None:
    # Widen the window between a stop()'s join and its bookkeeping, where a
    # second stop() used to find the thread gone (AttributeError on None).
    thread: Any = sim._thread
    join = thread.join

    def slow(timeout: float | None = None) -> None:
        join(timeout)
        time.sleep(0.05)

    thread.join = slow


def test_two_threads_stopping_the_core_at_once_both_return_cleanly() -> None:
    board = get_board("rv32-mcu-sim")[0]
    sim = McuSimulator(build("rv32-sim"), board)
    try:
        for _ in range(3):
            _slow_join(sim)
            gate = threading.Barrier(2)
            errors: list[BaseException] = []

            def stop() -> None:
                gate.wait()
                try:
                    sim.stop()
                except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                    errors.append(exc)

            workers = [threading.Thread(target=stop) for _ in range(2)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(timeout=20)
            assert not any(w.is_alive() for w in workers)
            assert errors == []
            assert sim._thread is None  # halted, and halted once
            sim.start()  # the core powers on again after a double stop
            assert sim._thread is not None and sim._thread.is_alive()
    finally:
        sim.close()

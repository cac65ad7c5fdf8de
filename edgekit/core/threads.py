"""TVM's runtime thread pool for in-process runs: how many threads, and left to the OS scheduler.

One setup for every in-process use of compiled CPU code: ``build_cpu`` and the
benchmarks (:func:`edgekit.compiler.backends.llvm.relax_build.set_num_threads`)
and ``edgekit run`` / ``bench`` on the host board (:mod:`edgekit.runtime.host`).

TVM sizes its pool once, on first use, from ``TVM_NUM_THREADS``; without it,
from *half* the hardware threads on x86 (1 thread on a 2-core machine). So the
variable is set to every usable core before the pool exists, and
``runtime.config_threadpool`` then selects the threads wanted (it can lower
the count of an existing pool, not raise it past its size).

Threads are not pinned (``TVM_BIND_THREADS=0`` unless the user set it). TVM
pins each worker to a core but leaves the calling thread, which runs the
first share of every parallel loop, free on all cores; the scheduler then
often puts it on the core of its own worker when another process is busy
elsewhere, and the two threads take turns on one core. Measured on the
2-core Zen 5 host with other jobs using 1-1.5 cores (PP-OCR det int8, two
threads, ten fresh processes per setup, 2026-12-06): pinned workers ran at a
median 6.08 ms per inference (the calling thread shared core 1 with its
worker in 6 of 10 processes: 6.0 ms, slower than one thread's 5.25), unpinned
threads at 5.47 ms; pinning the calling thread to the other core as well,
15.2 ms (it then shares that core with the other job). Two later batches: 10.6
against 9.3 ms, and 5.36 against 5.35 (docs/performance.md, "Threads").
"""

from __future__ import annotations

import logging
import os

__all__ = ["configure_tvm_threads", "usable_cores"]

logger = logging.getLogger(__name__)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_tvm_threads(threads: int = 0) -> int:
    """Sets the threads TVM's pool runs parallel loops on in this process.

    Args:
        threads: Threads to use (a board's ``cores``); 0 means every usable core.

    Returns:
        The number of threads now in use (``runtime.NumThreads``). Call this
        before the first inference of the process; a pool started earlier
        with fewer threads keeps them (a warning says so).
    """
    import tvm

    cores = usable_cores()
    n = int(threads) if threads and threads > 0 else cores
    os.environ.setdefault("TVM_NUM_THREADS", str(max(n, cores)))
    os.environ.setdefault("TVM_BIND_THREADS", "0")
    config = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    if config is not None:
        config(1, n)  # 1 = kBig: all cores of a homogeneous CPU
    current = int(tvm.get_global_func("runtime.NumThreads")())
    if current != n:
        logger.warning(
            "TVM runs %d threads, not %d: its thread pool was started earlier with TVM_NUM_THREADS=%s",
            current,
            n,
            os.environ.get("TVM_NUM_THREADS"),
        )
    return current

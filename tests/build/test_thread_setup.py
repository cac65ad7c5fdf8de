"""TVM's thread pool as edgekit sets it up (edgekit.core.threads): sized to the cores, threads not pinned.

Each case runs in a fresh interpreter: TVM creates its pool once per process,
and pins its workers at creation unless ``TVM_BIND_THREADS=0``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgekit.core.threads import usable_cores

#: Sets up the pool, runs one parallel loop, prints each thread's allowed cores.
_CHILD = """
import json, os, sys
import numpy as np, tvm
from tvm import te
from edgekit.core.threads import configure_tvm_threads
n = configure_tvm_threads(2)
x = te.placeholder((4096,), "float32", name="x")
y = te.compute((4096,), lambda i: x[i] + 1.0, name="y")
sch = tvm.s_tir.Schedule(te.create_prim_func([x, y]))
outer, _ = sch.split(sch.get_loops(sch.get_sblock("y"))[0], factors=[64, None])
sch.parallel(outer)
f = tvm.tirx.build(sch.mod, target="llvm")
a = tvm.runtime.tensor(np.zeros(4096, "float32"))
b = tvm.runtime.tensor(np.zeros(4096, "float32"))
for _ in range(20):
    f(a, b)
assert (b.numpy() == 1.0).all()
tids = os.listdir("/proc/self/task")
print(json.dumps({"threads": n, "affinity": [sorted(os.sched_getaffinity(int(t))) for t in tids]}))
"""


def _child(env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TVM_") or k in env}
    out = subprocess.run([sys.executable, "-c", _CHILD], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


needs_two_cores = pytest.mark.skipif(
    not sys.platform.startswith("linux") or usable_cores() < 2, reason="needs Linux and two usable cores"
)


@needs_two_cores
def test_pool_threads_are_not_pinned():
    got = _child({})
    assert got["threads"] == 2
    every = sorted(os.sched_getaffinity(0))
    assert all(a == every for a in got["affinity"]), got


@needs_two_cores
def test_a_user_can_still_pin_them():
    got = _child({"TVM_BIND_THREADS": "1"})
    assert got["threads"] == 2
    assert any(len(a) == 1 for a in got["affinity"]), got  # TVM's own binding: a worker on one core

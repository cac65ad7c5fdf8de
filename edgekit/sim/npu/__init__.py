"""The NPU's simulator: the Python model of the accelerator (functional and
cycle-level, :mod:`.simulator`) and the simulated board that runs it behind
the command/completion rings (:mod:`.device`, with :func:`.device.open_simulated`,
the ``npu`` entry of the SIMULATORS registry). The ISA, ring protocol and
driver it runs against live in :mod:`edgekit.npu`.
"""

__all__: list[str] = []

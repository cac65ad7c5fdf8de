"""The NPU's simulators: the Python model of the accelerator (functional and
cycle-level, :mod:`.simulator`) and the simulated board that runs it behind
the command/completion rings (:mod:`.device`), and the accelerator's RTL
under Verilator (:mod:`.verilator` builds it; :mod:`.rtl_device` puts it
behind the same rings; :mod:`.rtl_board` runs a whole FPGA board top behind
its serial line). They are the ``npu`` entry of the SIMULATORS registry and
its parts. The ISA, ring protocol, RTL sources and register maps they
implement live in :mod:`edgekit.npu`.
"""

__all__: list[str] = []

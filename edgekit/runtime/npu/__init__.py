"""The host side of the NPU: the driver of its command/completion rings
(:mod:`.driver`), the executor that runs a package's host sub-graphs and
accelerator layers in order (:mod:`.executor`), the loader that puts a
package into a device, simulated or real (:mod:`.loader`), the runner of
``npu`` packages that uses them (:mod:`.runner`) and the host side of the FPGA
boards' UART bridge (:mod:`.bridge`). The register map
and ring protocol they speak are :mod:`edgekit.npu.regmap`'s; the simulated
devices are :mod:`edgekit.sim.npu`'s, reached through the SIMULATORS registry.
"""

__all__: list[str] = []

"""The FPGA-style int8 accelerator: ISA, partitioner, tiler, code generator,
cycle-level simulator, driver interface and hybrid host/accelerator executor.

See ``docs/npu-isa.md``. Submodules are imported on use; this package does
not import onnxruntime or TVM.
"""

__all__: list[str] = []

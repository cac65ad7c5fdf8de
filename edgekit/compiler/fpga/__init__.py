"""The accelerator's hardware build: the NPU's RTL synthesized for an FPGA.

:mod:`.synth` runs the open flow (Yosys, nextpnr-ecp5, ecppack from YoWASP)
for Lattice ECP5 parts; :mod:`.xilinx` writes a Vivado build and Yosys
``synth_xilinx`` estimates for the Zynq boards; :mod:`.board` is ``edgekit
synth``: a board top's bitstream and, with a model, its memory images and
the predicted latency. Which RTL files and Verilog parameters make a design
is :mod:`edgekit.npu.rtl_sources`, shared with the Verilator co-simulation.
"""

__all__: list[str] = []

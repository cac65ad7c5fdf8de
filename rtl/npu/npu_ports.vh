// Parameter and port lists that several NPU modules declare alike, written
// once here (Verilog-2005 has no interfaces). Included by the modules that
// use them; found through the include path rtl/npu (Verilator -I, Yosys
// read_verilog -I, Vivado -include_dirs), also from rtl/boards.
`ifndef NPU_PORTS_VH
`define NPU_PORTS_VH

// The accelerator's configuration (npu_top and every wrapper of it), with
// the defaults of the wrapping module: INP_DEPTH entries of ROWS int8,
// WGT_DEPTH entries of ROWS x COLS int8, ACC_DEPTH entries of COLS int32;
// DMA_BYTES a power of two; ARRAY_DSP how many of the MAC array's products
// use DSP blocks (the rest: LUTs).
`define NPU_PARAMS(INP, WGT, ACC, DSP) \
    parameter ROWS = 8, \
    parameter COLS = 8, \
    parameter INP_DEPTH = INP, \
    parameter WGT_DEPTH = WGT, \
    parameter ACC_DEPTH = ACC, \
    parameter DMA_BYTES = 8, \
    parameter ARRAY_DSP = DSP

// A wrapper passing its NPU_PARAMS on to the module it instantiates.
`define NPU_PARAMS_PASS .ROWS(ROWS), .COLS(COLS), .INP_DEPTH(INP_DEPTH), .WGT_DEPTH(WGT_DEPTH), \
    .ACC_DEPTH(ACC_DEPTH), .DMA_BYTES(DMA_BYTES), .ARRAY_DSP(ARRAY_DSP)

// An instruction unit started by npu_top (npu_dma_rd, npu_alu, npu_store):
// `start` for one cycle with the instruction word `insn`, `busy` from the
// next cycle, `done` in the cycle its last result lands.
`define NPU_UNIT_PORTS \
    input  wire         clk, \
    input  wire         rst, \
    input  wire         start, \
    input  wire [255:0] insn, \
    output wire         busy, \
    output wire         done

// npu_top's external memory, declared from either side: instruction fetch
// (if_*: 32-byte words), data read (rd_*) and data write (wr_*) of
// DMA_BYTES with byte addresses. REQ is the requests' direction and kind
// (`output wire` on the NPU's side, `input wire` on the memory's), RSP the
// response data's, ACK the response strobes' (if_rvalid, rd_rvalid, wr_ack:
// `input wire` on the NPU's side, `output reg` where the memory registers
// them).
`define NPU_MEM_PORTS(REQ, RSP, ACK) \
    REQ                     if_req, \
    REQ [39:0]              if_addr, \
    ACK                     if_rvalid, \
    RSP [255:0]             if_rdata, \
    REQ                     rd_req, \
    REQ [39:0]              rd_addr, \
    ACK                     rd_rvalid, \
    RSP [DMA_BYTES*8-1:0]   rd_data, \
    REQ                     wr_req, \
    REQ [39:0]              wr_addr, \
    REQ [DMA_BYTES*8-1:0]   wr_data, \
    REQ [DMA_BYTES-1:0]     wr_strb, \
    ACK                     wr_ack

// The external memory ports connected to nets of the same names.
`define NPU_MEM_CONNECT \
    .if_req(if_req), .if_addr(if_addr), .if_rvalid(if_rvalid), .if_rdata(if_rdata), \
    .rd_req(rd_req), .rd_addr(rd_addr), .rd_rvalid(rd_rvalid), .rd_data(rd_data), \
    .wr_req(wr_req), .wr_addr(wr_addr), .wr_data(wr_data), .wr_strb(wr_strb), .wr_ack(wr_ack)

`endif

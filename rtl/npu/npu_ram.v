// One on-chip buffer: a simple dual-port RAM (one write port, one read port
// with a registered output that holds its value while `re` is low). Yosys
// maps it to block RAM; Verilator simulates it as an array.
`default_nettype none
module npu_ram #(
    parameter WIDTH = 64,
    parameter DEPTH = 1024,
    parameter AW = 10
) (
    input  wire             clk,
    input  wire             we,
    input  wire [AW-1:0]    waddr,
    input  wire [WIDTH-1:0] wdata,
    input  wire             re,
    input  wire [AW-1:0]    raddr,
    output reg  [WIDTH-1:0] rdata
);
    // A read of the entry written in the same cycle is undefined, as in the
    // FPGA's block RAM (no bypass logic): the NPU never relies on it (the
    // GEMM forwards its own pending writes; tokens order everything else).
    (* no_rw_check *)
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    always @(posedge clk) begin
        if (we) mem[waddr] <= wdata;
        if (re) rdata <= mem[raddr];
    end
endmodule

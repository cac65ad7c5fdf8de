// Synthesis wrapper of npu_top for an FPGA with few pins: every port of the
// NPU (host registers, instruction, read and write memory ports) sits in a
// shift register reached through scan_in/scan_out. While scan_en is high
// the registers shift one bit per cycle; otherwise the NPU runs from the
// held inputs and the outputs are captured every cycle. It keeps every NPU
// port observable (nothing is optimised away) so that resources and Fmax
// are those of the real design; it is not a usable board interface.
`default_nettype none
`include "npu_ports.vh"
module npu_scan_top #(
    `NPU_PARAMS(4096, 512, 1024, 1 << 30)
) (
    input  wire clk,
    input  wire rst,
    input  wire scan_en,
    input  wire scan_in,
    output wire scan_out
);
    localparam B = DMA_BYTES;
    localparam WI = 1 + 8 + 32 + 1 + 256 + 1 + B * 8 + 1;
    localparam WO = 32 + 1 + 40 + 1 + 40 + 1 + 40 + B * 8 + B;
    reg [WI-1:0] ins;
    reg [WO-1:0] outs;
    wire [WO-1:0] captured;
    wire [31:0] host_rdata;
    wire if_req, rd_req, wr_req;
    wire [39:0] if_addr, rd_addr, wr_addr;
    wire [B*8-1:0] wr_data;
    wire [B-1:0] wr_strb;
    npu_top #(`NPU_PARAMS_PASS) npu (
        .clk(clk), .rst(rst),
        .host_we(ins[0] && !scan_en), .host_addr(ins[8:1]), .host_wdata(ins[40:9]), .host_rdata(host_rdata),
        .if_req(if_req), .if_addr(if_addr), .if_rvalid(ins[41] && !scan_en), .if_rdata(ins[297:42]),
        .rd_req(rd_req), .rd_addr(rd_addr), .rd_rvalid(ins[298] && !scan_en), .rd_data(ins[299 +: B*8]),
        .wr_req(wr_req), .wr_addr(wr_addr), .wr_data(wr_data), .wr_strb(wr_strb), .wr_ack(ins[WI-1] && !scan_en));
    assign captured = {host_rdata, if_req, if_addr, rd_req, rd_addr, wr_req, wr_addr, wr_data, wr_strb};
    assign scan_out = outs[WO-1];
    always @(posedge clk) begin
        if (scan_en) begin
            ins <= {ins[WI-2:0], scan_in};
            outs <= {outs[WO-2:0], 1'b0};
        end else begin
            outs <= captured;
        end
    end
endmodule

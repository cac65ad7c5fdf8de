// The NPU's external memory on a board without DRAM controller: on-chip
// block RAM in 32 byte-wide banks (bank j holds the bytes whose address is
// j mod 32), so that one cycle reads a whole 32-byte instruction and an
// unaligned DMA beat touches each bank at most once.
//
// Ports (npu_top's external memory, plus the host bridge):
//   instruction fetch: 32-byte aligned (program bases are 64-byte aligned,
//     docs/npu-isa.md), data the next cycle, priority over everything;
//   DMA read: any byte address, queued (up to QDEPTH requests; npu_dma_rd
//     keeps fewer in flight), data 2 cycles after the request when the port
//     is free, in order;
//   DMA write: any byte address with byte strobes, written in the cycle of
//     the request, acknowledged the next cycle; priority over the host;
//   host: one byte per request (the UART bridge), served in free cycles.
// Addresses at or beyond MEM_BYTES are not backed by memory: the host checks
// that a model fits (edgekit.runtime.npu_bridge).
`default_nettype none
`include "npu_ports.vh"
module npu_board_mem #(
    parameter MEM_BYTES = 131072,  // a multiple of 32 bytes
    parameter DMA_BYTES = 8,
    parameter QDEPTH = 32,
    parameter QAW = 5
) (
    input  wire                    clk,
    input  wire                    rst,
    `NPU_MEM_PORTS(input wire, output wire, output reg),  // npu_ports.vh
    // host (bridge) byte port: hold h_re or h_we until h_ack
    input  wire                    h_re,
    input  wire                    h_we,
    input  wire [31:0]             h_addr,
    input  wire [7:0]              h_wdata,
    output reg                     h_ack,
    output wire [7:0]              h_rdata
);
    localparam NB = 32;
    localparam DEPTH = MEM_BYTES / NB;
    localparam AW = $clog2(DEPTH);
    localparam B = DMA_BYTES;

    // ----------------------------------------------------- DMA read queue
    wire [39:0] q_addr;
    wire q_empty;
    wire rd_go = !if_req && !q_empty;
    npu_fifo #(.WIDTH(40), .DEPTH(QDEPTH), .AW(QAW)) rq (
        .clk(clk), .clear(rst), .push(rd_req), .din(rd_addr), .pop(rd_go),
        .dout(q_addr), .empty(q_empty), .full(), .count());
    wire h_rgo = h_re && !h_ack && !if_req && q_empty;
    wire h_wgo = h_we && !h_ack && !wr_req;

    // ------------------------------------------------------------- banks
    wire [7:0] q [0:NB-1];
    reg  [4:0] rsel;  // rotation of the read served last cycle
    genvar j;
    generate
        for (j = 0; j < NB; j = j + 1) begin : bank
            reg [7:0] mem [0:DEPTH-1];
            reg [7:0] rdata;
            // read: the row of byte j of the access (the next row for banks
            // before the access's first bank)
            wire [4:0] first_r = q_addr[4:0];
            wire [AW-1:0] rrow = if_req ? if_addr[AW+4:5]
                               : !q_empty ? q_addr[AW+4:5] + (j < first_r ? 1'b1 : 1'b0)
                               : h_addr[AW+4:5];
            // write: lane i = j - first of the beat, if inside it and strobed
            wire [4:0] lane = j[4:0] - wr_addr[4:0];
            wire dma_we = wr_req && lane < B && wr_strb[lane];
            wire [AW-1:0] wrow = wr_req ? wr_addr[AW+4:5] + (j < wr_addr[4:0] ? 1'b1 : 1'b0) : h_addr[AW+4:5];
            wire we = dma_we || (h_wgo && h_addr[4:0] == j);
            wire [7:0] wd = wr_req ? wr_data[lane[$clog2(B > 1 ? B : 2)-1:0]*8 +: 8] : h_wdata;
            always @(posedge clk) begin
                if (we) mem[wrow] <= wd;
                rdata <= mem[rrow];
            end
            assign q[j] = rdata;
            assign if_rdata[j*8 +: 8] = rdata;
        end
    endgenerate

    genvar i;
    generate
        for (i = 0; i < B; i = i + 1) begin : beat
            wire [4:0] k = rsel + i;
            assign rd_data[i*8 +: 8] = q[k];
        end
    endgenerate
    assign h_rdata = q[rsel];

    always @(posedge clk) begin
        if (rst) begin
            if_rvalid <= 1'b0;
            rd_rvalid <= 1'b0;
            wr_ack <= 1'b0;
            h_ack <= 1'b0;
        end else begin
            if_rvalid <= if_req;
            rd_rvalid <= rd_go;
            wr_ack <= wr_req;
            h_ack <= h_rgo || h_wgo;
            rsel <= rd_go ? q_addr[4:0] : h_addr[4:0];
        end
    end
endmodule

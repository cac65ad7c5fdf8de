// A board's NPU system: npu_top, its external memory in block RAM
// (npu_board_mem.v) and the UART bridge (npu_bridge.v) through which a host
// loads the program and weights, starts the NPU and reads the outputs.
// Board tops (ulx3s_top.v) add pins, reset and LEDs.
`default_nettype none
`include "npu_ports.vh"
module npu_board #(
    `NPU_PARAMS(2048, 256, 512, 1),
    parameter MEM_BYTES = 131072,
    parameter CLKS_PER_BIT = 25,
    parameter TIMEOUT_CLKS = 1000000
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       uart_rx,
    output wire       uart_tx,
    output wire [2:0] npu_status,  // {fault, done, running}
    output wire       bridge_active
);
    wire host_we;
    wire [7:0] host_addr;
    wire [31:0] host_wdata, host_rdata;
    wire if_req, if_rvalid, rd_req, rd_rvalid, wr_req, wr_ack;
    wire [39:0] if_addr, rd_addr, wr_addr;
    wire [255:0] if_rdata;
    wire [DMA_BYTES*8-1:0] rd_data, wr_data;
    wire [DMA_BYTES-1:0] wr_strb;
    npu_top #(`NPU_PARAMS_PASS) npu (
        .clk(clk), .rst(rst),
        .host_we(host_we), .host_addr(host_addr), .host_wdata(host_wdata), .host_rdata(host_rdata),
        `NPU_MEM_CONNECT);

    wire h_re, h_we, h_ack;
    wire [31:0] h_addr;
    wire [7:0] h_wdata, h_rdata;
    npu_board_mem #(.MEM_BYTES(MEM_BYTES), .DMA_BYTES(DMA_BYTES)) mem (
        .clk(clk), .rst(rst),
        `NPU_MEM_CONNECT,
        .h_re(h_re), .h_we(h_we), .h_addr(h_addr), .h_wdata(h_wdata), .h_ack(h_ack), .h_rdata(h_rdata));

    wire rx_valid, tx_start, tx_busy;
    wire [7:0] rx_data, tx_data;
    npu_uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) urx (
        .clk(clk), .rst(rst), .rx(uart_rx), .valid(rx_valid), .data(rx_data));
    npu_uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) utx (
        .clk(clk), .rst(rst), .start(tx_start), .data(tx_data), .busy(tx_busy), .tx(uart_tx));
    npu_bridge #(.MEM_BYTES(MEM_BYTES), .TIMEOUT_CLKS(TIMEOUT_CLKS)) bridge (
        .clk(clk), .rst(rst), .rx_valid(rx_valid), .rx_data(rx_data),
        .tx_start(tx_start), .tx_data(tx_data), .tx_busy(tx_busy),
        .h_re(h_re), .h_we(h_we), .h_addr(h_addr), .h_wdata(h_wdata), .h_ack(h_ack), .h_rdata(h_rdata),
        .host_we(host_we), .host_addr(host_addr), .host_wdata(host_wdata), .host_rdata(host_rdata),
        .npu_status(npu_status), .active(bridge_active));
endmodule

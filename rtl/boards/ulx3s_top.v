// Radiona ULX3S (ECP5-85F) top: the NPU system of npu_board.v on the
// board's 25 MHz oscillator, its FTDI FT231X USB serial port and LEDs.
// Pin names follow the board's constraint file (ulx3s_85f.lpf, from
// https://github.com/emard/ulx3s/blob/master/doc/constraints/ulx3s_v20.lpf).
//
// The NPU runs on clk_25mhz directly (no PLL): 25 MHz is below the Fmax
// nextpnr reports for the 8x8 array (BENCHMARKS.md). BAUD must divide the
// clock closely; 1,000,000 divides 25 MHz exactly (25 clocks per bit).
//
// LEDs: 0 heartbeat, 1 NPU running, 2 done, 3 fault, 4 bridge busy,
// 5 reset held. FIRE1 (btn[1]) resets the NPU and the bridge.
`default_nettype none
`include "npu_ports.vh"
module ulx3s_top #(
    `NPU_PARAMS(2048, 256, 512, 1),
    parameter MEM_BYTES = 131072,
    parameter CLK_HZ = 25000000,
    parameter BAUD = 1000000,
    parameter TIMEOUT_CLKS = CLK_HZ / 20  // 50 ms: a host waits this long to resynchronize
) (
    input  wire       clk_25mhz,
    input  wire       ftdi_txd,    // FT231X TXD: the FPGA receives
    output wire       ftdi_rxd,    // FT231X RXD: the FPGA transmits
    input  wire [6:0] btn,
    output wire [7:0] led,
    output wire       wifi_gpio0   // held high: the ESP32 must not reset the board
);
    // power-on reset for 16 cycles, and while FIRE1 is pressed
    reg [4:0] por = 5'd0;
    reg b1 = 1'b0, b2 = 1'b0;
    always @(posedge clk_25mhz) begin
        b1 <= btn[1];
        b2 <= b1;
        if (b2) por <= 5'd0;
        else if (!por[4]) por <= por + 1'b1;
    end
    wire rst = !por[4];

    wire [2:0] status;
    wire busy;
    npu_board #(`NPU_PARAMS_PASS, .MEM_BYTES(MEM_BYTES),
                .CLKS_PER_BIT(CLK_HZ / BAUD), .TIMEOUT_CLKS(TIMEOUT_CLKS)) sys (
        .clk(clk_25mhz), .rst(rst), .uart_rx(ftdi_txd), .uart_tx(ftdi_rxd),
        .npu_status(status), .bridge_active(busy));

    reg [24:0] beat = 25'd0;
    always @(posedge clk_25mhz) beat <= beat + 1'b1;
    assign led = {2'b00, rst, busy, status[2], status[1], status[0], beat[24]};
    assign wifi_gpio0 = 1'b1;
endmodule

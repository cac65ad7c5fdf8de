// 8N1 UART receiver and transmitter for the board bridge (npu_bridge.v).
// Written here because the bridge needs nothing more than one byte in and
// one byte out at a fixed baud rate: CLKS_PER_BIT = clock / baud (at least 4).
`default_nettype none
module npu_uart_rx #(
    parameter CLKS_PER_BIT = 25
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       rx,
    output reg        valid,   // one cycle per received byte
    output reg  [7:0] data
);
    localparam CW = $clog2(CLKS_PER_BIT + 1);
    reg s1 = 1'b1, s2 = 1'b1;  // synchronizer: rx is asynchronous to clk
    reg busy;
    reg [CW-1:0] cnt;
    reg [3:0] bitn;
    reg [7:0] shift;
    always @(posedge clk) begin
        s1 <= rx;
        s2 <= s1;
        valid <= 1'b0;
        if (rst) begin
            busy <= 1'b0;
        end else if (!busy) begin
            if (!s2) begin  // start bit edge: sample every bit in its middle
                busy <= 1'b1;
                cnt <= CLKS_PER_BIT / 2 - 1;
                bitn <= 0;
            end
        end else if (cnt != 0) begin
            cnt <= cnt - 1'b1;
        end else begin
            cnt <= CLKS_PER_BIT - 1;
            bitn <= bitn + 1'b1;
            if (bitn == 0) begin
                if (s2) busy <= 1'b0;  // a glitch, not a start bit
            end else if (bitn <= 8) begin
                shift <= {s2, shift[7:1]};
            end else begin
                busy <= 1'b0;
                if (s2) begin  // a valid stop bit; a framing error drops the byte
                    valid <= 1'b1;
                    data <= shift;
                end
            end
        end
    end
endmodule

module npu_uart_tx #(
    parameter CLKS_PER_BIT = 25
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       start,   // ignored while busy
    input  wire [7:0] data,
    output reg        busy,
    output wire       tx
);
    localparam CW = $clog2(CLKS_PER_BIT + 1);
    reg [9:0] shift;  // {stop, data, start}, sent LSB first
    reg [3:0] left;
    reg [CW-1:0] cnt;
    assign tx = busy ? shift[0] : 1'b1;
    always @(posedge clk) begin
        if (rst) begin
            busy <= 1'b0;
        end else if (!busy) begin
            if (start) begin
                shift <= {1'b1, data, 1'b0};
                left <= 4'd10;
                cnt <= CLKS_PER_BIT - 1;
                busy <= 1'b1;
            end
        end else if (cnt != 0) begin
            cnt <= cnt - 1'b1;
        end else begin
            cnt <= CLKS_PER_BIT - 1;
            shift <= {1'b1, shift[9:1]};
            left <= left - 1'b1;
            if (left == 1) busy <= 1'b0;
        end
    end
endmodule

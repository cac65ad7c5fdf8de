// UART bridge: the host loads memory, reads it back and drives npu_top's
// registers over a serial line. Byte protocol (docs/npu-isa.md, "Board top";
// multi-byte fields little-endian, CRC-16/CCITT: polynomial 0x1021, initial
// value 0xFFFF, no reflection):
//
//   'W' addr:u32 len:u16 data[len]  -> 'w' crc:u16 (of the bytes written)
//   'R' addr:u32 len:u16            -> 'r' data[len] crc:u16
//   'S' reg:u8 value:u32            -> 's'           (register write; CTRL=1 starts)
//   'G' reg:u8                      -> 'g' value:u32 (register read; STATUS polls)
//   any other byte                  -> '?'
//
// Registers 0xF0 (memory bytes) and 0xF4 (protocol magic "EKB1") belong to
// the bridge; the others are npu_top's. A command left incomplete for
// TIMEOUT_CLKS cycles is dropped, so a host that lost bytes resynchronizes
// by waiting that long. While idle the bridge keeps the register address on
// STATUS, whose bits it latches for the board's LEDs.
`default_nettype none
module npu_bridge #(
    parameter MEM_BYTES = 131072,
    parameter TIMEOUT_CLKS = 1000000
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        rx_valid,
    input  wire [7:0]  rx_data,
    output reg         tx_start,
    output reg  [7:0]  tx_data,
    input  wire        tx_busy,
    // memory byte port (npu_board_mem)
    output reg         h_re,
    output reg         h_we,
    output reg  [31:0] h_addr,
    output reg  [7:0]  h_wdata,
    input  wire        h_ack,
    input  wire [7:0]  h_rdata,
    // npu_top's host registers
    output reg         host_we,
    output reg  [7:0]  host_addr,
    output reg  [31:0] host_wdata,
    input  wire [31:0] host_rdata,
    output reg  [2:0]  npu_status,  // {fault, done, running}
    output wire        active
);
    localparam [31:0] MAGIC = 32'h31424B45;  // "EKB1"
    localparam REG_STATUS = 8'h0C;
    localparam S_IDLE = 4'd0, S_HDR = 4'd1, S_EXEC = 4'd2, S_WDATA = 4'd3, S_WMEM = 4'd4,
               S_RMEM = 4'd5, S_RSEND = 4'd6, S_REPLY = 4'd7, S_GREAD = 4'd8;
    reg [3:0] state, after_reply;
    reg [7:0] op;
    reg [47:0] hdr;
    reg [2:0] idx, need;
    reg [15:0] left;
    reg [15:0] crc;
    reg [55:0] reply;
    reg [2:0] reply_n;
    reg [7:0] rbyte;
    reg [31:0] quiet;
    assign active = state != S_IDLE;

    function [15:0] crc16(input [15:0] c, input [7:0] d);
        integer k;
        reg [15:0] x;
        begin
            x = c ^ {d, 8'h00};
            for (k = 0; k < 8; k = k + 1) x = x[15] ? {x[14:0], 1'b0} ^ 16'h1021 : {x[14:0], 1'b0};
            crc16 = x;
        end
    endfunction

    wire tx_ready = !tx_busy && !tx_start;
    wire [7:0] reg_sel = hdr[7:0];

    always @(posedge clk) begin
        tx_start <= 1'b0;
        host_we <= 1'b0;
        if (state == S_IDLE && host_addr == REG_STATUS) npu_status <= host_rdata[2:0];
        if (rst) begin
            state <= S_IDLE;
            h_re <= 1'b0;
            h_we <= 1'b0;
            host_addr <= REG_STATUS;
            npu_status <= 3'd0;
            quiet <= 0;
        end else begin
            quiet <= rx_valid ? 32'd0 : quiet + 1'b1;
            case (state)
                S_IDLE: begin
                    host_addr <= REG_STATUS;
                    if (rx_valid) begin
                        op <= rx_data;
                        idx <= 0;
                        case (rx_data)
                            "W", "R": begin need <= 3'd6; state <= S_HDR; end
                            "S": begin need <= 3'd5; state <= S_HDR; end
                            "G": begin need <= 3'd1; state <= S_HDR; end
                            default: begin
                                reply <= "?";
                                reply_n <= 3'd1;
                                after_reply <= S_IDLE;
                                state <= S_REPLY;
                            end
                        endcase
                    end
                end
                S_HDR: begin
                    if (rx_valid) begin
                        hdr[idx*8 +: 8] <= rx_data;
                        idx <= idx + 1'b1;
                        if (idx == need - 1) state <= S_EXEC;
                    end else if (quiet >= TIMEOUT_CLKS) begin
                        state <= S_IDLE;
                    end
                end
                S_EXEC: begin
                    h_addr <= hdr[31:0];
                    left <= hdr[47:32];
                    crc <= 16'hFFFF;
                    case (op)
                        "W": state <= hdr[47:32] == 0 ? S_REPLY : S_WDATA;
                        "R": begin
                            state <= S_REPLY;
                            after_reply <= hdr[47:32] == 0 ? S_REPLY : S_RMEM;
                        end
                        "S": begin
                            if (reg_sel < 8'hF0) begin
                                host_addr <= reg_sel;
                                host_wdata <= hdr[39:8];
                                host_we <= 1'b1;
                            end
                            state <= S_REPLY;
                            after_reply <= S_IDLE;
                        end
                        default: begin  // "G": the register's value is read next cycle
                            host_addr <= reg_sel;
                            state <= S_GREAD;
                        end
                    endcase
                    // replies: 'w' + crc is set when the data is in; 'r' first
                    reply <= op == "W" ? {16'hFFFF, "w"} : op == "R" ? "r" : "s";
                    reply_n <= op == "W" ? 3'd3 : 3'd1;
                    if (op == "W") after_reply <= S_IDLE;
                end
                S_GREAD: begin
                    reply <= {reg_sel == 8'hF0 ? MEM_BYTES : reg_sel == 8'hF4 ? MAGIC : host_rdata, "g"};
                    reply_n <= 3'd5;
                    after_reply <= S_IDLE;
                    state <= S_REPLY;
                end
                S_WDATA: begin
                    if (rx_valid) begin
                        h_wdata <= rx_data;
                        h_we <= 1'b1;
                        crc <= crc16(crc, rx_data);
                        state <= S_WMEM;
                    end else if (quiet >= TIMEOUT_CLKS) begin
                        state <= S_IDLE;
                    end
                end
                S_WMEM: begin
                    if (h_ack) begin
                        h_we <= 1'b0;
                        h_addr <= h_addr + 1'b1;
                        left <= left - 1'b1;
                        if (left == 1) begin
                            reply <= {crc, "w"};
                            reply_n <= 3'd3;
                            after_reply <= S_IDLE;
                            state <= S_REPLY;
                        end else begin
                            state <= S_WDATA;
                        end
                    end
                end
                S_RMEM: begin
                    h_re <= 1'b1;
                    if (h_ack) begin
                        h_re <= 1'b0;
                        rbyte <= h_rdata;
                        crc <= crc16(crc, h_rdata);
                        state <= S_RSEND;
                    end
                end
                S_RSEND: begin
                    if (tx_ready) begin
                        tx_start <= 1'b1;
                        tx_data <= rbyte;
                        h_addr <= h_addr + 1'b1;
                        left <= left - 1'b1;
                        if (left == 1) begin
                            reply <= {40'd0, crc};
                            reply_n <= 3'd2;
                            after_reply <= S_IDLE;
                            state <= S_REPLY;
                        end else begin
                            state <= S_RMEM;
                        end
                    end
                end
                S_REPLY: begin
                    if (reply_n == 0) begin
                        // 'R' of zero bytes: its crc follows the 'r'
                        if (after_reply == S_REPLY) begin
                            reply <= {40'd0, crc};
                            reply_n <= 3'd2;
                            after_reply <= S_IDLE;
                        end else begin
                            state <= after_reply;
                        end
                    end else if (tx_ready) begin
                        tx_start <= 1'b1;
                        tx_data <= reply[7:0];
                        reply <= reply >> 8;
                        reply_n <= reply_n - 1'b1;
                    end
                end
                default: state <= S_IDLE;
            endcase
        end
    end
endmodule

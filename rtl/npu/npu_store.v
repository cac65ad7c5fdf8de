// Write DMA: one STORE instruction at a time, from accumulator entries (the
// low byte of each lane, already clamped to int8) to external memory.
//
// One beat per cycle: an entry is read from the accumulator buffer's store
// port in the cycle its first beat is planned and written to memory the next
// cycle. Writes are posted; the instruction ends when every write has been
// acknowledged, so the next STORE and the s2c token see the data in memory.
`default_nettype none
`include "npu_isa.vh"
module npu_store #(
    parameter COLS = 8,
    parameter DMA_BYTES = 8
) (
    input  wire                    clk,
    input  wire                    rst,
    input  wire                    start,
    input  wire [255:0]            insn,
    output wire                    busy,
    output wire                    done,
    // accumulator buffer read port
    output wire                    acc_re,
    output wire [19:0]             acc_raddr,
    input  wire [COLS*32-1:0]      acc_rdata,
    // memory write port
    output reg                     wr_req,
    output reg  [39:0]             wr_addr,
    output reg  [DMA_BYTES*8-1:0]  wr_data,
    output reg  [DMA_BYTES-1:0]    wr_strb,
    input  wire                    wr_ack,
    output reg  [31:0]             bytes_written
);
    localparam B = DMA_BYTES;
    localparam BPE = (COLS + B - 1) / B;
    localparam LB = BPE * B;  // lane bytes rounded up to whole beats

    reg [11:0] ysz, xsz;
    reg [15:0] chunk;
    reg [23:0] xs;
    reg [31:0] ys;
    reg        walking, active;
    reg [11:0] yy, xx;
    reg [15:0] kk, bb;
    reg [19:0] ent;
    reg [39:0] a_row, a_elem, a_ent;
    reg [15:0] outstanding;

    wire last_beat = bb == BPE - 1;
    wire last_k = kk == chunk - 1;
    wire last_x = xx == xsz - 1;
    wire last_y = yy == ysz - 1;
    assign acc_re = walking && bb == 0;
    assign acc_raddr = ent;

    // stage 1: the beat planned last cycle
    reg        s1_valid;
    reg [15:0] s1_beat;
    reg [39:0] s1_addr;
    reg [LB*8-1:0] held;
    wire [LB*8-1:0] lanes;
    genvar c;
    generate
        for (c = 0; c < LB; c = c + 1) begin : pack
            if (c < COLS) assign lanes[c*8 +: 8] = acc_rdata[c*32 +: 8];
            else assign lanes[c*8 +: 8] = 8'd0;
        end
    endgenerate
    wire [LB*8-1:0] src = s1_beat == 0 ? lanes : held;
    wire [LB*8-1:0] beat_bits = src >> (s1_beat * B * 8);
    wire [15:0] left = COLS - s1_beat * B;

    assign busy = active;
    assign done = active && !walking && !s1_valid && !wr_req && outstanding == 0;

    integer i;
    always @(posedge clk) begin
        if (rst) begin
            walking <= 1'b0;
            active <= 1'b0;
            s1_valid <= 1'b0;
            wr_req <= 1'b0;
            outstanding <= 0;
            bytes_written <= 0;
        end else begin
            if (start) begin
                ysz <= insn[`STORE_Y_SIZE];
                xsz <= insn[`STORE_X_SIZE];
                chunk <= insn[`STORE_CHUNK];
                xs <= insn[`STORE_X_STRIDE];
                ys <= insn[`STORE_Y_STRIDE];
                yy <= 0;
                xx <= 0;
                kk <= 0;
                bb <= 0;
                ent <= insn[`STORE_SRAM_BASE];
                a_row <= insn[`STORE_DRAM_ADDR];
                a_elem <= insn[`STORE_DRAM_ADDR];
                a_ent <= insn[`STORE_DRAM_ADDR];
                walking <= insn[`STORE_Y_SIZE] != 0 && insn[`STORE_X_SIZE] != 0 && insn[`STORE_CHUNK] != 0;
                active <= 1'b1;
            end else if (done) begin
                active <= 1'b0;
            end
            // plan one beat per cycle
            s1_valid <= walking;
            s1_beat <= bb;
            s1_addr <= a_ent + bb * B;
            if (walking) begin
                if (!last_beat) begin
                    bb <= bb + 1'b1;
                end else begin
                    bb <= 0;
                    ent <= ent + 1'b1;
                    a_ent <= a_ent + COLS;
                    if (!last_k) begin
                        kk <= kk + 1'b1;
                    end else begin
                        kk <= 0;
                        a_elem <= a_elem + xs;
                        a_ent <= a_elem + xs;
                        if (!last_x) begin
                            xx <= xx + 1'b1;
                        end else begin
                            xx <= 0;
                            a_row <= a_row + ys;
                            a_elem <= a_row + ys;
                            a_ent <= a_row + ys;
                            if (!last_y) yy <= yy + 1'b1;
                            else walking <= 1'b0;
                        end
                    end
                end
            end
            // stage 1: issue the write
            wr_req <= s1_valid;
            if (s1_valid) begin
                if (s1_beat == 0) held <= lanes;
                wr_addr <= s1_addr;
                wr_data <= beat_bits[B*8-1:0];
                for (i = 0; i < B; i = i + 1) wr_strb[i] <= i < left;
                bytes_written <= bytes_written + (left < B ? left : B);
            end
            outstanding <= outstanding + (wr_req ? 1'b1 : 1'b0) - (wr_ack ? 1'b1 : 1'b0);
        end
    end
endmodule

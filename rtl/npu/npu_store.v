// Write DMA: one STORE instruction at a time, from accumulator entries (the
// low byte of each lane, already clamped to int8) to external memory.
//
// The addresses come from npu_walker (as the read DMA's, without padding).
// One beat per cycle: an entry is read from the accumulator buffer's store
// port in the cycle its first beat is planned and written to memory the next
// cycle. Writes are posted; the instruction ends when every write has been
// acknowledged, so the next STORE and the s2c token see the data in memory.
`default_nettype none
`include "npu_isa.vh"
`include "npu_ports.vh"
module npu_store #(
    parameter COLS = 8,
    parameter DMA_BYTES = 8
) (
    `NPU_UNIT_PORTS,
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
    localparam [15:0] ENTRY_BYTES = COLS, BEATS = BPE;

    reg        active;
    reg [15:0] outstanding;
    wire       walking;
    wire [15:0] bb;
    wire [19:0] ent;
    wire [39:0] beat_addr;
    npu_walker #(.B(B), .PAD(0)) walker (
        .clk(clk), .rst(rst), .start(start),
        .dram_addr(insn[`STORE_DRAM_ADDR]), .sram_base(insn[`STORE_SRAM_BASE]),
        .y_size(insn[`STORE_Y_SIZE]), .x_size(insn[`STORE_X_SIZE]), .chunk(insn[`STORE_CHUNK]),
        .x_stride(insn[`STORE_X_STRIDE]), .y_stride(insn[`STORE_Y_STRIDE]),
        .pad_top(8'd0), .pad_bottom(8'd0), .pad_left(8'd0), .pad_right(8'd0),
        .entry_bytes(ENTRY_BYTES), .beats(BEATS), .step(1'b1),
        .walking(walking), .in_box(), .last_beat(), .addr(beat_addr), .entry(ent), .beat(bb));

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
            active <= 1'b0;
            s1_valid <= 1'b0;
            wr_req <= 1'b0;
            outstanding <= 0;
            bytes_written <= 0;
        end else begin
            if (start) active <= 1'b1;
            else if (done) active <= 1'b0;
            // plan one beat per cycle (the walker steps while walking)
            s1_valid <= walking && !start;
            s1_beat <= bb;
            s1_addr <= beat_addr;
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

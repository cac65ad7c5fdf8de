// Read DMA: one LOAD instruction at a time, from external memory into the
// input, weight or accumulator buffer.
//
// A producer walks the padded box (rows, elements, entries, beats) and issues
// one memory read per cycle for data beats, or one pad entry per cycle around
// the box; every slot leaves a tag in a FIFO. A consumer matches tags with
// the in-order memory responses (any latency, buffered in a response FIFO),
// assembles entries beat by beat and writes each finished entry. Cost per
// instruction: memory latency + beats + pad entries + a few cycles of
// pipeline (measured: docs/npu-isa.md).
`default_nettype none
`include "npu_isa.vh"
module npu_dma_rd #(
    parameter ROWS = 8,
    parameter COLS = 8,
    parameter DMA_BYTES = 8,
    parameter TAGQ = 32,
    parameter TAGQ_AW = 5
) (
    input  wire                      clk,
    input  wire                      rst,
    input  wire                      start,
    input  wire [255:0]              insn,
    output wire                      busy,
    output wire                      done,
    // memory read port: byte address, in-order responses of DMA_BYTES bytes
    output wire                      rd_req,
    output wire [39:0]               rd_addr,
    input  wire                      rd_rvalid,
    input  wire [DMA_BYTES*8-1:0]    rd_data,
    // buffer write ports (one buffer at a time)
    output reg                       inp_we,
    output reg                       wgt_we,
    output reg                       acc_we,
    output reg  [19:0]               wr_index,
    output reg  [ROWS*COLS*8-1:0]    wgt_wdata,
    output reg  [ROWS*8-1:0]         inp_wdata,
    output reg  [COLS*32-1:0]        acc_wdata,
    output reg  [31:0]               bytes_read
);
    localparam B = DMA_BYTES;
    localparam E_INP = ROWS;
    localparam E_WGT = ROWS * COLS;
    localparam E_ACC = 4 * COLS;
    localparam E_ACC8 = COLS;
    // One beat of headroom keeps every replication below non-empty.
    localparam ASM_BYTES = (E_WGT > E_ACC ? E_WGT : E_ACC) + B;

    // ------------------------------------------------------------ fields
    reg [1:0]  buffer;
    reg        int8_src;
    reg [19:0] sram_base;
    reg [11:0] ysz, xsz;
    reg [15:0] chunk;
    reg [23:0] xs;
    reg [31:0] ys;
    reg [7:0]  pt, pb, pl, pr;
    reg [7:0]  pad_value;
    reg [15:0] ebytes;   // bytes per entry
    reg [15:0] bpe;      // beats per entry
    reg [12:0] yp, xp;   // padded box

    // ----------------------------------------------------------- producer
    reg        walking;
    reg [12:0] yy, xx;
    reg [15:0] kk, bb;
    reg [19:0] ent;
    reg [39:0] a_row, a_elem, a_ent;
    wire [TAGQ_AW:0] tag_count;
    wire tag_full_soon = tag_count >= TAGQ - 2;
    wire in_row = yy >= pt && yy < pt + ysz;
    wire in_box = in_row && xx >= pl && xx < pl + xsz;
    wire emit = walking && !tag_full_soon;
    wire last_beat = !in_box || bb == bpe - 1;
    wire last_k = kk == chunk - 1;
    wire last_x = xx == xp - 1;
    wire last_y = yy == yp - 1;

    assign rd_req = emit && in_box;
    assign rd_addr = a_ent + bb * B;

    // tag: {pad, last_beat, beat[15:0], entry[19:0]}
    localparam TW = 1 + 1 + 16 + 20;
    wire [TW-1:0] tag_in = {!in_box, last_beat, bb, ent};
    wire [TW-1:0] tag_head;
    wire tag_empty;
    wire [B*8-1:0] resp_head;
    wire resp_empty;
    wire head_pad = tag_head[TW-1];
    wire head_last = tag_head[TW-2];
    wire [15:0] head_beat = tag_head[TW-3:20];
    wire [19:0] head_ent = tag_head[19:0];
    wire consume = !tag_empty && (head_pad || !resp_empty);

    npu_fifo #(.WIDTH(TW), .DEPTH(TAGQ), .AW(TAGQ_AW)) tags (
        .clk(clk), .clear(rst || start), .push(emit), .din(tag_in), .pop(consume),
        .dout(tag_head), .empty(tag_empty), .full(), .count(tag_count));
    wire [TAGQ_AW:0] resp_count;
    npu_fifo #(.WIDTH(B*8), .DEPTH(TAGQ), .AW(TAGQ_AW)) resps (
        .clk(clk), .clear(rst || start), .push(rd_rvalid), .din(rd_data), .pop(consume && !head_pad),
        .dout(resp_head), .empty(resp_empty), .full(), .count(resp_count));

    reg active;
    assign busy = active;
    // Done once the last entry is in its buffer: the next instruction may read it in its first cycle.
    assign done = active && !walking && tag_empty && !inp_we && !wgt_we && !acc_we;

    always @(posedge clk) begin
        if (rst) begin
            walking <= 1'b0;
            active <= 1'b0;
        end else if (start) begin
            buffer <= insn[`LOAD_BUFFER];
            int8_src <= insn[`LOAD_INT8_SRC];
            sram_base <= insn[`LOAD_SRAM_BASE];
            ysz <= insn[`LOAD_Y_SIZE];
            xsz <= insn[`LOAD_X_SIZE];
            chunk <= insn[`LOAD_CHUNK];
            xs <= insn[`LOAD_X_STRIDE];
            ys <= insn[`LOAD_Y_STRIDE];
            pt <= insn[`LOAD_PAD_TOP];
            pb <= insn[`LOAD_PAD_BOTTOM];
            pl <= insn[`LOAD_PAD_LEFT];
            pr <= insn[`LOAD_PAD_RIGHT];
            pad_value <= insn[`LOAD_PAD_VALUE];
            yp <= insn[`LOAD_Y_SIZE] + insn[`LOAD_PAD_TOP] + insn[`LOAD_PAD_BOTTOM];
            xp <= insn[`LOAD_X_SIZE] + insn[`LOAD_PAD_LEFT] + insn[`LOAD_PAD_RIGHT];
            case (insn[`LOAD_BUFFER])
                2'd0: begin ebytes <= E_INP; bpe <= (E_INP + B - 1) / B; end
                2'd1: begin ebytes <= E_WGT; bpe <= (E_WGT + B - 1) / B; end
                default: begin
                    ebytes <= insn[`LOAD_INT8_SRC] ? E_ACC8 : E_ACC;
                    bpe <= insn[`LOAD_INT8_SRC] ? (E_ACC8 + B - 1) / B : (E_ACC + B - 1) / B;
                end
            endcase
            yy <= 0;
            xx <= 0;
            kk <= 0;
            bb <= 0;
            ent <= insn[`LOAD_SRAM_BASE];
            a_row <= insn[`LOAD_DRAM_ADDR];
            a_elem <= insn[`LOAD_DRAM_ADDR];
            a_ent <= insn[`LOAD_DRAM_ADDR];
            walking <= insn[`LOAD_CHUNK] != 0
                && insn[`LOAD_Y_SIZE] + insn[`LOAD_PAD_TOP] + insn[`LOAD_PAD_BOTTOM] != 0
                && insn[`LOAD_X_SIZE] + insn[`LOAD_PAD_LEFT] + insn[`LOAD_PAD_RIGHT] != 0;
            active <= 1'b1;
        end else begin
            if (done) active <= 1'b0;
            if (emit) begin
                if (!last_beat) begin
                    bb <= bb + 1'b1;
                end else begin
                    bb <= 0;
                    ent <= ent + 1'b1;
                    if (in_box) a_ent <= a_ent + ebytes;
                    if (!last_k) begin
                        kk <= kk + 1'b1;
                    end else begin
                        kk <= 0;
                        if (in_box) begin
                            a_elem <= a_elem + xs;
                            a_ent <= a_elem + xs;
                        end
                        if (!last_x) begin
                            xx <= xx + 1'b1;
                        end else begin
                            xx <= 0;
                            if (in_row) begin
                                a_row <= a_row + ys;
                                a_elem <= a_row + ys;
                                a_ent <= a_row + ys;
                            end
                            if (!last_y) yy <= yy + 1'b1;
                            else walking <= 1'b0;
                        end
                    end
                end
            end
        end
    end

    // ----------------------------------------------------------- consumer
    reg [ASM_BYTES*8-1:0] asm_data;
    wire [ASM_BYTES*8-1:0] beat_shifted = {{(ASM_BYTES-B)*8{1'b0}}, resp_head} << (head_beat * B * 8);
    wire [ASM_BYTES*8-1:0] mask_shifted = {{(ASM_BYTES-B)*8{1'b0}}, {B*8{1'b1}}} << (head_beat * B * 8);
    wire [ASM_BYTES*8-1:0] entry_bits = (asm_data & ~mask_shifted) | beat_shifted;
    wire [COLS*32-1:0] acc8_bits;
    wire [COLS*32-1:0] acc8_pad;
    genvar c;
    generate
        for (c = 0; c < COLS; c = c + 1) begin : sext
            assign acc8_bits[c*32 +: 32] = {{24{entry_bits[c*8+7]}}, entry_bits[c*8 +: 8]};
            assign acc8_pad[c*32 +: 32] = {{24{pad_value[7]}}, pad_value};
        end
    endgenerate

    always @(posedge clk) begin
        inp_we <= 1'b0;
        wgt_we <= 1'b0;
        acc_we <= 1'b0;
        if (rst || start) begin
            if (rst) bytes_read <= 0;
        end else if (consume) begin
            if (!head_pad) asm_data <= entry_bits;
            if (head_pad || head_last) begin
                wr_index <= head_ent;
                inp_we <= buffer == 2'd0;
                wgt_we <= buffer == 2'd1;
                acc_we <= buffer[1];
                inp_wdata <= head_pad ? {ROWS{pad_value}} : entry_bits[ROWS*8-1:0];
                wgt_wdata <= head_pad ? {ROWS*COLS{pad_value}} : entry_bits[ROWS*COLS*8-1:0];
                acc_wdata <= int8_src ? (head_pad ? acc8_pad : acc8_bits)
                                      : (head_pad ? {COLS*32{1'b0}} : entry_bits[COLS*32-1:0]);
                if (!head_pad) bytes_read <= bytes_read + ebytes;
            end
        end
    end
endmodule

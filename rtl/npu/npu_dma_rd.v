// Read DMA: one LOAD instruction at a time, from external memory into the
// input, weight or accumulator buffer.
//
// A producer walks the padded box (npu_walker: rows, elements, entries,
// beats) and issues one memory read per cycle for data beats, or one pad
// entry per cycle around the box; every slot leaves a tag in a FIFO. A consumer matches tags with
// the in-order memory responses (any latency, buffered in a response FIFO),
// assembles entries beat by beat and writes each finished entry. Cost per
// instruction: memory latency + beats + pad entries + a few cycles of
// pipeline (measured: docs/npu-isa.md).
`default_nettype none
`include "npu_isa.vh"
`include "npu_ports.vh"
module npu_dma_rd #(
    parameter ROWS = 8,
    parameter COLS = 8,
    parameter DMA_BYTES = 8,
    parameter TAGQ = 32,
    parameter TAGQ_AW = 5
) (
    `NPU_UNIT_PORTS,
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

    localparam BPE_INP = (E_INP + B - 1) / B;
    localparam BPE_WGT = (E_WGT + B - 1) / B;
    localparam BPE_ACC = (E_ACC + B - 1) / B;
    localparam BPE_ACC8 = (E_ACC8 + B - 1) / B;
    // Entries are assembled in a shift register of the longest entry's beats:
    // each beat enters at the top, so an entry of n beats ends up in the top
    // n beats, at a fixed place per buffer.
    localparam ASM_BEATS = BPE_WGT > BPE_ACC ? BPE_WGT : BPE_ACC;
    localparam AW = ASM_BEATS * B * 8;

    // ------------------------------------------------------------ fields
    reg [1:0]  buffer;
    reg        int8_src;
    reg [7:0]  pad_value;
    reg [15:0] ebytes;   // bytes per entry

    // ----------------------------------------------------------- producer
    wire [TAGQ_AW:0] tag_count;
    wire tag_full_soon = tag_count >= TAGQ - 2;
    wire walking, in_box, last_beat;
    wire [19:0] ent;
    wire emit = walking && !tag_full_soon;
    wire [1:0] buf_in = insn[`LOAD_BUFFER];
    wire [15:0] ebytes_in = buf_in == 2'd0 ? E_INP : buf_in == 2'd1 ? E_WGT : insn[`LOAD_INT8_SRC] ? E_ACC8 : E_ACC;
    wire [15:0] bpe_in = buf_in == 2'd0 ? BPE_INP : buf_in == 2'd1 ? BPE_WGT : insn[`LOAD_INT8_SRC] ? BPE_ACC8 : BPE_ACC;
    npu_walker #(.B(B), .PAD(1)) walker (
        .clk(clk), .rst(rst), .start(start),
        .dram_addr(insn[`LOAD_DRAM_ADDR]), .sram_base(insn[`LOAD_SRAM_BASE]),
        .y_size(insn[`LOAD_Y_SIZE]), .x_size(insn[`LOAD_X_SIZE]), .chunk(insn[`LOAD_CHUNK]),
        .x_stride(insn[`LOAD_X_STRIDE]), .y_stride(insn[`LOAD_Y_STRIDE]),
        .pad_top(insn[`LOAD_PAD_TOP]), .pad_bottom(insn[`LOAD_PAD_BOTTOM]),
        .pad_left(insn[`LOAD_PAD_LEFT]), .pad_right(insn[`LOAD_PAD_RIGHT]),
        .entry_bytes(ebytes_in), .beats(bpe_in), .step(emit),
        .walking(walking), .in_box(in_box), .last_beat(last_beat), .addr(rd_addr), .entry(ent), .beat());

    assign rd_req = emit && in_box;

    // tag: {pad, last_beat, entry[19:0]}
    localparam TW = 1 + 1 + 20;
    wire [TW-1:0] tag_in = {!in_box, last_beat, ent};
    wire [TW-1:0] tag_head;
    wire tag_empty;
    wire [B*8-1:0] resp_head;
    wire resp_empty;
    wire head_pad = tag_head[TW-1];
    wire head_last = tag_head[TW-2];
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
            active <= 1'b0;
        end else if (start) begin
            buffer <= buf_in;
            int8_src <= insn[`LOAD_INT8_SRC];
            pad_value <= insn[`LOAD_PAD_VALUE];
            ebytes <= ebytes_in;
            active <= 1'b1;
        end else if (done) begin
            active <= 1'b0;
        end
    end

    // ----------------------------------------------------------- consumer
    reg [AW-1:0] asm_data;
    wire [AW-1:0] asm_next;
    generate
        if (ASM_BEATS > 1) begin : shift
            assign asm_next = {resp_head, asm_data[AW-1:B*8]};
        end else begin : one
            assign asm_next = resp_head;
        end
    endgenerate
    wire [COLS*8-1:0] acc8_bytes = asm_next[(ASM_BEATS - BPE_ACC8)*B*8 +: COLS*8];
    wire [COLS*32-1:0] acc8_bits;
    wire [COLS*32-1:0] acc8_pad;
    genvar c;
    generate
        for (c = 0; c < COLS; c = c + 1) begin : sext
            assign acc8_bits[c*32 +: 32] = {{24{acc8_bytes[c*8+7]}}, acc8_bytes[c*8 +: 8]};
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
            if (!head_pad) asm_data <= asm_next;
            if (head_pad || head_last) begin
                wr_index <= head_ent;
                inp_we <= buffer == 2'd0;
                wgt_we <= buffer == 2'd1;
                acc_we <= buffer[1];
                inp_wdata <= head_pad ? {ROWS{pad_value}} : asm_next[(ASM_BEATS - BPE_INP)*B*8 +: ROWS*8];
                wgt_wdata <= head_pad ? {ROWS*COLS{pad_value}} : asm_next[(ASM_BEATS - BPE_WGT)*B*8 +: ROWS*COLS*8];
                acc_wdata <= int8_src ? (head_pad ? acc8_pad : acc8_bits)
                                      : (head_pad ? {COLS*32{1'b0}} : asm_next[(ASM_BEATS - BPE_ACC)*B*8 +: COLS*32]);
                if (!head_pad) bytes_read <= bytes_read + ebytes;
            end
        end
    end
endmodule

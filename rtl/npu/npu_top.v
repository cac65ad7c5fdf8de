// edgekit int8 accelerator (NPU): executes the instruction set of
// docs/npu-isa.md (edgekit/npu/isa.py) unchanged.
//
//   fetch --> load queue    --> load module    --+
//         --> compute queue --> compute module --+-- read DMA (program order)
//         --> store queue   --> store module   ---- write DMA
//
// Three in-order modules (load, compute, store) synchronise through four
// dependency-token counters (l2c, c2l, c2s, s2c). LOADs of the load module
// (input, weight buffer) and of the compute module (accumulator buffer) share
// one read DMA and take it in program order, as the cycle model assumes.
//
// Host interface: 32-bit registers (see REG_* below). Write PROG_LO/HI and
// INSN_COUNT, then CTRL=1; STATUS bit 1 (done) rises after the program's
// FINISH, and the counters hold that program's costs.
//
// External memory: an instruction port (32-byte words, one cycle latency),
// a read port and a write port of DMA_BYTES per cycle with byte addresses
// and in-order responses/acknowledgements of any latency.
`default_nettype none
`include "npu_isa.vh"
`include "npu_ports.vh"
module npu_top #(
    `NPU_PARAMS(4096, 512, 1024, 1 << 30),  // npu_ports.vh
    parameter QDEPTH = 16,        // instruction queue entries per module
    parameter QAW = 4
) (
    input  wire                    clk,
    input  wire                    rst,
    // host registers
    input  wire                    host_we,
    input  wire [7:0]              host_addr,
    input  wire [31:0]             host_wdata,
    output reg  [31:0]             host_rdata,
    // instruction fetch, data read, data write
    `NPU_MEM_PORTS(output wire, input wire, input wire)
);
    localparam INP_AW = $clog2(INP_DEPTH);
    localparam WGT_AW = $clog2(WGT_DEPTH);
    localparam ACC_AW = $clog2(ACC_DEPTH);
    localparam [15:0] ROWS16 = ROWS, COLS16 = COLS;
    localparam [31:0] DEVICE_ID = 32'h4E505538;  // "NPU8"
    localparam REG_ID = 8'h00, REG_GEOMETRY = 8'h04, REG_CTRL = 8'h08, REG_STATUS = 8'h0C,
               REG_PROG_LO = 8'h10, REG_PROG_HI = 8'h14, REG_INSN_COUNT = 8'h18,
               REG_CYCLES = 8'h40, REG_GEMM_CYCLES = 8'h44, REG_ALU_CYCLES = 8'h48,
               REG_STALL_CYCLES = 8'h4C, REG_RD_BUSY = 8'h50, REG_WR_BUSY = 8'h54,
               REG_RD_BYTES = 8'h58, REG_WR_BYTES = 8'h5C, REG_VECTORS = 8'h60, REG_INSNS = 8'h64,
               REG_TOKENS = 8'h68;
    localparam OP_LOAD = 3'd0, OP_STORE = 3'd1, OP_GEMM = 3'd2, OP_ALU = 3'd3, OP_FINISH = 3'd4;
    localparam QW = 16 + 256;  // {read-DMA sequence number, instruction word}

    // ------------------------------------------------------- host registers
    reg [39:0] prog_base;
    reg [31:0] insn_count;
    reg running, done_flag, fault;
    reg [31:0] cyc, gemm_cyc, alu_cyc, stall_cyc, rd_busy_cyc, wr_busy_cyc, insns;
    wire [31:0] rd_bytes, wr_bytes, vectors;
    wire go = host_we && host_addr == REG_CTRL && host_wdata[0];
    wire erst = rst || go;  // every program starts from a clean engine state

    always @* begin
        case (host_addr)
            REG_ID: host_rdata = DEVICE_ID;
            REG_GEOMETRY: host_rdata = {ROWS16, COLS16};
            REG_STATUS: host_rdata = {29'd0, fault, done_flag, running};
            REG_PROG_LO: host_rdata = prog_base[31:0];
            REG_PROG_HI: host_rdata = {24'd0, prog_base[39:32]};
            REG_INSN_COUNT: host_rdata = insn_count;
            REG_CYCLES: host_rdata = cyc;
            REG_GEMM_CYCLES: host_rdata = gemm_cyc;
            REG_ALU_CYCLES: host_rdata = alu_cyc;
            REG_STALL_CYCLES: host_rdata = stall_cyc;
            REG_RD_BUSY: host_rdata = rd_busy_cyc;
            REG_WR_BUSY: host_rdata = wr_busy_cyc;
            REG_RD_BYTES: host_rdata = rd_bytes;
            REG_WR_BYTES: host_rdata = wr_bytes;
            REG_VECTORS: host_rdata = vectors;
            REG_INSNS: host_rdata = insns;
            REG_TOKENS: host_rdata = {s2c[7:0], c2s[7:0], c2l[7:0], l2c[7:0]};
            default: host_rdata = 32'd0;
        endcase
    end

    // ---------------------------------------------------------------- fetch
    reg [39:0] pc;
    reg [31:0] remaining;
    reg        hold_v;
    reg [255:0] hold;
    reg [15:0] load_seq;
    wire        cand_v = hold_v || if_rvalid;
    wire [255:0] cand = hold_v ? hold : if_rdata;
    wire [2:0]  cand_op = cand[2:0];
    wire to_load = cand_op == OP_LOAD && cand[`LOAD_BUFFER] != 2'd2;
    wire to_store = cand_op == OP_STORE;
    wire to_compute = !to_load && !to_store;
    wire lq_full, cq_full, sq_full;
    wire dispatch = cand_v && !(to_load ? lq_full : to_store ? sq_full : cq_full);
    wire [QW-1:0] qin = {load_seq, cand};
    assign if_req = running && remaining != 0 && !hold_v && !(if_rvalid && !dispatch);
    assign if_addr = pc;

    always @(posedge clk) begin
        if (erst) begin
            hold_v <= 1'b0;
            load_seq <= 0;
            pc <= prog_base;
            remaining <= insn_count;
        end else begin
            if (if_req) begin
                pc <= pc + 40'd32;
                remaining <= remaining - 1'b1;
            end
            if (cand_v && !dispatch && !hold_v) begin
                hold <= if_rdata;
                hold_v <= 1'b1;
            end else if (hold_v && dispatch) begin
                hold_v <= 1'b0;
            end
            if (dispatch && cand_op == OP_LOAD) load_seq <= load_seq + 1'b1;
        end
    end

    // --------------------------------------------------------------- queues
    wire [QW-1:0] lq_head, cq_head, sq_head;
    wire lq_empty, cq_empty, sq_empty;
    wire lq_pop, cq_pop, sq_pop;
    npu_fifo #(.WIDTH(QW), .DEPTH(QDEPTH), .AW(QAW)) lq (
        .clk(clk), .clear(erst), .push(dispatch && to_load), .din(qin), .pop(lq_pop),
        .dout(lq_head), .empty(lq_empty), .full(lq_full), .count());
    npu_fifo #(.WIDTH(QW), .DEPTH(QDEPTH), .AW(QAW)) cq (
        .clk(clk), .clear(erst), .push(dispatch && to_compute), .din(qin), .pop(cq_pop),
        .dout(cq_head), .empty(cq_empty), .full(cq_full), .count());
    npu_fifo #(.WIDTH(QW), .DEPTH(QDEPTH), .AW(QAW)) sq (
        .clk(clk), .clear(erst), .push(dispatch && to_store), .din(qin), .pop(sq_pop),
        .dout(sq_head), .empty(sq_empty), .full(sq_full), .count());

    // --------------------------------------------------------------- engines
    reg l_busy, s_busy_q;
    wire dma_busy, dma_done;
    wire gemm_issuing, gemm_pipe;
    wire alu_busy, alu_done;
    wire st_busy, st_done;
    reg  dma_start, gemm_start, alu_start, st_start;
    reg  [255:0] dma_insn, comp_insn, st_insn;

    wire inp_we_d, wgt_we_d, acc_we_d;
    wire [19:0] dma_idx;
    wire [ROWS*8-1:0] inp_wd;
    wire [ROWS*COLS*8-1:0] wgt_wd;
    wire [COLS*32-1:0] acc_wd_dma;
    npu_dma_rd #(.ROWS(ROWS), .COLS(COLS), .DMA_BYTES(DMA_BYTES)) dma (
        .clk(clk), .rst(erst), .start(dma_start), .insn(dma_insn), .busy(dma_busy), .done(dma_done),
        .rd_req(rd_req), .rd_addr(rd_addr), .rd_rvalid(rd_rvalid), .rd_data(rd_data),
        .inp_we(inp_we_d), .wgt_we(wgt_we_d), .acc_we(acc_we_d), .wr_index(dma_idx),
        .wgt_wdata(wgt_wd), .inp_wdata(inp_wd), .acc_wdata(acc_wd_dma), .bytes_read(rd_bytes));

    wire inp_re, wgt_re, g_acc_re, g_acc_we;
    wire [19:0] inp_ra, wgt_ra, g_acc_ra, g_acc_wa;
    wire [ROWS*8-1:0] inp_rd;
    wire [ROWS*COLS*8-1:0] wgt_rd;
    wire [COLS*32-1:0] acc_r0, acc_r1, acc_r2, g_acc_wd;
    npu_gemm #(.ROWS(ROWS), .COLS(COLS), .ARRAY_DSP(ARRAY_DSP)) gemm (
        .clk(clk), .rst(erst), .start(gemm_start), .insn(comp_insn), .issuing(gemm_issuing),
        .pipe_busy(gemm_pipe), .vectors(vectors),
        .inp_re(inp_re), .inp_raddr(inp_ra), .inp_rdata(inp_rd),
        .wgt_re(wgt_re), .wgt_raddr(wgt_ra), .wgt_rdata(wgt_rd),
        .acc_re(g_acc_re), .acc_raddr(g_acc_ra), .acc_rdata(acc_r0),
        .acc_we(g_acc_we), .acc_waddr(g_acc_wa), .acc_wdata(g_acc_wd));

    wire a_r0_re, a_r1_re, a_we;
    wire [19:0] a_r0_a, a_r1_a, a_wa;
    wire [COLS*32-1:0] a_wd;
    npu_alu #(.COLS(COLS)) alu (
        .clk(clk), .rst(erst), .start(alu_start), .insn(comp_insn), .busy(alu_busy), .done(alu_done),
        .r0_re(a_r0_re), .r0_addr(a_r0_a), .r0_data(acc_r0),
        .r1_re(a_r1_re), .r1_addr(a_r1_a), .r1_data(acc_r1),
        .acc_we(a_we), .acc_waddr(a_wa), .acc_wdata(a_wd));

    wire s_re;
    wire [19:0] s_ra;
    npu_store #(.COLS(COLS), .DMA_BYTES(DMA_BYTES)) store (
        .clk(clk), .rst(erst), .start(st_start), .insn(st_insn), .busy(st_busy), .done(st_done),
        .acc_re(s_re), .acc_raddr(s_ra), .acc_rdata(acc_r2),
        .wr_req(wr_req), .wr_addr(wr_addr), .wr_data(wr_data), .wr_strb(wr_strb), .wr_ack(wr_ack),
        .bytes_written(wr_bytes));

    // --------------------------------------------------------------- buffers
    npu_ram #(.WIDTH(ROWS*8), .DEPTH(INP_DEPTH), .AW(INP_AW)) inp_buf (
        .clk(clk), .we(inp_we_d), .waddr(dma_idx[INP_AW-1:0]), .wdata(inp_wd),
        .re(inp_re), .raddr(inp_ra[INP_AW-1:0]), .rdata(inp_rd));
    npu_ram #(.WIDTH(ROWS*COLS*8), .DEPTH(WGT_DEPTH), .AW(WGT_AW)) wgt_buf (
        .clk(clk), .we(wgt_we_d), .waddr(dma_idx[WGT_AW-1:0]), .wdata(wgt_wd),
        .re(wgt_re), .raddr(wgt_ra[WGT_AW-1:0]), .rdata(wgt_rd));
    // The accumulator buffer has three read ports (compute, ALU operand b,
    // store): three copies that every write updates.
    wire acc_we = g_acc_we || a_we || acc_we_d;
    wire [19:0] acc_wa = g_acc_we ? g_acc_wa : a_we ? a_wa : dma_idx;
    wire [COLS*32-1:0] acc_wd = g_acc_we ? g_acc_wd : a_we ? a_wd : acc_wd_dma;
    wire r0_re = g_acc_re || a_r0_re;
    wire [19:0] r0_a = g_acc_re ? g_acc_ra : a_r0_a;
    npu_ram #(.WIDTH(COLS*32), .DEPTH(ACC_DEPTH), .AW(ACC_AW)) acc_buf0 (
        .clk(clk), .we(acc_we), .waddr(acc_wa[ACC_AW-1:0]), .wdata(acc_wd),
        .re(r0_re), .raddr(r0_a[ACC_AW-1:0]), .rdata(acc_r0));
    npu_ram #(.WIDTH(COLS*32), .DEPTH(ACC_DEPTH), .AW(ACC_AW)) acc_buf1 (
        .clk(clk), .we(acc_we), .waddr(acc_wa[ACC_AW-1:0]), .wdata(acc_wd),
        .re(a_r1_re), .raddr(a_r1_a[ACC_AW-1:0]), .rdata(acc_r1));
    npu_ram #(.WIDTH(COLS*32), .DEPTH(ACC_DEPTH), .AW(ACC_AW)) acc_buf2 (
        .clk(clk), .we(acc_we), .waddr(acc_wa[ACC_AW-1:0]), .wdata(acc_wd),
        .re(s_re), .raddr(s_ra[ACC_AW-1:0]), .rdata(acc_r2));

    // ------------------------------------------------------- token counters
    reg [15:0] l2c, c2l, c2s, s2c;
    wire l_push_l2c, c_push_c2l, c_push_c2s, s_push_s2c;   // this cycle
    wire l_pop_c2l, c_pop_l2c, c_pop_s2c, s_pop_c2s;
    // A token pushed this cycle may be popped this cycle (the producer's end
    // is the consumer's earliest start, as in the cycle model).
    wire l2c_ok = l2c != 0 || l_push_l2c;
    wire c2l_ok = c2l != 0 || c_push_c2l;
    wire c2s_ok = c2s != 0 || c_push_c2s;
    wire s2c_ok = s2c != 0 || s_push_s2c;
    always @(posedge clk) begin
        if (erst) begin
            l2c <= 0;
            c2l <= 0;
            c2s <= 0;
            s2c <= 0;
        end else begin
            l2c <= l2c + l_push_l2c - c_pop_l2c;
            c2l <= c2l + c_push_c2l - l_pop_c2l;
            c2s <= c2s + c_push_c2s - s_pop_c2s;
            s2c <= s2c + s_push_s2c - c_pop_s2c;
        end
    end

    // The read DMA serves LOADs in program order (sequence numbers from fetch).
    reg [15:0] next_rseq;
    reg dma_owner_compute;
    wire dma_free = !dma_busy || dma_done;

    // ----------------------------------------------------------- load module
    reg [3:0] l_deps;
    wire l_done = l_busy && dma_done && !dma_owner_compute;
    wire l_free = !l_busy || l_done;
    wire [255:0] lh = lq_head[255:0];
    wire l_start = !lq_empty && l_free && (!lh[4] || c2l_ok) && dma_free && lq_head[271:256] == next_rseq;
    assign lq_pop = l_start;
    assign l_pop_c2l = l_start && lh[4];
    assign l_push_l2c = l_done && l_deps[3];

    // -------------------------------------------------------- compute module
    localparam CS_IDLE = 3'd0, CS_GEMM = 3'd1, CS_ALU = 3'd2, CS_LOAD = 3'd3, CS_FINISHED = 3'd4;
    reg [2:0] cstate;
    reg [3:0] c_deps;
    wire c_done = (cstate == CS_GEMM && !gemm_issuing) || (cstate == CS_ALU && alu_done)
               || (cstate == CS_LOAD && dma_done && dma_owner_compute);
    wire c_free = cstate == CS_IDLE || c_done;
    wire [255:0] ch = cq_head[255:0];
    wire [2:0] c_op = ch[2:0];
    wire c_tok = (!ch[3] || l2c_ok) && (!ch[4] || s2c_ok);
    wire all_idle = remaining == 0 && !hold_v && lq_empty && !l_busy && sq_empty && !s_busy_q
                    && !dma_busy && !gemm_pipe;
    wire c_ready = c_op == OP_GEMM ? 1'b1
                 : c_op == OP_ALU ? !gemm_pipe
                 : c_op == OP_LOAD ? !gemm_pipe && dma_free && cq_head[271:256] == next_rseq
                 : c_op == OP_FINISH ? all_idle && !c_done
                 : 1'b1;  // an unknown opcode faults
    wire c_start = running && !cq_empty && c_free && c_tok && c_ready;
    assign cq_pop = c_start;
    assign c_pop_l2c = c_start && ch[3];
    assign c_pop_s2c = c_start && ch[4];
    assign c_push_c2l = c_done && c_deps[2];
    assign c_push_c2s = c_done && c_deps[3];

    // ---------------------------------------------------------- store module
    reg [3:0] s_deps;
    wire s_done = s_busy_q && st_done;
    wire s_free = !s_busy_q || s_done;
    wire [255:0] sh = sq_head[255:0];
    wire s_start = !sq_empty && s_free && (!sh[3] || c2s_ok);
    assign sq_pop = s_start;
    assign s_pop_c2s = s_start && sh[3];
    assign s_push_s2c = s_done && s_deps[2];

    always @* begin
        dma_start = l_start || (c_start && c_op == OP_LOAD);
        dma_insn = l_start ? lh : ch;
        gemm_start = c_start && c_op == OP_GEMM;
        alu_start = c_start && c_op == OP_ALU;
        st_start = s_start;
        st_insn = sh;
        comp_insn = ch;
    end

    always @(posedge clk) begin
        if (erst) begin
            l_busy <= 1'b0;
            s_busy_q <= 1'b0;
            cstate <= CS_IDLE;
            next_rseq <= 0;
            dma_owner_compute <= 1'b0;
        end else begin
            if (l_start) begin
                l_busy <= 1'b1;
                l_deps <= lh[6:3];
            end else if (l_done) begin
                l_busy <= 1'b0;
            end
            if (s_start) begin
                s_busy_q <= 1'b1;
                s_deps <= sh[6:3];
            end else if (s_done) begin
                s_busy_q <= 1'b0;
            end
            if (dma_start) begin
                next_rseq <= next_rseq + 1'b1;
                dma_owner_compute <= !l_start;
            end
            if (c_start) begin
                c_deps <= ch[6:3];
                case (c_op)
                    OP_GEMM: cstate <= CS_GEMM;
                    OP_ALU: cstate <= CS_ALU;
                    OP_LOAD: cstate <= CS_LOAD;
                    default: cstate <= CS_FINISHED;
                endcase
            end else if (c_done) begin
                cstate <= CS_IDLE;
            end
        end
    end

    // ------------------------------------------------- run state, counters
    always @(posedge clk) begin
        if (rst) begin
            running <= 1'b0;
            done_flag <= 1'b0;
            fault <= 1'b0;
            prog_base <= 0;
            insn_count <= 0;
        end else begin
            if (host_we && host_addr == REG_PROG_LO) prog_base[31:0] <= host_wdata;
            if (host_we && host_addr == REG_PROG_HI) prog_base[39:32] <= host_wdata[7:0];
            if (host_we && host_addr == REG_INSN_COUNT) insn_count <= host_wdata;
            if (go) begin
                running <= 1'b1;
                done_flag <= 1'b0;
                fault <= 1'b0;
                cyc <= 0;
                gemm_cyc <= 0;
                alu_cyc <= 0;
                stall_cyc <= 0;
                rd_busy_cyc <= 0;
                wr_busy_cyc <= 0;
                insns <= 0;
            end else if (running) begin
                cyc <= cyc + 1'b1;
                if (cstate == CS_GEMM) gemm_cyc <= gemm_cyc + 1'b1;
                if (cstate == CS_ALU) alu_cyc <= alu_cyc + 1'b1;
                if (cstate == CS_IDLE && !c_start) stall_cyc <= stall_cyc + 1'b1;
                if (dma_busy) rd_busy_cyc <= rd_busy_cyc + 1'b1;
                if (st_busy) wr_busy_cyc <= wr_busy_cyc + 1'b1;
                insns <= insns + l_start + c_start + s_start;
                if (c_start && c_op == OP_FINISH) begin
                    running <= 1'b0;
                    done_flag <= 1'b1;
                end
                if (c_start && c_op > OP_FINISH) begin
                    running <= 1'b0;
                    fault <= 1'b1;
                end
            end
        end
    end
endmodule

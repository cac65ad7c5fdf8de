// Vector ALU over accumulator entries: ADD (bias), REQUANT (fixed-point
// requantization with zero points, ReLU and clamp) and RESADD (two operands
// rescaled with one shared shift), bit-exact with edgekit/core/fixedpoint.py:
// int32 x int32 products in 64 bits, rounded right shift with ties to even,
// add the zero point, clamp, keep the low byte sign-extended. All sums wrap
// modulo 2^64, as there.
//
// Ties to even: t = x + 2^(n-1) is what half up shifts; x is exactly
// half-way when t's low n bits are 0, and then the half-up result t >> n is
// the upper of the two neighbours, so the even one is that result with bit
// 0 cleared. That is the same value as fixedpoint.round_shift's
// (x + 2^(n-1) - 1 + ((x >> n) & 1)) >> n, without a second adder: a
// zero test of the low bits beside the shift and an AND on bit 0 (no extra
// cycle).
//
// One multiplier per lane (four 18x18 DSP blocks for a 34 x 32-bit
// product): REQUANT and ADD take one cycle per entry, RESADD two (its
// operands' products pass the multiplier one after the other and are summed).
//
// Timeline from the start cycle s: parameters p0/p1 are read at s (two read
// ports), p2 at s+1; entries are read from s+3, one per pass slot (operand b
// through the second port; the buffers hold their output while not read, so
// RESADD's second pass sees the same entry). Then nine pipeline stages:
//   A   subtract zero points, ReLU; pick the pass's operand and multiplier
//   M1  four 18x18 partial products (DSP blocks)
//   M2  middle partial products summed; outer ones concatenated
//   M3  the 64-bit product
//   P   + 2^(n-1) on the first pass, + the previous product on RESADD's second
//   S1  arithmetic shift by the multiple-of-8 part of n; whether the low n
//       bits of the sum are 0 (an exact tie)
//   S2  arithmetic shift by the rest
//   Z1  bit 0 cleared on a tie, + zout (64 bits), then whether the sum fits 12 bits
//   Z2  clamp; the registered write
// The op ends when its last write has landed, so the next instruction reads
// the results (cost measured: edgekit/npu/timing.py ALU_LATENCY_CYCLES).
`default_nettype none
`include "npu_isa.vh"
`include "npu_ports.vh"
module npu_alu #(
    parameter COLS = 8
) (
    `NPU_UNIT_PORTS,
    output wire                 r0_re,
    output wire [19:0]          r0_addr,
    input  wire [COLS*32-1:0]   r0_data,
    output wire                 r1_re,
    output wire [19:0]          r1_addr,
    input  wire [COLS*32-1:0]   r1_data,
    output reg                  acc_we,
    output reg  [19:0]          acc_waddr,
    output reg  [COLS*32-1:0]   acc_wdata
);
    localparam OP_ADD = 4'd0, OP_REQUANT = 4'd1, OP_RESADD = 4'd2;
    localparam STAGES = 9;  // A .. Z2

    // The instruction word, held from the start (its fields are read from
    // it; Yosys drops the bits no field uses).
    reg [255:0] cur;
    wire [3:0]  op = cur[`ALU_OP];
    wire        relu = cur[`ALU_RELU];
    wire signed [8:0] zin = cur[`ALU_ZIN], zin_b = cur[`ALU_ZIN_B], zout = cur[`ALU_ZOUT], lo = cur[`ALU_LO], hi = cur[`ALU_HI];
    wire [19:0] pbase = cur[`ALU_PARAM_BASE], count = cur[`ALU_COUNT];
    wire [15:0] stride = cur[`ALU_STRIDE];
    reg [19:0] dst, src, k;
    reg [COLS*32-1:0] p0, p1, p2;
    reg        active;
    reg [1:0]  phase;   // 0: p0/p1 read issued, 1: p2 read issued, 2: streaming entries
    reg        streaming;
    reg        pass;    // RESADD's second pass over the entry just read

    wire two_pass = op == OP_RESADD;
    wire issue = active && streaming;
    wire entry_read = issue && !pass;
    assign r0_re = start || (active && phase == 2'd0) || entry_read;
    assign r0_addr = start ? insn[`ALU_PARAM_BASE] : (phase == 2'd0 ? pbase + 20'd2 : dst);
    assign r1_re = start || entry_read;
    assign r1_addr = start ? insn[`ALU_PARAM_BASE] + 20'd1 : src;

    // Per-stage valid bits, pass flags (first, last) and write addresses:
    // index 0 is the issue cycle's tag, index i the tag leaving stage i.
    reg [STAGES-1:0] v;
    reg [STAGES-1:0] first, last;
    reg [19:0] addr [0:STAGES-1];
    reg i_v, i_first, i_last;
    reg [19:0] i_a;
    assign busy = active;
    // The last write lands at the end of the cycle `done` is high in.
    assign done = active && phase == 2'd2 && !streaming && !i_v && v[STAGES-2:0] == 0;

    always @(posedge clk) begin
        if (rst) begin
            active <= 1'b0;
            streaming <= 1'b0;
            phase <= 2'd0;
            pass <= 1'b0;
        end else if (start) begin
            cur <= insn;
            dst <= insn[`ALU_DST_BASE];
            src <= insn[`ALU_SRC_BASE];
            k <= 0;
            phase <= 2'd0;
            streaming <= 1'b0;
            pass <= 1'b0;
            active <= 1'b1;
        end else if (active) begin
            if (phase == 2'd0) begin
                p0 <= r0_data;
                p1 <= r1_data;
                phase <= 2'd1;
            end else if (phase == 2'd1) begin
                p2 <= r0_data;
                phase <= 2'd2;
                streaming <= count != 0;
            end else if (streaming) begin
                if (two_pass && !pass) begin
                    pass <= 1'b1;
                end else begin
                    pass <= 1'b0;
                    dst <= dst + stride;
                    src <= src + stride;
                    k <= k + 1'b1;
                    if (k == count - 1) streaming <= 1'b0;
                end
            end
            if (done) active <= 1'b0;
        end
    end

    // ------------------------------------------------------------- control pipe
    integer s;
    always @(posedge clk) begin
        if (rst) begin
            i_v <= 1'b0;
            v <= 0;
        end else begin
            i_v <= issue;
            i_a <= dst;
            i_first <= !pass;
            i_last <= !two_pass || pass;
            v <= {v[STAGES-2:0], i_v};
            first <= {first[STAGES-2:0], i_first};
            last <= {last[STAGES-2:0], i_last};
            addr[0] <= i_a;
            for (s = 1; s < STAGES; s = s + 1) addr[s] <= addr[s-1];
        end
    end

    // Shift, rounding term and tie mask (the low n bits) per lane: constant
    // during an op (p1 for REQUANT, p2 for RESADD), registered once the
    // parameters are in. n = 0 rounds nothing: no term, no tie.
    reg [COLS*6-1:0]  sh;
    reg [COLS*64-1:0] rnd;
    reg [COLS*64-1:0] msk;
    reg [COLS-1:0]    nz;
    // (Each clocked block has loop variables of its own: a shared one would have two drivers.)
    integer cr;
    /* verilator lint_off BLKSEQ */
    reg [5:0] n;
    always @(posedge clk) begin
        for (cr = 0; cr < COLS; cr = cr + 1) begin
            n = two_pass ? p2[cr*32 +: 6] : p1[cr*32 +: 6];
            sh[cr*6 +: 6] <= n;
            rnd[cr*64 +: 64] <= n == 6'd0 ? 64'd0 : (64'd1 << (n - 6'd1));
            msk[cr*64 +: 64] <= (64'd1 << n) - 64'd1;
            nz[cr] <= n != 6'd0;
        end
    end

    // ------------------------------------------------------------- datapath
    reg [COLS*34-1:0] a_op;            // A: the multiplicand (acc - zin or src - zin_b)
    reg [COLS*32-1:0] a_m;             //    its multiplier
    reg [COLS*32-1:0] add_pipe [0:STAGES-1];  // ADD's result, carried to the write
    reg [COLS*36-1:0] m_ll, m_lh, m_hl, m_hh;  // M1: partial products
    reg [COLS*64-1:0] m_outer, m_mid;  // M2
    reg [COLS*64-1:0] m_prod;          // M3
    reg [COLS*64-1:0] p_sum;           // P
    reg [COLS*64-1:0] s_coarse, s_q;   // S1, S2
    reg [COLS-1:0]    tie1, tie2;      // S1, S2: the sum was exactly half-way
    reg [COLS*12-1:0] z_y;             // Z1: y's low 12 bits
    reg [COLS-1:0]    z_big, z_neg;    //     y outside 12 bits; its sign
    reg signed [31:0] x, b, mul;
    reg signed [33:0] d, e;
    reg signed [17:0] aL, aH, bL, bH;
    reg signed [63:0] q, y;
    reg signed [12:0] yc;
    integer c, sa;
    always @(posedge clk) begin
        for (c = 0; c < COLS; c = c + 1) begin
            // A
            x = r0_data[c*32 +: 32];
            b = r1_data[c*32 +: 32];
            d = x - zin;
            if (op == OP_REQUANT && relu && d < 0) d = 0;
            e = b - zin_b;
            a_op[c*34 +: 34] <= i_first ? d : e;
            a_m[c*32 +: 32] <= i_first ? p0[c*32 +: 32] : p1[c*32 +: 32];
            add_pipe[0][c*32 +: 32] <= x + p0[c*32 +: 32];
            // M1: a = aH*2^17 + aL, m = bH*2^17 + bL (low halves unsigned)
            aL = {1'b0, a_op[c*34 +: 17]};
            aH = {a_op[c*34 + 33], a_op[c*34 + 17 +: 17]};
            bL = {1'b0, a_m[c*32 +: 17]};
            bH = {{3{a_m[c*32 + 31]}}, a_m[c*32 + 17 +: 15]};
            m_ll[c*36 +: 36] <= aL * bL;
            m_lh[c*36 +: 36] <= aL * bH;
            m_hl[c*36 +: 36] <= aH * bL;
            m_hh[c*36 +: 36] <= aH * bH;
            // M2: aL*bL < 2^34 and aH*bH*2^34 do not overlap
            m_outer[c*64 +: 64] <= {m_hh[c*36 +: 30], m_ll[c*36 +: 34]};
            m_mid[c*64 +: 64] <= {{28{m_lh[c*36 + 35]}}, m_lh[c*36 +: 36]} + {{28{m_hl[c*36 + 35]}}, m_hl[c*36 +: 36]};
            // M3
            m_prod[c*64 +: 64] <= m_outer[c*64 +: 64] + (m_mid[c*64 +: 64] << 17);
            // P: (rounding term + product a) + product b, modulo 2^64
            p_sum[c*64 +: 64] <= (first[3] ? rnd[c*64 +: 64] : p_sum[c*64 +: 64]) + m_prod[c*64 +: 64];
            // S1, S2
            s_coarse[c*64 +: 64] <= $signed(p_sum[c*64 +: 64]) >>> {sh[c*6 + 3 +: 3], 3'b000};
            tie1[c] <= nz[c] && (p_sum[c*64 +: 64] & msk[c*64 +: 64]) == 64'd0;
            s_q[c*64 +: 64] <= $signed(s_coarse[c*64 +: 64]) >>> sh[c*6 +: 3];
            tie2[c] <= tie1[c];
            // Z1: ties to even
            q = {s_q[c*64 + 1 +: 63], s_q[c*64] & !tie2[c]};
            y = q + zout;
            z_y[c*12 +: 12] <= y[11:0];
            z_big[c] <= y[63:11] != {53{y[63]}};
            z_neg[c] <= y[63];
            // Z2: outside 12 bits, y is beyond every 9-bit bound
            yc = z_big[c] ? (z_neg[c] ? -13'sd2048 : 13'sd2047) : $signed({z_y[c*12 + 11], z_y[c*12 +: 12]});
            if (yc < lo) yc = lo;
            if (yc > hi) yc = hi;
            acc_wdata[c*32 +: 32] <= op == OP_ADD ? add_pipe[STAGES-2][c*32 +: 32] : {{24{yc[7]}}, yc[7:0]};
        end
        for (sa = 1; sa < STAGES - 1; sa = sa + 1) add_pipe[sa] <= add_pipe[sa-1];
    end
    /* verilator lint_on BLKSEQ */

    always @(posedge clk) begin
        if (rst) begin
            acc_we <= 1'b0;
        end else begin
            acc_we <= v[STAGES-2] && last[STAGES-2];
            acc_waddr <= addr[STAGES-2];
        end
    end
endmodule

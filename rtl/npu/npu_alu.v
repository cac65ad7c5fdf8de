// Vector ALU over accumulator entries: ADD (bias), REQUANT (fixed-point
// requantization with zero points, ReLU and clamp) and RESADD (two operands
// rescaled with one shared shift), bit-exact with
// edgekit/compiler/integer/requant.py: int32 x int32 products in 64 bits,
// round half up (add 2^(n-1)), arithmetic shift, add the zero point, clamp,
// keep the low byte sign-extended.
//
// Timeline from the start cycle s: parameters p0/p1 are read at s (two read
// ports), p2 at s+1; entry k is read at s+2+k (operand b through the second
// port); then four pipeline stages (subtract/ReLU, multiply, round/shift,
// zero point/clamp) and a registered write. The op ends when its last write
// has landed, so the next instruction reads the results.
`default_nettype none
`include "npu_isa.vh"
module npu_alu #(
    parameter COLS = 8
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire                 start,
    input  wire [255:0]         insn,
    output wire                 busy,
    output wire                 done,
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

    reg [3:0]  op;
    reg        relu;
    reg signed [8:0] zin, zin_b, zout, lo, hi;
    reg [19:0] pbase, dst, src, count, k;
    reg [15:0] stride;
    reg [COLS*32-1:0] p0, p1, p2;
    reg        active;
    reg [1:0]  phase;   // 0: p0/p1 read issued, 1: p2 read issued, 2: streaming entries
    reg        streaming;

    wire issue = active && streaming;
    assign r0_re = start || (active && (phase == 2'd0 || streaming));
    assign r0_addr = start ? insn[`ALU_PARAM_BASE] : (phase == 2'd0 ? pbase + 20'd2 : dst);
    assign r1_re = start || issue;
    assign r1_addr = start ? insn[`ALU_PARAM_BASE] + 20'd1 : src;

    // pipeline valid bits and write addresses
    reg        a_v, m_v, s_v;
    reg [19:0] i_a, a_a, m_a, s_a;
    reg        i_v;
    assign busy = active;
    // The last write lands at the end of the cycle `done` is high in.
    assign done = active && phase == 2'd2 && !streaming && !i_v && !a_v && !m_v && !s_v;

    always @(posedge clk) begin
        if (rst) begin
            active <= 1'b0;
            streaming <= 1'b0;
            phase <= 2'd0;
        end else if (start) begin
            op <= insn[`ALU_OP];
            relu <= insn[`ALU_RELU];
            zin <= insn[`ALU_ZIN];
            zin_b <= insn[`ALU_ZIN_B];
            zout <= insn[`ALU_ZOUT];
            lo <= insn[`ALU_LO];
            hi <= insn[`ALU_HI];
            pbase <= insn[`ALU_PARAM_BASE];
            dst <= insn[`ALU_DST_BASE];
            src <= insn[`ALU_SRC_BASE];
            count <= insn[`ALU_COUNT];
            stride <= insn[`ALU_STRIDE];
            k <= 0;
            phase <= 2'd0;
            streaming <= 1'b0;
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
                dst <= dst + stride;
                src <= src + stride;
                k <= k + 1'b1;
                if (k == count - 1) streaming <= 1'b0;
            end
            if (done) active <= 1'b0;
        end
    end

    // ------------------------------------------------------------- datapath
    reg [COLS*64-1:0] a_d, a_e, m_1, s_q;
    reg [COLS*32-1:0] a_add, m_add, s_add;
    reg [COLS*6-1:0]  m_sh;
    integer c;
    // Per-lane temporaries: blocking assignments inside the clocked block.
    /* verilator lint_off BLKSEQ */
    reg signed [33:0] d, e;
    reg signed [31:0] x, b, mult_a, mult_b;
    reg signed [65:0] prod_a, prod_b;
    reg signed [63:0] v, rnd, y;
    reg [5:0] sh;
    always @(posedge clk) begin
        if (rst) begin
            i_v <= 1'b0;
            a_v <= 1'b0;
            m_v <= 1'b0;
            s_v <= 1'b0;
            acc_we <= 1'b0;
        end else begin
            // read issued this cycle -> operands valid next cycle
            i_v <= issue;
            i_a <= dst;
            // stage A: subtract zero points, ReLU; ADD completes here
            a_v <= i_v;
            a_a <= i_a;
            for (c = 0; c < COLS; c = c + 1) begin
                x = r0_data[c*32 +: 32];
                b = r1_data[c*32 +: 32];
                d = x - zin;
                if (op == OP_REQUANT && relu && d < 0) d = 0;
                e = b - zin_b;
                a_d[c*64 +: 64] <= {{30{d[33]}}, d};
                a_e[c*64 +: 64] <= {{30{e[33]}}, e};
                a_add[c*32 +: 32] <= x + $signed(p0[c*32 +: 32]);
            end
            // stage M: 34 x 32 -> 64-bit products
            m_v <= a_v;
            m_a <= a_a;
            m_add <= a_add;
            for (c = 0; c < COLS; c = c + 1) begin
                mult_a = p0[c*32 +: 32];
                mult_b = p1[c*32 +: 32];
                prod_a = $signed(a_d[c*64 +: 34]) * mult_a;
                prod_b = $signed(a_e[c*64 +: 34]) * mult_b;
                m_1[c*64 +: 64] <= prod_a[63:0] + (op == OP_RESADD ? prod_b[63:0] : 64'd0);
                m_sh[c*6 +: 6] <= op == OP_RESADD ? p2[c*32 +: 6] : p1[c*32 +: 6];
            end
            // stage S: round half up, arithmetic shift
            s_v <= m_v;
            s_a <= m_a;
            s_add <= m_add;
            for (c = 0; c < COLS; c = c + 1) begin
                sh = m_sh[c*6 +: 6];
                rnd = sh == 6'd0 ? 64'sd0 : (64'sd1 <<< (sh - 6'd1));
                v = $signed(m_1[c*64 +: 64]) + rnd;
                s_q[c*64 +: 64] <= v >>> sh;
            end
            // stage Z: output zero point, clamp, low byte sign-extended
            acc_we <= s_v;
            acc_waddr <= s_a;
            for (c = 0; c < COLS; c = c + 1) begin
                y = $signed(s_q[c*64 +: 64]) + zout;
                if (y < lo) y = lo;
                if (y > hi) y = hi;
                acc_wdata[c*32 +: 32] <= op == OP_ADD ? s_add[c*32 +: 32] : {{24{y[7]}}, y[7:0]};
            end
        end
    end
    /* verilator lint_on BLKSEQ */
endmodule

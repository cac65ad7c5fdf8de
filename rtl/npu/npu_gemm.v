// GEMM: streams input vectors through the ROWS x COLS int8 MAC array against
// one weight block, accumulating into accumulator entries.
//
// Weight-stationary: the block is read once (the issue cycle) into the
// weight buffer's output register and stays there while the GEMM streams one
// input vector per cycle. Each of the COLS columns is a dot product of ROWS
// int8 x int8 products (an adder tree, as in NVDLA's CMAC rather than a
// systolic chain: the same MACs, a shorter pipeline). Pipeline after a
// vector's issue cycle t:
//   t+1  input entry and weights valid (buffer outputs): registered
//   t+2  ROWS*COLS products registered
//   t+3  column sums registered; accumulator entry read
//   t+4  accumulate (or overwrite on reset) and write back
//   t+5  the write reaches the buffer
// (The register at t+1 keeps the block RAM's slow clock-to-output off the
// multipliers' path; the weights are registered with the input so the last
// vector of a GEMM meets its own block when the next GEMM has read its own.)
// A vector whose entry one of the two vectors before it is still writing
// takes that value from a bypass register (int32 adds wrap like numpy's cast).
`default_nettype none
`include "npu_isa.vh"
module npu_gemm #(
    parameter ROWS = 8,
    parameter COLS = 8,
    // How many of the ROWS*COLS int8 products use DSP blocks (row-major from
    // the first); the others are built from LUT adders, for arrays with more
    // MACs than the FPGA has multipliers left.
    parameter ARRAY_DSP = 1 << 30
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire                     start,
    input  wire [255:0]             insn,
    output wire                     issuing,     // the compute module is busy with this GEMM
    output wire                     pipe_busy,   // vectors still in flight
    output reg  [31:0]              vectors,
    // input and weight buffer reads
    output wire                     inp_re,
    output wire [19:0]              inp_raddr,
    input  wire [ROWS*8-1:0]        inp_rdata,
    output wire                     wgt_re,
    output wire [19:0]              wgt_raddr,
    input  wire [ROWS*COLS*8-1:0]   wgt_rdata,
    // accumulator read-modify-write
    output wire                     acc_re,
    output wire [19:0]              acc_raddr,
    input  wire [COLS*32-1:0]       acc_rdata,
    output reg                      acc_we,
    output reg  [19:0]              acc_waddr,
    output reg  [COLS*32-1:0]       acc_wdata
);
    // The instruction word, held from the start (its fields are read from
    // it; Yosys drops the bits no field uses).
    reg [255:0] cur;
    wire        reset_f = cur[`GEMM_RESET];
    wire [11:0] ext_outer = cur[`GEMM_EXT_OUTER], ext_inner = cur[`GEMM_EXT_INNER];
    wire [19:0] acc_so = cur[`GEMM_ACC_SO], inp_so = cur[`GEMM_INP_SO];
    wire [15:0] acc_si = cur[`GEMM_ACC_SI], inp_si = cur[`GEMM_INP_SI];
    reg        streaming;
    reg [11:0] i, j;
    reg [19:0] ip_row, ip, ap_row, ap;

    assign issuing = streaming;
    assign wgt_re = start;
    assign wgt_raddr = insn[`GEMM_WGT_BASE];
    assign inp_re = streaming;
    assign inp_raddr = ip;

    wire last_j = j == ext_inner - 1;
    wire last_i = i == ext_outer - 1;

    // pipeline tags: valid, accumulator entry, reset
    reg        t0_v, t1_v, t2_v, t3_v;
    reg [19:0] t0_a, t1_a, t2_a, t3_a;
    reg        t0_r, t1_r, t2_r, t3_r;
    // A write still pending (acc_we) lands before any later reader's first read.
    assign pipe_busy = t0_v || t1_v || t2_v || t3_v;
    assign acc_re = t2_v;
    assign acc_raddr = t2_a;

    always @(posedge clk) begin
        if (rst) begin
            streaming <= 1'b0;
            vectors <= 0;
        end else if (start) begin
            cur <= insn;
            ip_row <= insn[`GEMM_INP_BASE];
            ip <= insn[`GEMM_INP_BASE];
            ap_row <= insn[`GEMM_ACC_BASE];
            ap <= insn[`GEMM_ACC_BASE];
            i <= 0;
            j <= 0;
            streaming <= insn[`GEMM_EXT_OUTER] != 0 && insn[`GEMM_EXT_INNER] != 0;
        end else if (streaming) begin
            vectors <= vectors + 1'b1;
            if (!last_j) begin
                j <= j + 1'b1;
                ip <= ip + inp_si;
                ap <= ap + acc_si;
            end else begin
                j <= 0;
                ip_row <= ip_row + inp_so;
                ip <= ip_row + inp_so;
                ap_row <= ap_row + acc_so;
                ap <= ap_row + acc_so;
                if (!last_i) i <= i + 1'b1;
                else streaming <= 1'b0;
            end
        end
    end

    // ---------------------------------------------------------------- array
    // Signed 8 x 8 product from shifted partial products: what the products
    // beyond ARRAY_DSP build in LUTs. (Its result goes through $signed below:
    // an unsigned arm would make the whole ?: unsigned and zero-extend the DSP
    // product's operands.)
    // A chain of conditional adds: Yosys puts each add on a carry chain
    // (about 130 LUTs a product on an ECP5). Summed as a tree, the adds
    // merge into a carry-save tree of plain LUTs, 2.3x as many (measured).
    function [15:0] mul8_lut;
        input [7:0] a, b;
        integer k;
        reg [15:0] acc, ae;
        begin
            ae = {{8{a[7]}}, a};
            acc = 16'd0;
            for (k = 0; k < 7; k = k + 1)
                if (b[k]) acc = acc + (ae << k);
            if (b[7]) acc = acc - (ae << 7);
            mul8_lut = acc;
        end
    endfunction

    reg [ROWS*8-1:0] inp_q;
    reg [ROWS*COLS*8-1:0] wgt_q;
    always @(posedge clk) begin
        inp_q <= inp_rdata;
        wgt_q <= wgt_rdata;
    end
    reg signed [15:0] prod [0:ROWS*COLS-1];
    reg [COLS*32-1:0] colsum;
    wire [COLS*32-1:0] sums;
    integer r, c;
    always @(posedge clk) begin
        for (r = 0; r < ROWS; r = r + 1)
            for (c = 0; c < COLS; c = c + 1)
                prod[r*COLS+c] <= r * COLS + c < ARRAY_DSP ? $signed(inp_q[r*8 +: 8]) * $signed(wgt_q[(r*COLS+c)*8 +: 8])
                                                          : $signed(mul8_lut(inp_q[r*8 +: 8], wgt_q[(r*COLS+c)*8 +: 8]));
    end
    // Column sums: a balanced adder tree whose adders are only as wide as
    // their operands need (16 bits for a product, one more per level). Per
    // column, a heap of nodes (node k adds nodes 2k and 2k+1; the products
    // are the leaves LEAVES..2*LEAVES-1), each stored sign-extended to SW bits.
    localparam LEVELS = ROWS > 1 ? $clog2(ROWS) : 1;
    localparam LEAVES = 1 << LEVELS;
    localparam SW = 16 + LEVELS;
    genvar gc, gk;
    generate
        for (gc = 0; gc < COLS; gc = gc + 1) begin : col
            wire [2*LEAVES*SW-1:0] tree;
            for (gk = 0; gk < LEAVES; gk = gk + 1) begin : leaf
                if (gk < ROWS) begin : p
                    assign tree[(LEAVES+gk)*SW +: SW] = prod[gk*COLS+gc];
                end else begin : z
                    assign tree[(LEAVES+gk)*SW +: SW] = {SW{1'b0}};
                end
            end
            for (gk = 1; gk < LEAVES; gk = gk + 1) begin : add
                localparam W = SW - ($clog2(gk + 1) - 1);  // node gk sits $clog2(gk+1)-1 levels below the root
                // keep: without it Yosys merges the tree into one multi-operand
                // add and builds it from plain LUTs, 2.7x the carry-chain adders.
                (* keep *) wire signed [W-1:0] s = $signed(tree[2*gk*SW +: W-1]) + $signed(tree[(2*gk+1)*SW +: W-1]);
                assign tree[gk*SW +: SW] = s;
            end
            wire signed [SW-1:0] root = tree[SW +: SW];
            assign sums[gc*32 +: 32] = root;
        end
    endgenerate

    // ------------------------------------------------------------ write back
    // acc_w* is the write of the vector one ahead (lands at the next edge);
    // b2_* the one two ahead (landed at the edge this vector's read sampled).
    reg        b2_v;
    reg [19:0] b2_a;
    reg [COLS*32-1:0] b2_d;
    wire [COLS*32-1:0] old = (acc_we && acc_waddr == t3_a) ? acc_wdata
                           : (b2_v && b2_a == t3_a) ? b2_d : acc_rdata;
    reg [COLS*32-1:0] updated;
    integer uc;  // a loop variable of its own: one shared with the clocked block would have two drivers
    always @* begin
        for (uc = 0; uc < COLS; uc = uc + 1)
            updated[uc*32 +: 32] = (t3_r ? 32'd0 : old[uc*32 +: 32]) + colsum[uc*32 +: 32];
    end

    always @(posedge clk) begin
        if (rst) begin
            t0_v <= 1'b0;
            t1_v <= 1'b0;
            t2_v <= 1'b0;
            t3_v <= 1'b0;
            acc_we <= 1'b0;
            b2_v <= 1'b0;
        end else begin
            t0_v <= streaming;
            t0_a <= ap;
            t0_r <= reset_f;
            t1_v <= t0_v;
            t1_a <= t0_a;
            t1_r <= t0_r;
            t2_v <= t1_v;
            t2_a <= t1_a;
            t2_r <= t1_r;
            t3_v <= t2_v;
            t3_a <= t2_a;
            t3_r <= t2_r;
            colsum <= sums;
            acc_we <= t3_v;
            acc_waddr <= t3_a;
            acc_wdata <= updated;
            b2_v <= acc_we;
            b2_a <= acc_waddr;
            b2_d <= acc_wdata;
        end
    end
endmodule

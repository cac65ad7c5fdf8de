// npu_top behind AXI for the Zynq boards: an AXI4-Lite slave for the host
// registers and an AXI4 master (one clock, active-low reset) for its memory.
// Written for edgekit; no vendor IP.
//
// AXI4-Lite (32-bit data, byte addresses, whole-word writes; WSTRB ignored):
//   0x00..0x7F  npu_top's registers (docs/npu-isa.md), except that
//     CTRL (0x08) bit 0 first copies the program into the instruction
//       buffer, then starts npu_top;
//     STATUS (0x0C) = {fault, done, running}: running also while the program
//       is copied, fault also on a wrapper error (WRAP_STATUS);
//   0x80 WRAP_STATUS (sticky until the next start): bit 0 the program is
//       longer than IMEM_DEPTH instructions (not started), bit 1 an AXI
//       SLVERR/DECERR response, bit 2 a DMA request queue overflowed;
//   0x84 IMEM_DEPTH.
//
// AXI4 master (data AXI_BYTES wide, ID 0: program copy, ID 1: DMA reads,
// ID 0 on writes; responses in order per ID):
//   instruction fetch: npu_top expects its instruction one cycle after the
//     request, which no AXI memory guarantees, so a start first copies the
//     whole program with INCR bursts (at most 16 beats, never across 4 KiB:
//     AXI3-compatible, as on the Zynq-7000 HP ports) into IMEM_DEPTH
//     instruction words of on-chip RAM, which then serves the fetches;
//   DMA read / write: npu_top's DMA_BYTES beats at any byte address are
//     queued (npu_top cannot be stalled: a full queue sets WRAP_STATUS bit 2)
//     and each becomes one INCR burst of the one or two bus words it touches
//     (two single-word bursts where the two words straddle 4 KiB); the read
//     data is realigned, writes get shifted data and byte strobes. A write
//     is acknowledged to npu_top on its last B response.
`default_nettype none
`include "npu_ports.vh"
module npu_axi #(
    `NPU_PARAMS(4096, 512, 1024, 1 << 30),
    parameter AXI_BYTES = 8,       // bus width in bytes: a power of two, DMA_BYTES..32
    parameter ADDR_W = 32,
    parameter IMEM_DEPTH = 1024,   // instruction words (32 bytes each) of the program buffer
    parameter RQ_DEPTH = 32,       // queued DMA read requests (a power of two)
    parameter WQ_DEPTH = 256       // queued DMA writes (a power of two)
) (
    input  wire                   aclk,
    input  wire                   aresetn,
    output wire                   irq,  // STATUS done or fault
    // AXI4-Lite slave
    input  wire [7:0]             s_axil_awaddr,
    input  wire                   s_axil_awvalid,
    output wire                   s_axil_awready,
    input  wire [31:0]            s_axil_wdata,
    input  wire [3:0]             s_axil_wstrb,
    input  wire                   s_axil_wvalid,
    output wire                   s_axil_wready,
    output wire [1:0]             s_axil_bresp,
    output reg                    s_axil_bvalid,
    input  wire                   s_axil_bready,
    input  wire [7:0]             s_axil_araddr,
    input  wire                   s_axil_arvalid,
    output wire                   s_axil_arready,
    output reg  [31:0]            s_axil_rdata,
    output wire [1:0]             s_axil_rresp,
    output reg                    s_axil_rvalid,
    input  wire                   s_axil_rready,
    // AXI4 master
    output wire [0:0]             m_axi_arid,
    output wire [ADDR_W-1:0]      m_axi_araddr,
    output wire [7:0]             m_axi_arlen,
    output wire [2:0]             m_axi_arsize,
    output wire [1:0]             m_axi_arburst,
    output wire                   m_axi_arvalid,
    input  wire                   m_axi_arready,
    input  wire [0:0]             m_axi_rid,
    input  wire [AXI_BYTES*8-1:0] m_axi_rdata,
    input  wire [1:0]             m_axi_rresp,
    input  wire                   m_axi_rlast,
    input  wire                   m_axi_rvalid,
    output wire                   m_axi_rready,
    output wire [0:0]             m_axi_awid,
    output wire [ADDR_W-1:0]      m_axi_awaddr,
    output wire [7:0]             m_axi_awlen,
    output wire [2:0]             m_axi_awsize,
    output wire [1:0]             m_axi_awburst,
    output wire                   m_axi_awvalid,
    input  wire                   m_axi_awready,
    output wire [AXI_BYTES*8-1:0] m_axi_wdata,
    output wire [AXI_BYTES-1:0]   m_axi_wstrb,
    output wire                   m_axi_wlast,
    output wire                   m_axi_wvalid,
    input  wire                   m_axi_wready,
    input  wire [0:0]             m_axi_bid,
    input  wire [1:0]             m_axi_bresp,
    input  wire                   m_axi_bvalid,
    output wire                   m_axi_bready
);
    localparam W = AXI_BYTES, B = DMA_BYTES;
    localparam OB = $clog2(W);               // offset bits of a bus word
    localparam K = 32 / W;                   // bus beats per instruction
    localparam IMEM_AW = $clog2(IMEM_DEPTH), RQ_AW = $clog2(RQ_DEPTH), WQ_AW = $clog2(WQ_DEPTH);
    localparam [7:0] REG_CTRL = 8'h08, REG_STATUS = 8'h0C, REG_PROG_LO = 8'h10, REG_PROG_HI = 8'h14,
                     REG_INSN_COUNT = 8'h18, REG_WRAP_STATUS = 8'h80, REG_IMEM_DEPTH = 8'h84;
    wire rst = !aresetn;

    // ------------------------------------------------------------- npu_top
    reg         host_we;
    reg  [7:0]  host_addr;
    reg  [31:0] host_wdata;
    wire [31:0] host_rdata;
    wire if_req, rd_req, wr_req;
    wire [39:0] if_addr, rd_addr, wr_addr;
    reg  if_rvalid, rd_rvalid, wr_ack;
    reg  [255:0] if_rdata;
    reg  [B*8-1:0] rd_data;
    wire [B*8-1:0] wr_data;
    wire [B-1:0] wr_strb;
    npu_top #(`NPU_PARAMS_PASS) npu (
        .clk(aclk), .rst(rst),
        .host_we(host_we), .host_addr(host_addr), .host_wdata(host_wdata), .host_rdata(host_rdata),
        `NPU_MEM_CONNECT);

    // ------------------------------------------------- AXI4-Lite registers
    reg  [39:0] prog_base;
    reg  [31:0] insn_count;
    reg         loading, go_pend;     // copying the program; start npu_top next
    reg         too_long, axi_err, q_ovf;
    reg  [31:0] beats_left;           // program beats still to request
    reg  [31:0] beats_in;             // program beats received
    // npu_top has one register read port: when no AXI-Lite access uses it,
    // it reads STATUS, and npu_st keeps the last value read
    reg  [2:0]  npu_st;
    wire [2:0]  npu_status = host_addr == REG_STATUS && !host_we ? host_rdata[2:0] : npu_st;
    wire        wrap_fault = too_long || axi_err || q_ovf;
    // A lite write is taken when both its address and data are there; a
    // read when no write or start uses the host port this cycle.
    wire lite_w = s_axil_awvalid && s_axil_wvalid && !s_axil_bvalid && !go_pend;
    wire lite_r = s_axil_arvalid && !s_axil_rvalid && !lite_w && !go_pend;
    wire start = lite_w && s_axil_awaddr == REG_CTRL && s_axil_wdata[0];
    assign s_axil_awready = lite_w;
    assign s_axil_wready = lite_w;
    assign s_axil_bresp = 2'b00;
    assign s_axil_arready = lite_r;
    assign s_axil_rresp = 2'b00;
    wire busy = loading || go_pend;  // the previous program's done/fault bits are stale
    wire [2:0] status = {npu_status[2] && !busy || wrap_fault, npu_status[1] && !busy, npu_status[0] || busy};
    assign irq = status[2] || status[1];

    always @* begin
        host_we = 1'b0;
        host_addr = lite_r ? s_axil_araddr : REG_STATUS;
        host_wdata = s_axil_wdata;
        if (go_pend) begin
            host_we = 1'b1;
            host_addr = REG_CTRL;
            host_wdata = 32'd1;
        end else if (lite_w && !start) begin
            host_we = 1'b1;
            host_addr = s_axil_awaddr;
        end
    end

    always @(posedge aclk) begin
        if (rst) begin
            s_axil_bvalid <= 1'b0;
            s_axil_rvalid <= 1'b0;
            prog_base <= 0;
            insn_count <= 0;
            too_long <= 1'b0;
            axi_err <= 1'b0;
            npu_st <= 3'd0;
        end else begin
            if (go_pend) npu_st <= 3'b001;  // the previous program's bits are cleared by the start
            else npu_st <= npu_status;
            if (lite_w) s_axil_bvalid <= 1'b1;
            else if (s_axil_bready) s_axil_bvalid <= 1'b0;
            if (lite_r) begin
                s_axil_rvalid <= 1'b1;
                s_axil_rdata <= s_axil_araddr == REG_STATUS ? {29'd0, status}
                              : s_axil_araddr == REG_WRAP_STATUS ? {29'd0, q_ovf, axi_err, too_long}
                              : s_axil_araddr == REG_IMEM_DEPTH ? IMEM_DEPTH
                              : s_axil_araddr[7] ? 32'd0 : host_rdata;
            end else if (s_axil_rready) begin
                s_axil_rvalid <= 1'b0;
            end
            if (lite_w && s_axil_awaddr == REG_PROG_LO) prog_base[31:0] <= s_axil_wdata;
            if (lite_w && s_axil_awaddr == REG_PROG_HI) prog_base[39:32] <= s_axil_wdata[7:0];
            if (lite_w && s_axil_awaddr == REG_INSN_COUNT) insn_count <= s_axil_wdata;
            if (start) begin
                too_long <= insn_count > IMEM_DEPTH;
                axi_err <= 1'b0;
            end
            if ((m_axi_rvalid && m_axi_rresp[1]) || (m_axi_bvalid && m_axi_bresp[1])) axi_err <= 1'b1;
        end
    end

    // ------------------------------------------- program copy (AR ID 0)
    reg [39:0] pl_addr;
    // beats in the next burst: at most 16, the rest of the program, the rest of the 4 KiB page
    wire [12:0] page_beats = (13'd4096 - {1'b0, pl_addr[11:0]}) >> OB;
    wire [31:0] pl_len = beats_left < 16 ? beats_left : 16;
    wire [31:0] pl_beats = pl_len < page_beats ? pl_len : page_beats;
    wire        pl_ar = loading && beats_left != 0;

    reg [255:0] imem [0:IMEM_DEPTH-1];
    reg [255:0] asm_word;                  // instruction being assembled from beats
    wire [255:0] asm_next = K == 1 ? m_axi_rdata : {m_axi_rdata, asm_word[255:W*8]};
    wire pl_r = m_axi_rvalid && m_axi_rid == 1'b0;
    wire [31:0] pl_index = beats_in / K;

    always @(posedge aclk) begin
        // start npu_top when the program's last beat arrived, or at once without instructions
        go_pend <= !rst && ((loading && pl_r && beats_in + 1 == insn_count * K) || (start && insn_count == 0));
        if (rst) begin
            loading <= 1'b0;
        end else if (start) begin
            loading <= insn_count <= IMEM_DEPTH && insn_count != 0;
            pl_addr <= prog_base;
            beats_left <= insn_count * K;
            beats_in <= 0;
        end else begin
            if (pl_ar && m_axi_arready) begin
                pl_addr <= pl_addr + (pl_beats << OB);
                beats_left <= beats_left - pl_beats;
            end
            if (pl_r) begin
                asm_word <= asm_next;
                beats_in <= beats_in + 1'b1;
                if (beats_in % K == K - 1) imem[pl_index[IMEM_AW-1:0]] <= asm_next;
                if (beats_in + 1 == insn_count * K) loading <= 1'b0;
            end
        end
    end
    // fetches: from the buffer, one cycle later
    wire [39:0] if_off = if_addr - prog_base;
    always @(posedge aclk) begin
        if_rvalid <= !rst && if_req;
        if_rdata <= imem[if_off[IMEM_AW+4:5]];
    end

    // ------------------------------------------------ DMA reads (AR ID 1)
    wire [39:0] rq_addr;
    wire rq_empty, rq_full;
    reg  rd_second;                        // the second word of a request split at 4 KiB
    wire [OB-1:0] r_off = rq_addr[OB-1:0];
    wire r_two = {1'b0, r_off} + B > W;
    wire [39:0] r_word = {rq_addr[39:OB], {OB{1'b0}}};
    wire r_split = r_two && &r_word[11:OB];
    wire rd_ar = !pl_ar && !rq_empty;
    wire rd_ar_go = rd_ar && m_axi_arready;
    wire rq_pop = rd_ar_go && (!r_split || rd_second);
    npu_fifo #(.WIDTH(40), .DEPTH(RQ_DEPTH), .AW(RQ_AW)) rq (
        .clk(aclk), .clear(rst), .push(rd_req), .din(rd_addr), .pop(rq_pop),
        .dout(rq_addr), .empty(rq_empty), .full(rq_full), .count());
    // per request, for the R side: {two words, offset}
    wire [OB:0] ri_head;
    wire ri_empty;
    reg  r_have_lo;
    reg  [W*8-1:0] r_lo;
    wire rd_r = m_axi_rvalid && m_axi_rid == 1'b1;
    wire ri_done = rd_r && (!ri_head[OB] || r_have_lo);
    npu_fifo #(.WIDTH(OB + 1), .DEPTH(RQ_DEPTH), .AW(RQ_AW)) ri (
        .clk(aclk), .clear(rst), .push(rd_ar_go && !rd_second), .din({r_two, r_off}), .pop(ri_done),
        .dout(ri_head), .empty(ri_empty), .full(), .count());
    wire [2*W*8-1:0] r_pair = ri_head[OB] ? {m_axi_rdata, r_lo} : {{W*8{1'b0}}, m_axi_rdata};
    wire [2*W*8-1:0] r_shift = r_pair >> (ri_head[OB-1:0] * 8);

    assign m_axi_arid = pl_ar ? 1'b0 : 1'b1;
    assign m_axi_araddr = pl_ar ? pl_addr[ADDR_W-1:0] : (r_word + (rd_second ? W : 0));
    assign m_axi_arlen = pl_ar ? pl_beats[7:0] - 8'd1 : (r_two && !r_split ? 8'd1 : 8'd0);
    assign m_axi_arsize = OB;
    assign m_axi_arburst = 2'b01;  // INCR
    assign m_axi_arvalid = pl_ar || rd_ar;
    assign m_axi_rready = 1'b1;

    always @(posedge aclk) begin
        if (rst) begin
            rd_second <= 1'b0;
            r_have_lo <= 1'b0;
            rd_rvalid <= 1'b0;
        end else begin
            if (rd_ar_go && r_split) rd_second <= !rd_second;
            if (rd_r && ri_head[OB] && !r_have_lo) begin
                r_lo <= m_axi_rdata;
                r_have_lo <= 1'b1;
            end else if (ri_done) begin
                r_have_lo <= 1'b0;
            end
            rd_rvalid <= ri_done;
            if (ri_done) rd_data <= r_shift[B*8-1:0];
        end
    end

    // --------------------------------------------- DMA writes (AW/W ID 0)
    localparam WQW = 40 + B * 8 + B;
    wire [WQW-1:0] wq_head;
    wire wq_empty, wq_full;
    wire [39:0] w_addr = wq_head[WQW-1 -: 40];
    wire [B*8-1:0] w_data = wq_head[B +: B*8];
    wire [B-1:0] w_strb = wq_head[B-1:0];
    wire [OB-1:0] w_off = w_addr[OB-1:0];
    wire [39:0] w_word = {w_addr[39:OB], {OB{1'b0}}};
    wire [2*W*8-1:0] w_pdata = {{(2*W-B)*8{1'b0}}, w_data} << (w_off * 8);
    wire [2*W-1:0] w_pstrb = {{(2*W-B){1'b0}}, w_strb} << w_off;
    wire w_two = {1'b0, w_off} + B > W;
    wire w_split = w_two && &w_word[11:OB];
    reg  wr_second;       // the second (split) burst of this request
    reg  aw_done;         // this burst's address is sent
    reg  w_beat;          // index of the next data beat of an unsplit two-word burst
    reg  w_sent;          // this burst's data beats are all sent
    wire w_hi = wr_second || w_beat;     // which word the data beat carries
    wire w_last = !w_two || w_split || w_beat;
    wire w_go = m_axi_wvalid && m_axi_wready;
    wire aw_go = m_axi_awvalid && m_axi_awready;
    wire burst_end = (w_sent || (w_go && w_last)) && (aw_done || aw_go);
    wire wq_pop = burst_end && (!w_split || wr_second);
    npu_fifo #(.WIDTH(WQW), .DEPTH(WQ_DEPTH), .AW(WQ_AW)) wq (
        .clk(aclk), .clear(rst), .push(wr_req), .din({wr_addr, wr_data, wr_strb}), .pop(wq_pop),
        .dout(wq_head), .empty(wq_empty), .full(wq_full), .count());
    assign m_axi_awid = 1'b0;
    assign m_axi_awaddr = w_word + (wr_second ? W : 0);
    assign m_axi_awlen = w_two && !w_split ? 8'd1 : 8'd0;
    assign m_axi_awsize = OB;
    assign m_axi_awburst = 2'b01;
    assign m_axi_awvalid = !wq_empty && !aw_done;
    assign m_axi_wvalid = !wq_empty && !w_sent;
    assign m_axi_wdata = w_hi ? w_pdata[2*W*8-1:W*8] : w_pdata[W*8-1:0];
    assign m_axi_wstrb = w_hi ? w_pstrb[2*W-1:W] : w_pstrb[W-1:0];
    assign m_axi_wlast = w_last;
    // B responses: one per burst; the request's last one acknowledges it
    wire bi_head, bi_empty;
    npu_fifo #(.WIDTH(1), .DEPTH(WQ_DEPTH), .AW(WQ_AW)) bi (
        .clk(aclk), .clear(rst), .push(aw_go), .din(!w_split || wr_second), .pop(m_axi_bvalid),
        .dout(bi_head), .empty(bi_empty), .full(), .count());
    assign m_axi_bready = 1'b1;

    always @(posedge aclk) begin
        if (rst) begin
            wr_second <= 1'b0;
            aw_done <= 1'b0;
            w_beat <= 1'b0;
            w_sent <= 1'b0;
            wr_ack <= 1'b0;
            q_ovf <= 1'b0;
        end else begin
            if (burst_end) begin
                aw_done <= 1'b0;
                w_beat <= 1'b0;
                w_sent <= 1'b0;
                if (w_split) wr_second <= !wr_second;
            end else begin
                if (aw_go) aw_done <= 1'b1;
                if (w_go && w_last) w_sent <= 1'b1;
                else if (w_go) w_beat <= 1'b1;
            end
            wr_ack <= m_axi_bvalid && bi_head;
            if (start) q_ovf <= 1'b0;
            if ((rd_req && rq_full) || (wr_req && wq_full)) q_ovf <= 1'b1;
        end
    end
endmodule

// Address walker of a 2-D strided DMA instruction, shared by the read DMA
// (LOAD) and the store (STORE): y rows of x elements, each element `chunk`
// consecutive buffer entries of `entry_bytes` bytes in memory, each entry
// moved in `beats` beats of B bytes. Row y, element x starts at
// dram_addr + y*y_stride + x*x_stride.
//
// With PAD=1 the walk covers the box surrounded by pad_* elements (padding
// slots: one per entry, no memory address, `in_box` low); the buffer side is
// the padded box, dense and row-major. With PAD=0 the pad inputs are ignored.
//
// The current slot (beat or padding entry) is on the outputs while
// `walking`; `step` moves to the next one. `start` loads a new instruction.
`default_nettype none
module npu_walker #(
    parameter B = 8,     // bytes per beat
    parameter PAD = 1
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    input  wire [39:0] dram_addr,
    input  wire [19:0] sram_base,
    input  wire [11:0] y_size,
    input  wire [11:0] x_size,
    input  wire [15:0] chunk,
    input  wire [23:0] x_stride,
    input  wire [31:0] y_stride,
    input  wire [7:0]  pad_top,
    input  wire [7:0]  pad_bottom,
    input  wire [7:0]  pad_left,
    input  wire [7:0]  pad_right,
    input  wire [15:0] entry_bytes,
    input  wire [15:0] beats,        // per entry
    input  wire        step,
    output reg         walking,
    output wire        in_box,       // a data beat (else a padding entry)
    output wire        last_beat,    // the slot ends its entry
    output wire [39:0] addr,         // the beat's byte address
    output reg  [19:0] entry,        // the slot's buffer entry
    output reg  [15:0] beat          // the beat within the entry
);
    reg [11:0] ysz, xsz;
    reg [15:0] nchunk, ebytes, bpe;
    reg [23:0] xs;
    reg [31:0] ys;
    reg [7:0]  pt, pl;
    reg [12:0] yp, xp;   // the padded box
    reg [12:0] yy, xx;
    reg [15:0] kk;
    reg [39:0] a_row, a_elem, a_ent;

    wire in_row = !PAD || (yy >= pt && yy < pt + ysz);
    assign in_box = in_row && (!PAD || (xx >= pl && xx < pl + xsz));
    assign last_beat = !in_box || beat == bpe - 1;
    assign addr = a_ent + beat * B;
    wire last_k = kk == nchunk - 1;
    wire last_x = xx == xp - 1;
    wire last_y = yy == yp - 1;
    wire [12:0] yp_in = y_size + (PAD ? pad_top + pad_bottom : 13'd0);
    wire [12:0] xp_in = x_size + (PAD ? pad_left + pad_right : 13'd0);

    always @(posedge clk) begin
        if (rst) begin
            walking <= 1'b0;
        end else if (start) begin
            ysz <= y_size;
            xsz <= x_size;
            nchunk <= chunk;
            xs <= x_stride;
            ys <= y_stride;
            pt <= pad_top;
            pl <= pad_left;
            yp <= yp_in;
            xp <= xp_in;
            ebytes <= entry_bytes;
            bpe <= beats;
            yy <= 0;
            xx <= 0;
            kk <= 0;
            beat <= 0;
            entry <= sram_base;
            a_row <= dram_addr;
            a_elem <= dram_addr;
            a_ent <= dram_addr;
            // A sum of sizes is zero only when each is: ORs, no carry chain
            // on this path from the instruction queue's head.
            walking <= chunk != 0 && (y_size != 0 || (PAD && (pad_top != 0 || pad_bottom != 0)))
                                  && (x_size != 0 || (PAD && (pad_left != 0 || pad_right != 0)));
        end else if (step && walking) begin
            if (!last_beat) begin
                beat <= beat + 1'b1;
            end else begin
                beat <= 0;
                entry <= entry + 1'b1;
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
endmodule

// Synchronous FIFO with a combinational head (first-word fall-through).
`default_nettype none
module npu_fifo #(
    parameter WIDTH = 8,
    parameter DEPTH = 16,
    parameter AW = 4
) (
    input  wire             clk,
    input  wire             clear,
    input  wire             push,
    input  wire [WIDTH-1:0] din,
    input  wire             pop,
    output wire [WIDTH-1:0] dout,
    output wire             empty,
    output wire             full,
    output reg  [AW:0]      count
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    reg [AW-1:0] rp, wp;
    assign dout = mem[rp];
    assign empty = count == 0;
    assign full = count == DEPTH;
    always @(posedge clk) begin
        if (clear) begin
            rp <= 0;
            wp <= 0;
            count <= 0;
        end else begin
            if (push) begin
                mem[wp] <= din;
                wp <= wp + 1'b1;
            end
            if (pop) rp <= rp + 1'b1;
            count <= count + (push ? 1'b1 : 1'b0) - (pop ? 1'b1 : 1'b0);
        end
    end
endmodule

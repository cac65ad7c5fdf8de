// Verilator harness of a board top (ulx3s_top): the clock and the far end
// of its serial line, as a C API loaded from Python with ctypes
// (edgekit/sim/npu/rtl_board.py). Bytes the host sends are shifted onto the
// board's receive pin as 8N1 frames; the board's transmit pin is decoded
// the same way, sampled in the middle of each bit. Everything the board
// does goes through its UART bridge, as on the real board.
#include <cstdint>
#include <deque>
#include <memory>

#include "Vulx3s_top.h"
#include "verilated.h"

#ifndef CLKS_PER_BIT
#error "build with -DCLKS_PER_BIT=<clock / baud>"
#endif

namespace {

struct Board {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vulx3s_top> top;
    uint64_t cycle = 0;
    // host -> board
    std::deque<uint8_t> out;
    int out_bit = -1;  // -1: line idle; 0 start, 1..8 data, 9 stop
    int out_cnt = 0;
    // board -> host
    std::deque<uint8_t> in;
    int in_bit = -1;
    int in_cnt = 0;
    uint8_t in_shift = 0;

    void drive() {
        if (out_bit < 0 && !out.empty()) {
            out_bit = 0;
            out_cnt = CLKS_PER_BIT;
        }
        int level = 1;
        if (out_bit == 0) level = 0;
        else if (out_bit >= 1 && out_bit <= 8) level = (out.front() >> (out_bit - 1)) & 1;
        top->ftdi_txd = level;
        if (out_bit >= 0 && --out_cnt == 0) {
            out_cnt = CLKS_PER_BIT;
            if (++out_bit == 10) {
                out_bit = -1;
                out.pop_front();
            }
        }
    }

    void sample() {
        int level = top->ftdi_rxd;
        if (in_bit < 0) {
            if (!level) {
                in_bit = 0;
                in_cnt = CLKS_PER_BIT / 2;
            }
            return;
        }
        if (--in_cnt) return;
        in_cnt = CLKS_PER_BIT;
        if (in_bit == 0 && level) {
            in_bit = -1;  // not a start bit
            return;
        }
        if (in_bit >= 1 && in_bit <= 8) in_shift = static_cast<uint8_t>((in_shift >> 1) | (level << 7));
        if (in_bit == 9) {
            if (level) in.push_back(in_shift);
            in_bit = -1;
            return;
        }
        ++in_bit;
    }

    void tick() {
        drive();
        top->clk_25mhz = 0;
        top->eval();
        top->clk_25mhz = 1;
        top->eval();
        sample();
        ++cycle;
    }
};

}  // namespace

extern "C" {

void* board_new() {
    auto* b = new Board;
    b->ctx = std::make_unique<VerilatedContext>();
    b->top = std::make_unique<Vulx3s_top>(b->ctx.get());
    b->top->btn = 0;
    b->top->ftdi_txd = 1;
    for (int i = 0; i < 64; ++i) b->tick();  // the top's power-on reset
    return b;
}

void board_free(void* h) { delete static_cast<Board*>(h); }

// Sends n bytes; returns when the last stop bit is on the line.
void board_write(void* h, const uint8_t* src, uint64_t n) {
    auto* b = static_cast<Board*>(h);
    for (uint64_t i = 0; i < n; ++i) b->out.push_back(src[i]);
    while (!b->out.empty()) b->tick();
}

// Clocks until n bytes arrived or max_cycles passed; returns the bytes read.
uint64_t board_read(void* h, uint8_t* dst, uint64_t n, uint64_t max_cycles) {
    auto* b = static_cast<Board*>(h);
    uint64_t got = 0;
    for (uint64_t c = 0;; ++c) {
        while (got < n && !b->in.empty()) {
            dst[got++] = b->in.front();
            b->in.pop_front();
        }
        if (got == n || c >= max_cycles) return got;
        b->tick();
    }
}

void board_idle(void* h, uint64_t cycles) {
    auto* b = static_cast<Board*>(h);
    for (uint64_t c = 0; c < cycles; ++c) b->tick();
}

uint32_t board_leds(void* h) { return static_cast<Board*>(h)->top->led; }

uint64_t board_cycles(void* h) { return static_cast<Board*>(h)->cycle; }

}  // extern "C"

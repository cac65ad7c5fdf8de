// Verilator harness of npu_top: a C API (loaded from Python with ctypes)
// around the verilated model, the external memory model and the clock.
//
// Memory model: a flat byte array. The instruction port answers one cycle
// after a request; the data read port answers `latency` cycles after a
// request, in order; each data write lands when it is issued and is
// acknowledged `latency` cycles later. The latency stands for DRAM plus
// interconnect and is an assumption of the harness, not of the RTL.
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "Vnpu_top.h"
#include "harness_io.h"
#include "verilated.h"

#ifndef NPU_DMA_BYTES
#error "build with -DNPU_DMA_BYTES=<bytes per beat>"
#endif

namespace {

using npu_harness::get_bytes;
using npu_harness::put_bytes;

struct Pending {
    uint64_t due;
    uint8_t data[NPU_DMA_BYTES];
};

struct Npu {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vnpu_top> top;
    std::vector<uint8_t> mem;
    uint64_t latency;
    uint64_t cycle = 0;
    std::deque<Pending> reads;
    std::deque<uint64_t> acks;
    bool if_pending = false;
    uint8_t if_word[32];
    int fault = 0;  // 1: a memory access outside the DRAM image

    void read_bytes(uint64_t addr, uint8_t* dst, int n) {
        if (addr >= mem.size()) fault = 1;
        for (int i = 0; i < n; ++i) dst[i] = addr + i < mem.size() ? mem[addr + i] : 0;
    }

    void tick() {
        // Inputs of this cycle: responses that are due.
        top->if_rvalid = if_pending;
        if (if_pending) put_bytes(top->if_rdata, if_word, 32);
        if_pending = false;
        top->rd_rvalid = !reads.empty() && reads.front().due == cycle;
        if (top->rd_rvalid) {
            put_bytes(top->rd_data, reads.front().data, NPU_DMA_BYTES);
            reads.pop_front();
        }
        top->wr_ack = !acks.empty() && acks.front() == cycle;
        if (top->wr_ack) acks.pop_front();
        top->clk = 0;
        top->eval();
        // Requests of this cycle.
        if (top->if_req) {
            read_bytes(top->if_addr, if_word, 32);
            if_pending = true;
        }
        if (top->rd_req) {
            Pending p;
            p.due = cycle + latency;
            read_bytes(top->rd_addr, p.data, NPU_DMA_BYTES);
            reads.push_back(p);
        }
        if (top->wr_req) {
            uint8_t data[NPU_DMA_BYTES];
            get_bytes(top->wr_data, data, NPU_DMA_BYTES);
            uint64_t addr = top->wr_addr;
            uint64_t strb = top->wr_strb;
            for (int i = 0; i < NPU_DMA_BYTES; ++i) {
                if (!(strb >> i & 1)) continue;
                if (addr + i < mem.size()) mem[addr + i] = data[i];
                else fault = 1;
            }
            acks.push_back(cycle + latency);
        }
        top->clk = 1;
        top->eval();
        top->host_we = 0;
        ++cycle;
    }
};

}  // namespace

extern "C" {

void* npu_new(uint64_t dram_bytes, uint64_t latency) {
    auto* n = new Npu;
    n->ctx = std::make_unique<VerilatedContext>();
    n->top = std::make_unique<Vnpu_top>(n->ctx.get());
    n->mem.assign(dram_bytes, 0);
    n->latency = latency < 1 ? 1 : latency;
    n->top->rst = 1;
    n->top->host_we = 0;
    for (int i = 0; i < 4; ++i) n->tick();
    n->top->rst = 0;
    n->tick();
    return n;
}

void npu_free(void* h) { delete static_cast<Npu*>(h); }

int npu_mem_write(void* h, uint64_t addr, const uint8_t* src, uint64_t n) {
    return npu_harness::mem_copy_in(static_cast<Npu*>(h)->mem, addr, src, n);
}

int npu_mem_read(void* h, uint64_t addr, uint8_t* dst, uint64_t n) {
    return npu_harness::mem_copy_out(static_cast<Npu*>(h)->mem, addr, dst, n);
}

void npu_reg_write(void* h, uint32_t offset, uint32_t value) {
    auto* s = static_cast<Npu*>(h);
    s->top->host_addr = offset;
    s->top->host_wdata = value;
    s->top->host_we = 1;
    s->tick();
}

uint32_t npu_reg_read(void* h, uint32_t offset) {
    auto* s = static_cast<Npu*>(h);
    s->top->host_addr = offset;
    s->top->clk = 0;
    s->top->eval();
    return s->top->host_rdata;
}

// Clocks the model until STATUS reports done or fault. Returns the cycles
// clocked, -1 when no instruction started for `stall_limit` cycles (a
// program waiting for a token nobody pushes), -2 on a memory fault.
int64_t npu_run(void* h, uint64_t stall_limit) {
    auto* s = static_cast<Npu*>(h);
    uint32_t insns = 0;
    uint64_t last_progress = 0;
    for (uint64_t n = 0;; ++n) {
        s->tick();
        if (s->fault) return -2;
        s->top->host_addr = 0x0C;
        s->top->eval();
        if (s->top->host_rdata & 0x6) return static_cast<int64_t>(n + 1);
        if ((n & 1023) == 0) {
            s->top->host_addr = 0x64;
            s->top->eval();
            if (s->top->host_rdata != insns) {
                insns = s->top->host_rdata;
                last_progress = n;
            } else if (n - last_progress > stall_limit) {
                return -1;
            }
        }
    }
}

int npu_fault(void* h) { return static_cast<Npu*>(h)->fault; }

}  // extern "C"

// Verilator harness of npu_axi (npu_top behind AXI4-Lite + AXI4): the same
// C API as harness.cpp (so edgekit.sim.npu.rtl_device drives either), with the
// host registers reached over AXI4-Lite and the memory behind an AXI4 slave
// model. Only for co-simulation; written for edgekit.
//
// Slave model: a flat byte array. AR/AW/W ready, R/B valid are withheld at
// random (NPU_AXI_READY_PCT percent of cycles they are offered, fixed seed);
// a burst's first read beat and a write's response come `latency` cycles
// after its address was accepted; responses in order. It checks the
// protocol it relies on: INCR bursts of full-width beats, aligned addresses,
// no 4 KiB crossing, WLAST on the burst's last beat, at most 256 beats; a
// violation or an access outside the array is a fault (npu_run returns -2).
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "Vnpu_axi.h"
#include "harness_io.h"
#include "verilated.h"

#ifndef NPU_AXI_BYTES
#error "build with -DNPU_AXI_BYTES=<bus bytes>"
#endif
#ifndef NPU_AXI_READY_PCT
#define NPU_AXI_READY_PCT 70
#endif

namespace {

constexpr int W = NPU_AXI_BYTES;

using npu_harness::get_bytes;
using npu_harness::put_bytes;

struct Burst {
    uint64_t due, addr;
    int beats, done = 0, id = 0;
};
struct WBeat {
    uint8_t data[W];
    uint64_t strb;
    bool last;
};

struct Sys {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vnpu_axi> top;
    std::vector<uint8_t> mem;
    uint64_t latency, cycle = 0, rng = 0x9E3779B97F4A7C15ull;
    std::deque<Burst> reads, writes;
    std::deque<WBeat> wbeats;
    std::deque<uint64_t> bresp;  // due cycles
    int fault = 0;

    bool coin() {  // xorshift64
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng % 100 < NPU_AXI_READY_PCT;
    }

    bool check(uint64_t addr, int len, int size, int burst) {
        int beats = len + 1;
        bool ok = burst == 1 && (1 << size) == W && addr % W == 0 && (addr & 4095) + uint64_t(beats) * W <= 4096 &&
                  addr + uint64_t(beats) * W <= mem.size();
        if (!ok) fault = 1;
        return ok;
    }

    // One clock: the slave's outputs for this cycle, the handshakes, the edge.
    void tick() {
        auto* t = top.get();
        t->m_axi_arready = coin();
        t->m_axi_awready = coin();
        t->m_axi_wready = coin();
        bool r_offer = !reads.empty() && reads.front().due <= cycle && coin();
        t->m_axi_rvalid = r_offer;
        if (r_offer) {
            Burst& b = reads.front();
            put_bytes(t->m_axi_rdata, &mem[b.addr + uint64_t(b.done) * W], W);
            t->m_axi_rid = b.id;
            t->m_axi_rresp = 0;
            t->m_axi_rlast = b.done + 1 == b.beats;
        }
        t->m_axi_bvalid = !bresp.empty() && bresp.front() <= cycle && coin();
        t->m_axi_bid = 0;
        t->m_axi_bresp = 0;
        t->aclk = 0;
        t->eval();
        if (t->m_axi_arvalid && t->m_axi_arready) {
            Burst b{cycle + latency, t->m_axi_araddr, t->m_axi_arlen + 1};
            b.id = t->m_axi_arid;
            if (check(b.addr, t->m_axi_arlen, t->m_axi_arsize, t->m_axi_arburst)) reads.push_back(b);
        }
        if (r_offer && t->m_axi_rready && ++reads.front().done == reads.front().beats) reads.pop_front();
        if (t->m_axi_awvalid && t->m_axi_awready &&
            check(t->m_axi_awaddr, t->m_axi_awlen, t->m_axi_awsize, t->m_axi_awburst))
            writes.push_back(Burst{cycle + latency, t->m_axi_awaddr, t->m_axi_awlen + 1});
        if (t->m_axi_wvalid && t->m_axi_wready) {
            WBeat w;
            get_bytes(t->m_axi_wdata, w.data, W);
            w.strb = t->m_axi_wstrb;
            w.last = t->m_axi_wlast;
            wbeats.push_back(w);
        }
        while (!writes.empty() && !wbeats.empty()) {  // data may come before its address
            Burst& b = writes.front();
            WBeat& w = wbeats.front();
            for (int i = 0; i < W; ++i)
                if (w.strb >> i & 1) mem[b.addr + uint64_t(b.done) * W + i] = w.data[i];
            if (w.last != (b.done + 1 == b.beats)) fault = 1;
            wbeats.pop_front();
            if (++b.done == b.beats) {
                bresp.push_back(b.due > cycle ? b.due : cycle + 1);
                writes.pop_front();
            }
        }
        if (t->m_axi_bvalid && t->m_axi_bready) bresp.pop_front();
        t->aclk = 1;
        t->eval();
        ++cycle;
    }
};

}  // namespace

extern "C" {

void* npu_new(uint64_t dram_bytes, uint64_t latency) {
    auto* s = new Sys;
    s->ctx = std::make_unique<VerilatedContext>();
    s->top = std::make_unique<Vnpu_axi>(s->ctx.get());
    s->mem.assign(dram_bytes, 0);
    s->latency = latency < 1 ? 1 : latency;
    auto* t = s->top.get();
    t->aresetn = 0;
    t->s_axil_awvalid = t->s_axil_wvalid = t->s_axil_arvalid = 0;
    t->s_axil_bready = t->s_axil_rready = 1;
    t->s_axil_wstrb = 0xF;
    for (int i = 0; i < 4; ++i) s->tick();
    t->aresetn = 1;
    s->tick();
    return s;
}

void npu_free(void* h) { delete static_cast<Sys*>(h); }

int npu_mem_write(void* h, uint64_t addr, const uint8_t* src, uint64_t n) {
    return npu_harness::mem_copy_in(static_cast<Sys*>(h)->mem, addr, src, n);
}

int npu_mem_read(void* h, uint64_t addr, uint8_t* dst, uint64_t n) {
    return npu_harness::mem_copy_out(static_cast<Sys*>(h)->mem, addr, dst, n);
}

// AXI4-Lite write: address and data offered together until taken, then the response.
void npu_reg_write(void* h, uint32_t offset, uint32_t value) {
    auto* s = static_cast<Sys*>(h);
    auto* t = s->top.get();
    t->s_axil_awaddr = offset;
    t->s_axil_wdata = value;
    t->s_axil_awvalid = t->s_axil_wvalid = 1;
    for (int n = 0; n < 1000; ++n) {
        t->aclk = 0;
        t->eval();
        bool taken = t->s_axil_awready && t->s_axil_wready;
        s->tick();
        if (taken) break;
    }
    t->s_axil_awvalid = t->s_axil_wvalid = 0;
    for (int n = 0; n < 1000 && !t->s_axil_bvalid; ++n) s->tick();
    if (!t->s_axil_bvalid) s->fault = 1;
    s->tick();  // BREADY is held high: the response is taken
}

uint32_t npu_reg_read(void* h, uint32_t offset) {
    auto* s = static_cast<Sys*>(h);
    auto* t = s->top.get();
    t->s_axil_araddr = offset;
    t->s_axil_arvalid = 1;
    for (int n = 0; n < 1000; ++n) {
        t->aclk = 0;
        t->eval();
        bool taken = t->s_axil_arready;
        s->tick();
        if (taken) break;
    }
    t->s_axil_arvalid = 0;
    for (int n = 0; n < 1000 && !t->s_axil_rvalid; ++n) s->tick();
    if (!t->s_axil_rvalid) s->fault = 1;
    uint32_t v = t->s_axil_rdata;
    s->tick();
    return v;
}

// Clocks until the interrupt (done or fault). Returns the cycles clocked, -1
// when no instruction started for `stall_limit` cycles, -2 on a memory or
// protocol fault.
int64_t npu_run(void* h, uint64_t stall_limit) {
    auto* s = static_cast<Sys*>(h);
    uint32_t insns = 0;
    uint64_t last_progress = 0;
    uint64_t start = s->cycle;
    for (uint64_t n = 0;; ++n) {
        s->tick();
        if (s->fault) return -2;
        if (s->top->irq) return static_cast<int64_t>(s->cycle - start);
        if ((n & 4095) == 0) {
            uint32_t now = npu_reg_read(h, 0x64);
            if (now != insns) {
                insns = now;
                last_progress = n;
            } else if (n - last_progress > stall_limit) {
                return -1;
            }
        }
    }
}

int npu_fault(void* h) { return static_cast<Sys*>(h)->fault; }

}  // extern "C"

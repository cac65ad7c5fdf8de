// harness_io.h - what the two Verilator harnesses of the NPU (harness.cpp:
// npu_top; axi_harness.cpp: npu_axi) share: bytes in and out of Verilator
// ports, and the host's copies into and out of the flat memory model behind
// npu_mem_write / npu_mem_read of their C API.
#ifndef NPU_HARNESS_IO_H
#define NPU_HARNESS_IO_H

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "verilated.h"

namespace npu_harness {

// Ports narrower than 65 bits are integers in Verilator, wider ones VlWide
// (32-bit words, least significant first). Byte 0 is the least significant;
// n is the number of bytes the port carries.
template <typename T> void put_bytes(T& port, const uint8_t* p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
    port = static_cast<T>(v);
}
template <std::size_t W> void put_bytes(VlWide<W>& port, const uint8_t* p, int n) {
    for (std::size_t w = 0; w < W; ++w) {
        uint32_t v = 0;
        for (int b = 0; b < 4; ++b) {
            int k = static_cast<int>(w) * 4 + b;
            if (k < n) v |= static_cast<uint32_t>(p[k]) << (8 * b);
        }
        port[w] = v;
    }
}
template <typename T> void get_bytes(const T& port, uint8_t* p, int n) {
    uint64_t v = port;
    for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
template <std::size_t W> void get_bytes(const VlWide<W>& port, uint8_t* p, int n) {
    for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(port[i / 4] >> (8 * (i % 4)));
}

// The host's copies into and out of the memory model: 0, or -1 (nothing
// copied) when [addr, addr + n) is not inside it.
inline int mem_copy_in(std::vector<uint8_t>& mem, uint64_t addr, const uint8_t* src, uint64_t n) {
    if (addr > mem.size() || n > mem.size() - addr) return -1;
    if (n) std::memcpy(mem.data() + addr, src, n);
    return 0;
}
inline int mem_copy_out(const std::vector<uint8_t>& mem, uint64_t addr, uint8_t* dst, uint64_t n) {
    if (addr > mem.size() || n > mem.size() - addr) return -1;
    if (n) std::memcpy(dst, mem.data() + addr, n);
    return 0;
}

}  // namespace npu_harness

#endif

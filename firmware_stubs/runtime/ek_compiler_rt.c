/* ek_compiler_rt.c - the float <-> 64-bit integer conversions that LLVM
 * calls instead of inlining them on 32-bit cores (RV32IMF, Cortex-M7 FPv5):
 * a kernel that casts a float to int64 (the QuantizeLinear/DequantizeLinear
 * arithmetic of a tiny layer that LLVM does not vectorize) calls __fixsfdi.
 * Bare-metal images link no compiler runtime (-nostdlib), so these few are
 * provided here, hand-written from the IEEE-754 encoding; the semantics are
 * C's: truncation toward zero (saturating out of range, as compiler-rt
 * does), and round-to-nearest-even for int64 -> float. */
#include <stdint.h>

static uint32_t ek_f32_bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  return u;
}

uint64_t __fixunssfdi(float a) {
  uint32_t u = ek_f32_bits(a);
  int32_t e = (int32_t)((u >> 23) & 0xFFu) - 127;
  uint64_t m = (u & 0x7FFFFFu) | 0x800000u;
  if ((u >> 31) || e < 0) return 0u; /* negative or below 1 (NaN sign bits aside) */
  if (e >= 64) return ~(uint64_t)0;
  return e >= 23 ? m << (e - 23) : m >> (23 - e);
}

int64_t __fixsfdi(float a) {
  uint32_t u = ek_f32_bits(a);
  int32_t e = (int32_t)((u >> 23) & 0xFFu) - 127;
  uint64_t m = (u & 0x7FFFFFu) | 0x800000u;
  if (e < 0) return 0;
  if (e >= 63) return (u >> 31) ? INT64_MIN : INT64_MAX;
  m = e >= 23 ? m << (e - 23) : m >> (23 - e);
  return (u >> 31) ? -(int64_t)m : (int64_t)m;
}

/* Keep 32 significant bits and OR the bits shifted out into the lowest one
 * (a sticky bit below the float's rounding position), so the native
 * uint32 -> float conversion rounds exactly as a 64-bit one would. */
float __floatundisf(uint64_t a) {
  uint32_t sh = 0u;
  uint64_t t = a;
  float scale = 1.0f;
  if ((a >> 32) == 0u) return (float)(uint32_t)a;
  while (t >> 32) {
    t >>= 1;
    ++sh;
  }
  if (a & (((uint64_t)1 << sh) - 1u)) t |= 1u;
  while (sh--) scale *= 2.0f;
  return (float)(uint32_t)t * scale;
}

float __floatdisf(int64_t a) {
  return a < 0 ? -__floatundisf((uint64_t)0 - (uint64_t)a) : __floatundisf((uint64_t)a);
}

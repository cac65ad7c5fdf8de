/* ek_nn_s8.c - int8 convolution, depthwise convolution and fully connected
 * kernels for microcontrollers, called by the model.c that edgekit's AOT
 * emitter writes (edgekit/compiler/backends/aot_c/nn.py replaces each integer-lowered
 * conv2d/matmul chain by one call of these; the emitter appends this file to
 * model.c, after the ek_dltensor_t / ek_ffi_any_t definitions).
 *
 * Hand-written: no library provides int8 kernels for TVM's NCHW layout and
 * edgekit's requantization (CMSIS-NN was read to learn the SMLAD/SXTB16
 * pairing, nothing was copied from it). Outputs are bit-exact with the
 * integer lowering in edgekit/compiler/integer/ (linear.py, requant.py) and
 * its reference, edgekit/core/fixedpoint.py:
 *
 *   acc = sum(x * w) + offset[c]            (zero point and bias folded in)
 *   y   = clamp(round_shift(acc * m[c], n) + z_out, qmin, qmax)
 *   round_shift(x, n) = (x + 2^(n-1) - 1 + ((x >> n) & 1)) >> n   (half to even)
 *
 * with the input padded with its zero point (the padding is folded into the
 * im2col gather here; no separate pad pass).
 *
 * Four inner kernels:
 *  - Cortex-M with the DSP extension (__ARM_FEATURE_DSP): the im2col buffer
 *    holds int16 activations with each group of four reordered as
 *    (a0, a2, a1, a3), so SXTB16 and SXTB16 ROR #8 of a weight word give the
 *    matching (w0, w2) and (w1, w3) pairs without a weight reorder; SMLAD
 *    does two MACs; 2 output channels x 2 pixels are blocked in registers.
 *  - aarch64 with NEON (EK_NN_NEON): the generic kernel's weight layout,
 *    int16 columns, SMLAL by element into int32 (exact for any K; see
 *    "aarch64 NEON" below); depthwise on an int16 plane with int32 MACs,
 *    the requantization and output tables vectorized.
 *    With the dot-product extension as well (EK_NN_SDOT: Armv8.2-A DotProd,
 *    e.g. Cortex-A76), conv/matmul take SDOT by element on int8 columns,
 *    weights [OC/4][KP/4][4][4] (see "aarch64 SDOT" below); the rest is the
 *    NEON code.
 *  - riscv64 (EK_NN_RV64): three channels' weights packed per int64, so one
 *    64-bit mul + add does three exact MACs in 21-bit lanes (backends/aot_c/
 *    nn_rv64.py; see "riscv64" below); 5x5 depthwise on packed rows.
 *  - everything else (RV32IMF, the host): 4 channels x EK_NN_NP pixels in
 *    registers. With an FPU the products are accumulated in float32, which
 *    is exact: |x * w| <= 2^14 and the compiler only routes layers with
 *    K <= 1024 here (backends/aot_c/nn.py), so every partial sum is an integer below
 *    2^24 and one fused multiply-add does a MAC; without an FPU, int32.
 * Word loads go through __builtin_memcpy, which compiles to a load even
 * under -ffreestanding -fno-builtin (a plain memcpy would be a call).
 */

#ifndef EK_NN_S8_C
#define EK_NN_S8_C
#include <stdint.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define EK_NN_DSP 1
#else
#define EK_NN_DSP 0
#endif

#if !EK_NN_DSP && (defined(__riscv_flen) || defined(__x86_64__) || defined(__aarch64__) || defined(__ARM_FP))
typedef float ek_mac_t;
#define EK_NN_FLOAT 1
/* Exact with or without fusing (integers below 2^24): let clang fuse into
 * fmadd.s even where the build says -ffp-contract=off (__builtin_fmaf would
 * become a libm call under -fno-builtin). */
#define EK_MAC(acc, a, b) (acc) += (a) * (b)
#ifdef __clang__
#pragma clang fp contract(fast)
#endif
#else
typedef int32_t ek_mac_t;
#define EK_NN_FLOAT 0
#define EK_MAC(acc, a, b) (acc) += (a) * (b)
#endif

/* aarch64 with NEON (every aarch64 Linux board; Cortex-A72 has no SDOT):
 * integer kernels (SMLAL into int32 lanes), never the float MACs below. */
#if defined(__aarch64__) && defined(__ARM_NEON)
#define EK_NN_NEON 1
#include <arm_neon.h>
#else
#define EK_NN_NEON 0
#endif

/* aarch64 with the dot-product extension (the target's -mcpu, e.g.
 * cortex_a76; not Cortex-A72): SDOT conv/matmul kernels, 16 int8 MACs per
 * instruction, on their own weight layout (backends/aot_c/nn.py). */
#if EK_NN_NEON && defined(__ARM_FEATURE_DOTPROD) && __ARM_FEATURE_DOTPROD
#define EK_NN_SDOT 1
#else
#define EK_NN_SDOT 0
#endif

/* riscv64 (RV64GC Linux boards): integer conv/matmul kernels, three MACs
 * per 64-bit multiply (see "riscv64" below); RV32 keeps the float kernel. */
#if defined(__riscv) && defined(__riscv_xlen) && __riscv_xlen == 64
#define EK_NN_RV64 1
#define EK_RV_LANE 21 /* bits per lane of the packed int64 sums (nn_rv64.LANE_BITS) */
#else
#define EK_NN_RV64 0
#endif

/* riscv64 with the V extension (RVV 1.0) and vectors of 256 bits or more
 * (the target's -mcpu, e.g. spacemit_x60: zvl256b): conv/matmul on vector
 * widening MACs (see "RVV" below); depthwise keeps the riscv64 kernels. */
#if EK_NN_RV64 && defined(__riscv_vector) && defined(__riscv_v_min_vlen) && __riscv_v_min_vlen >= 256
#define EK_NN_RVV 1
#include <riscv_vector.h>
#else
#define EK_NN_RVV 0
#endif

#ifndef EK_NN_NP
#define EK_NN_NP 6 /* pixels per register block (generic kernel) */
#endif
#define EK_NN_MC 4 /* channels per register block (generic kernel; weights packed [OC/4][K][4]) */

/* Parameter block (int32) written by edgekit/compiler/backends/aot_c/nn.py. */
enum {
  EK_NN_KIND, EK_NN_CIN, EK_NN_H, EK_NN_W, EK_NN_OC, EK_NN_OH, EK_NN_OW, EK_NN_KH, EK_NN_KW, EK_NN_SH, EK_NN_SW,
  EK_NN_PT, EK_NN_PL, EK_NN_PADV, EK_NN_QMIN, EK_NN_QMAX, EK_NN_ZOUT, EK_NN_K, EK_NN_KP, EK_NN_P,
  EK_NN_LUT, /* 0, or the int32 index in the block of a 256-byte table applied to each output (the next op) */
  EK_NN_COLS, /* generic conv/matmul: 0 = MAC-type columns, 1 = int8 columns (a smaller scratch) */
  EK_NN_HDR
};

/* The output table of a layer whose next op (HardSwish, ...) was folded
 * into it, indexed by the int8 result: table[v + 128]; NULL if none. */
static inline __attribute__((always_inline)) const int8_t *ek_nn_table(const int32_t *h) {
  return h[EK_NN_LUT] ? (const int8_t *)(h + h[EK_NN_LUT]) + 128 : (const int8_t *)0;
}
enum { EK_NN_CONV = 0, EK_NN_DEPTHWISE = 1, EK_NN_MATMUL = 2 };

static inline __attribute__((always_inline)) uint64_t ek_ld64(const void *p) {
  uint64_t v; /* LDRD: p is word-aligned */
  __builtin_memcpy(&v, __builtin_assume_aligned(p, 4), 8);
  return v;
}

/* An int8 result v (already clamped) stored through the layer's output
 * table, if any; tab is a constant in each inlined copy. */
#define EK_NN_STORE(p, v, tab) (*(p) = (tab) ? (tab)[v] : (int8_t)(v))

/* round_shift(x, n) of a 64-bit product (n <= 62), ties to even. */
static inline __attribute__((always_inline)) int64_t ek_round_shift64(int64_t x, int32_t n) {
  return n > 0 ? (x + ((int64_t)1 << (n - 1)) - 1 + ((x >> n) & 1)) >> n : x;
}

/* round_shift(x, 32 + sh) for 1 <= sh <= 30 from the words of x = hi * 2^32 + lo:
 * x + 2^(n-1) - 1 + b (b = bit n of x = bit sh of hi) is
 * (hi + 2^(sh-1)) * 2^32 + (lo - 1 + b), whose low part borrows one from
 * the high word only when lo = 0 and b = 0 (a tie above an even result, or
 * an exact multiple), and the shift discards the low word: the high word
 * hi + rnd1 + (lo != 0 | b) shifted by sh, rnd1 = 2^(sh-1) - 1. */
static inline __attribute__((always_inline)) int32_t ek_round_shift_hi(int64_t x, int32_t rnd1, int32_t sh) {
  int32_t hi = (int32_t)(x >> 32);
#if EK_NN_DSP
  /* Thumb-2, three instructions (the compiler's C form took seven): a
   * register-shifted LSRS by sh + 1 leaves bit sh of hi in the carry; ADCS
   * lo + (2^32 - 1) + carry carries exactly when lo != 0 or that bit is set;
   * ADC adds that carry to hi + rnd1. */
  int32_t r; /* also the scratch of the first two (one register fewer) */
  __asm__("lsrs %[r], %[hi], %[s1]\n\tadcs %[r], %[lo], #-1\n\tadc %[r], %[hi], %[k]"
          : [r] "=&r"(r)
          : [hi] "r"(hi), [lo] "r"((uint32_t)x), [s1] "r"(sh + 1), [k] "r"(rnd1)
          : "cc");
  return r >> sh;
#else
  return (hi + rnd1 + (int32_t)(((uint32_t)x != 0) | ((uint32_t)(hi >> sh) & 1))) >> sh;
#endif
}

/* Shifts as the compiler passes them (backends/aot_c/nn.py _kernel_shifts):
 * n, or n + 64 where a * m can be exactly half-way for a shift n > 32, a any
 * accumulator the layer can produce (|a| <= B: a conv's sum |w| * 128 + |offset|)
 * -- its trailing zeros would have to reach n - 1, so the low n - 1 - log2(B)
 * bits of m must be 0 (multipliers like 0.5 or 3/16; real per-channel
 * scales almost never). For every other n > 32 no product is a tie, half up
 * is the half-to-even result, and only the product's high word matters:
 * (hi + 2^(n-33)) >> (n-32), one SMMLA on Cortex-M. Flagged channels
 * (n + 64 > 96) round from the product's words (ek_round_shift_hi), n <= 32
 * with the 64-bit round_shift. */
#define EK_NN_HIGH_WORD(n) ((n) > 32 && (n) < 64)

/* The high-word form, ((a * m) >> 32 + rnd) >> sh (rnd = 2^(sh-1), sh = n - 32).
 * RV64 has the 64-bit product in one register: (a * m + rnd * 2^32) >> n is
 * the same floor (|a * m| < 2^62), one instruction fewer. */
#if EK_NN_RV64
#define EK_RQ_HI(a, m, rnd, sh) ((int32_t)(((int64_t)(a) * (m) + ((int64_t)(rnd) << 32)) >> ((sh) + 32)))
#else
#define EK_RQ_HI(a, m, rnd, sh) (((int32_t)(((int64_t)(a) * (m)) >> 32) + (rnd)) >> (sh))
#endif

#if EK_NN_NEON
/* The high-word requantization of 4 accumulators of one channel
 * (ek_neon_rq2: 2), clamped, not yet narrowed: (a * m) >> 32 is SQDMULH
 * (2 a m >> 32; never saturates, |m| < 2^31) then >> 1 (a floor of a
 * floor), and (hi + 2^(sh-1)) >> sh is SRSHL by -sh. */
#define EK_NEON_RQ(NAME, V, Q)                                                                                 \
  static inline __attribute__((always_inline)) V##_t NAME(V##_t a, int32_t off, int32_t m, int32_t sh, \
                                                                   int32_t zp, int32_t lo, int32_t hi) {     \
    a = vqdmulh##Q##_n_s32(vadd##Q##_s32(a, vdup##Q##_n_s32(off)), m);                                      \
    a = vrshl##Q##_s32(vshr##Q##_n_s32(a, 1), vdup##Q##_n_s32(-sh));                                        \
    a = vadd##Q##_s32(a, vdup##Q##_n_s32(zp));                                                              \
    return vmin##Q##_s32(vmax##Q##_s32(a, vdup##Q##_n_s32(lo)), vdup##Q##_n_s32(hi));                       \
  }
EK_NEON_RQ(ek_neon_rq4, int32x4, q)
EK_NEON_RQ(ek_neon_rq2, int32x2, )

/* A layer's 256-byte output table (ek_nn_table) in 16 registers, and 8
 * int8 values looked up in it: index v + 128 (v ^ 0x80), one TBL for the
 * first 64 entries and a TBX for each next 64 (out-of-range lanes keep). */
typedef struct {
  uint8x16x4_t t[4];
} ek_neon_lut_t;
static inline __attribute__((always_inline)) void ek_neon_lut_load(ek_neon_lut_t *l, const int8_t *tab) {
  const uint8_t *b = (const uint8_t *)tab - 128;
  l->t[0] = vld1q_u8_x4(b);
  l->t[1] = vld1q_u8_x4(b + 64);
  l->t[2] = vld1q_u8_x4(b + 128);
  l->t[3] = vld1q_u8_x4(b + 192);
}
/* ek_neon_lutq: 16 values at once. */
#define EK_NEON_LUT(NAME, N, Q)                                                                              \
  static inline __attribute__((always_inline)) int8x##N##_t NAME(int8x##N##_t v, const ek_neon_lut_t *l) {   \
    uint8x##N##_t i = veor##Q##_u8(vreinterpret##Q##_u8_s8(v), vdup##Q##_n_u8(0x80)), k = vdup##Q##_n_u8(64); \
    uint8x##N##_t r = vqtbl4##Q##_u8(l->t[0], i);                                                            \
    r = vqtbx4##Q##_u8(r, l->t[1], i = vsub##Q##_u8(i, k));                                                 \
    r = vqtbx4##Q##_u8(r, l->t[2], i = vsub##Q##_u8(i, k));                                                 \
    r = vqtbx4##Q##_u8(r, l->t[3], vsub##Q##_u8(i, k));                                                     \
    return vreinterpret##Q##_s8_u8(r);                                                                       \
  }
EK_NEON_LUT(ek_neon_lut, 8, )
EK_NEON_LUT(ek_neon_lutq, 16, q)

/* acc[i * 6 + j] = a[j][i]: the per-pixel vectors transposed to per-channel rows. */
static inline __attribute__((always_inline)) void ek_neon_store_4x6(int32_t *acc, const int32x4_t a[6]) {
  int32x4_t t01l = vzip1q_s32(a[0], a[1]), t01h = vzip2q_s32(a[0], a[1]);
  int32x4_t t23l = vzip1q_s32(a[2], a[3]), t23h = vzip2q_s32(a[2], a[3]);
  int32x4_t t45l = vzip1q_s32(a[4], a[5]), t45h = vzip2q_s32(a[4], a[5]);
#define EK_NEON_ROW(f, x, y) vreinterpretq_s32_s64(f(vreinterpretq_s64_s32(x), vreinterpretq_s64_s32(y)))
  vst1q_s32(acc, EK_NEON_ROW(vzip1q_s64, t01l, t23l));
  vst1_s32(acc + 4, vget_low_s32(t45l));
  vst1q_s32(acc + 6, EK_NEON_ROW(vzip2q_s64, t01l, t23l));
  vst1_s32(acc + 10, vget_high_s32(t45l));
  vst1q_s32(acc + 12, EK_NEON_ROW(vzip1q_s64, t01h, t23h));
  vst1_s32(acc + 16, vget_low_s32(t45h));
  vst1q_s32(acc + 18, EK_NEON_ROW(vzip2q_s64, t01h, t23h));
  vst1_s32(acc + 22, vget_high_s32(t45h));
#undef EK_NEON_ROW
}

/* Whether every channel of the layer takes the high-word requantization
 * (EK_NN_HIGH_WORD): then its conv/matmul tiles requantize in registers
 * (ek_neon_tile_rq); otherwise every tile goes through ek_nn_requant. */
static inline __attribute__((always_inline)) int32_t ek_nn_all_high_word(const int32_t *h) {
  const int32_t *n = h + EK_NN_HDR + 2 * h[EK_NN_OC], *end = n + h[EK_NN_OC];
  int32_t all = 1;
  for (; n < end; ++n) all &= EK_NN_HIGH_WORD(*n);
  return all;
}

/* TBL indices that transpose a tile's int8 results (byte nch * j + i: pixel
 * j, channel i) to channel rows: two channels per register, pixels 0-5 in
 * bytes 0-5 and 8-13 (the rest 0, out of range). */
#define EK_TR(s, i) {(i), (i) + (s), (i) + 2 * (s), (i) + 3 * (s), (i) + 4 * (s), (i) + 5 * (s), 255, 255,             \
                     (i) + 1, (i) + 1 + (s), (i) + 1 + 2 * (s), (i) + 1 + 3 * (s), (i) + 1 + 4 * (s), (i) + 1 + 5 * (s), \
                     255, 255}
static const uint8_t ek_neon_tr8[4][16] = {EK_TR(8, 0), EK_TR(8, 2), EK_TR(8, 4), EK_TR(8, 6)};
static const uint8_t ek_neon_tr4[2][16] = {EK_TR(4, 0), EK_TR(4, 2)};
#undef EK_TR

/* Two channel rows of a transposed tile (ek_neon_tr*) to y and y + ys_c:
 * 8 bytes each where the two past the 6 are the next block's outputs of
 * the row (wide: written again later), else 4 + 2. */
static inline __attribute__((always_inline)) void ek_neon_store_rows2(int8_t *y, int32_t ys_c, int8x16_t r,
                                                                      int32_t wide) {
  uint8x16_t u = vreinterpretq_u8_s8(r);
  if (wide) {
    vst1q_lane_u64((uint64_t *)(void *)y, vreinterpretq_u64_u8(u), 0);
    vst1q_lane_u64((uint64_t *)(void *)(y + ys_c), vreinterpretq_u64_u8(u), 1);
  } else {
    vst1q_lane_u32((uint32_t *)(void *)y, vreinterpretq_u32_u8(u), 0);
    vst1q_lane_u16((uint16_t *)(void *)(y + 4), vreinterpretq_u16_u8(u), 2);
    vst1q_lane_u32((uint32_t *)(void *)(y + ys_c), vreinterpretq_u32_u8(u), 2);
    vst1q_lane_u16((uint16_t *)(void *)(y + ys_c + 4), vreinterpretq_u16_u8(u), 6);
  }
}

/* A conv/matmul tile requantized in registers and stored (the tile kernels
 * *_rq): a[j] (and b[j] when nch is 8) are the int32 sums of channels c to
 * c + 3 (c + 4 to c + 7) of pixel j, the offsets already in (the kernels
 * start from them), every channel of the high-word form. Per lane, as
 * ek_nn_requant_body: SQDMULH by the channel's multiplier, then one SRSHL
 * by -(sh + 1) = 31 - n for ek_neon_rq4's shift right by one and SRSHL by
 * -sh ((x >> 1) + 2^(sh-1)) >> sh = (x + 2^sh) >> (sh + 1)); narrowed with
 * saturation (SQXTN) to int16, the zero point added there (SQADD: a value
 * saturated at +-32767 stays beyond the int8 range), SQXTN to int8 and
 * clamped to the layer's range there (the saturations only move values
 * beyond int8, which the clamp sends to the same bound); the output table
 * 16 at a time. y: the tile's first output (channel c, its first pixel);
 * conv: channel rows of 6 pixels (wide as ek_neon_store_rows2), matmul:
 * pixel rows of nch channels. */
static inline __attribute__((always_inline)) void ek_neon_tile_rq(const int32x4_t *a, const int32x4_t *b,
                                                                  int32_t nch, const int32_t *h, int32_t c,
                                                                  int8_t *y, int32_t wide) {
  const int32_t *q = h + EK_NN_HDR;
  const int8_t *tab = ek_nn_table(h);
  int32_t oc = h[EK_NN_OC], matmul = h[EK_NN_KIND] == EK_NN_MATMUL, j;
  int32_t ys_c = matmul ? 1 : h[EK_NN_P], ys_p = matmul ? oc : 1, nv = nch == 8 ? 3 : 2;
  int32x4_t m0 = vld1q_s32(q + oc + c), s0 = vsubq_s32(vdupq_n_s32(31), vld1q_s32(q + 2 * oc + c));
  int16x8_t zp = vdupq_n_s16((int16_t)h[EK_NN_ZOUT]);
  int8x16_t lo = vdupq_n_s8((int8_t)h[EK_NN_QMIN]), hi = vdupq_n_s8((int8_t)h[EK_NN_QMAX]), v[3];
  int16x4_t r[12];
  for (j = 0; j < 6; ++j) r[j] = vqmovn_s32(vrshlq_s32(vqdmulhq_s32(a[j], m0), s0));
  if (nch == 8) { /* v[i]: pixels 2i and 2i + 1, 8 channels each */
    int32x4_t m1 = vld1q_s32(q + oc + c + 4), s1 = vsubq_s32(vdupq_n_s32(31), vld1q_s32(q + 2 * oc + c + 4));
    for (j = 0; j < 6; ++j) r[6 + j] = vqmovn_s32(vrshlq_s32(vqdmulhq_s32(b[j], m1), s1));
    for (j = 0; j < 3; ++j)
      v[j] = vcombine_s8(vqmovn_s16(vqaddq_s16(vcombine_s16(r[2 * j], r[6 + 2 * j]), zp)),
                         vqmovn_s16(vqaddq_s16(vcombine_s16(r[2 * j + 1], r[7 + 2 * j]), zp)));
  } else { /* v[0]: pixels 0-3, v[1]: 4-5 (twice), 4 channels each */
    int16x8_t p01 = vqaddq_s16(vcombine_s16(r[0], r[1]), zp), p23 = vqaddq_s16(vcombine_s16(r[2], r[3]), zp);
    int16x8_t p45 = vqaddq_s16(vcombine_s16(r[4], r[5]), zp);
    v[0] = vcombine_s8(vqmovn_s16(p01), vqmovn_s16(p23));
    v[1] = vcombine_s8(vqmovn_s16(p45), vqmovn_s16(p45));
  }
  for (j = 0; j < nv; ++j) v[j] = vminq_s8(vmaxq_s8(v[j], lo), hi);
  if (tab) {
    ek_neon_lut_t lut;
    ek_neon_lut_load(&lut, tab);
    for (j = 0; j < nv; ++j) v[j] = ek_neon_lutq(v[j], &lut);
  }
  if (!matmul) {
    if (nch == 8) {
      int8x16x3_t t = {{v[0], v[1], v[2]}};
      for (j = 0; j < 4; ++j) ek_neon_store_rows2(y + 2 * j * ys_c, ys_c, vqtbl3q_s8(t, vld1q_u8(ek_neon_tr8[j])), wide);
    } else {
      int8x16x2_t t = {{v[0], v[1]}};
      for (j = 0; j < 2; ++j) ek_neon_store_rows2(y + 2 * j * ys_c, ys_c, vqtbl2q_s8(t, vld1q_u8(ek_neon_tr4[j])), wide);
    }
  } else if (nch == 8) { /* lanes must be constants */
#define EK_ST8(j) vst1q_lane_u64((uint64_t *)(void *)(y + (j) * ys_p), vreinterpretq_u64_s8(v[(j) >> 1]), (j) & 1)
    EK_ST8(0); EK_ST8(1); EK_ST8(2); EK_ST8(3); EK_ST8(4); EK_ST8(5);
#undef EK_ST8
  } else {
#define EK_ST4(j) vst1q_lane_u32((uint32_t *)(void *)(y + (j) * ys_p), vreinterpretq_u32_s8(v[(j) >> 2]), (j) & 3)
    EK_ST4(0); EK_ST4(1); EK_ST4(2); EK_ST4(3); EK_ST4(4); EK_ST4(5);
#undef EK_ST4
  }
}

/* 8- and 4-channel x 6-pixel tile kernels (columns of T, MAC their MAC
 * loop) that start from the channels' offsets and requantize in registers
 * (ek_neon_tile_rq: the layer's channels all of the high-word form;
 * channels c to c + 7 or c + 3 all real). */
#define EK_NEON_TILE8_RQ(NAME, T, MAC)                                                                        \
  __attribute__((noinline)) static void NAME(const int8_t *w, const T *col, int32_t kp, const int32_t *h,     \
                                             int32_t c, int8_t *y, int32_t wide) {                            \
    int32x4_t a[6], b[6], o0 = vld1q_s32(h + EK_NN_HDR + c), o1 = vld1q_s32(h + EK_NN_HDR + c + 4);          \
    int32_t j;                                                                                                \
    for (j = 0; j < 6; ++j) a[j] = o0, b[j] = o1;                                                             \
    MAC(w, col, kp, a, b);                                                                                    \
    ek_neon_tile_rq(a, b, 8, h, c, y, wide);                                                                  \
  }
#define EK_NEON_TILE4_RQ(NAME, T, MAC)                                                                        \
  __attribute__((noinline)) static void NAME(const int8_t *w, const T *col, int32_t kp, const int32_t *h,     \
                                             int32_t c, int8_t *y, int32_t wide) {                            \
    int32x4_t a[6], o0 = vld1q_s32(h + EK_NN_HDR + c);                                                        \
    int32_t j;                                                                                                \
    for (j = 0; j < 6; ++j) a[j] = o0;                                                                        \
    MAC(w, col, kp, a);                                                                                       \
    ek_neon_tile_rq(a, a, 4, h, c, y, wide);                                                                  \
  }
/* The same tiles from zero, their int32 accumulators stored to acc for
 * ek_nn_requant (acc as ek_neon_store_4x6; the 8-channel tile's second 4
 * channels after the first). noinline: tests disassemble them. */
#define EK_NEON_TILE8(NAME, T, MAC)                                                                           \
  __attribute__((noinline)) static void NAME(const int8_t *w, const T *col, int32_t kp,                       \
                                             int32_t acc[2 * EK_NN_MC * EK_NN_NP]) {                          \
    int32x4_t a[6], b[6];                                                                                     \
    int32_t j;                                                                                                \
    for (j = 0; j < 6; ++j) a[j] = b[j] = vdupq_n_s32(0);                                                     \
    MAC(w, col, kp, a, b);                                                                                    \
    ek_neon_store_4x6(acc, a);                                                                                \
    ek_neon_store_4x6(acc + EK_NN_MC * EK_NN_NP, b);                                                          \
  }
#define EK_NEON_TILE4(NAME, T, MAC)                                                                           \
  __attribute__((noinline)) static void NAME(const int8_t *w, const T *col, int32_t kp,                       \
                                             int32_t acc[EK_NN_MC * EK_NN_NP]) {                              \
    int32x4_t a[6];                                                                                           \
    int32_t j;                                                                                                \
    for (j = 0; j < 6; ++j) a[j] = vdupq_n_s32(0);                                                            \
    MAC(w, col, kp, a);                                                                                       \
    ek_neon_store_4x6(acc, a);                                                                                \
  }
#endif

/* The requantization of core/fixedpoint.py over a block of accumulators acc[c][j]
 * (nc channels from c0, np pixels each), stored to y[c * ys_c + j * ys_p]. */
static inline __attribute__((always_inline)) void ek_nn_requant_body(const int32_t *acc, int8_t *y, int32_t nc,
                                                                    int32_t np, int32_t ys_c, int32_t ys_p,
                                                                    const int32_t *h, int32_t c0, const int8_t *tab,
                                                                    int32_t full) {
  const int32_t *q = h + EK_NN_HDR;
  int32_t oc = h[EK_NN_OC], zp = h[EK_NN_ZOUT], lo = h[EK_NN_QMIN], hi = h[EK_NN_QMAX], c, j;
#if EK_NN_NEON
  ek_neon_lut_t lut;
  if (tab && np == 6 && ys_p == 1) ek_neon_lut_load(&lut, tab);
#endif
  for (c = c0; c < c0 + nc; ++c, y += ys_c) {
    int32_t off = q[c], m = q[oc + c], n = q[2 * oc + c], v;
    int8_t *yc = y;
    if (EK_NN_HIGH_WORD(n)) {
      int32_t rnd = 1 << (n - 33), sh = n - 32;
#if EK_NN_NEON
      if (np == 6) { /* a 4xN block's row: 4 + 2 lanes */
        int8_t r[8];
        int32x4_t v4 = ek_neon_rq4(vld1q_s32(acc), off, m, sh, zp, lo, hi);
        int32x2_t v2 = ek_neon_rq2(vld1_s32(acc + 4), off, m, sh, zp, lo, hi);
        int8x8_t v8 = vmovn_s16(vcombine_s16(vmovn_s32(v4), vmovn_s32(vcombine_s32(v2, v2))));
        acc += 6;
        if (ys_p == 1) { /* a conv's 6 consecutive outputs: two stores */
          uint64_t u;
          if (tab) v8 = ek_neon_lut(v8, &lut);
          u = vget_lane_u64(vreinterpret_u64_s8(v8), 0);
          uint16_t u45 = (uint16_t)(u >> 32);
          __builtin_memcpy(yc, &u, 4); /* little-endian: bytes 0-3 */
          __builtin_memcpy(yc + 4, &u45, 2);
          continue;
        }
        vst1_s8(r, v8);
        for (j = 0; j < 6; ++j, yc += ys_p) EK_NN_STORE(yc, r[j], tab);
        continue;
      }
#endif
      for (j = 0; j < np; ++j, yc += ys_p) {
        int32_t a = (int32_t)((uint32_t)*acc++ + (uint32_t)off);
        v = EK_RQ_HI(a, m, rnd, sh) + zp;
#if EK_NN_DSP
        if (full) { /* the whole int8 range: one SSAT instead of two compare-and-moves */
          v = __builtin_arm_ssat(v, 8);
          EK_NN_STORE(yc, v, tab);
          continue;
        }
#endif
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        EK_NN_STORE(yc, v, tab);
      }
    } else if (n > 96) {
      int32_t rnd1 = (1 << (n - 97)) - 1, sh = n - 96;
      for (j = 0; j < np; ++j, yc += ys_p) {
        v = ek_round_shift_hi((int64_t)(int32_t)((uint32_t)*acc++ + (uint32_t)off) * m, rnd1, sh) + zp;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        EK_NN_STORE(yc, v, tab);
      }
    } else {
      for (j = 0; j < np; ++j, yc += ys_p) {
        /* a multiplier above 0.5: the result may leave int32; any value
         * beyond +-2^30 clamps to the same int8 once the zero point is added. */
        int64_t p = (int64_t)(int32_t)((uint32_t)*acc++ + (uint32_t)off) * m;
        p = ek_round_shift64(p, n);
        v = (int32_t)(p > (1 << 30) ? (1 << 30) : p < -(1 << 30) ? -(1 << 30) : p) + zp;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        EK_NN_STORE(yc, v, tab);
      }
    }
  }
}

/* noinline: on its own the channel's constants stay in registers. */
__attribute__((noinline)) static void ek_nn_requant(const int32_t *acc, int8_t *y, int32_t nc, int32_t np,
                                                    int32_t ys_c, int32_t ys_p, const int32_t *h, int32_t c0) {
  const int8_t *tab = ek_nn_table(h);
  int32_t full = EK_NN_DSP && h[EK_NN_QMIN] == -128 && h[EK_NN_QMAX] == 127;
  if (tab)
    ek_nn_requant_body(acc, y, nc, np, ys_c, ys_p, h, c0, tab, 0);
  else if (full)
    ek_nn_requant_body(acc, y, nc, np, ys_c, ys_p, h, c0, (const int8_t *)0, 1);
  else
    ek_nn_requant_body(acc, y, nc, np, ys_c, ys_p, h, c0, (const int8_t *)0, 0);
}

/* One channel's accumulators, n of them, to consecutive outputs (depthwise
 * rows): the same arithmetic with fewer live values than ek_nn_requant. */
static inline __attribute__((always_inline)) void ek_nn_requant_row_body(const int32_t *acc, int8_t *y, int32_t n,
                                                                        const int32_t *h, int32_t c,
                                                                        const int8_t *tab) {
  const int32_t *q = h + EK_NN_HDR;
  int32_t oc = h[EK_NN_OC], m = q[oc + c], sh = q[2 * oc + c];
  int32_t off = q[c], zp = h[EK_NN_ZOUT], lo = h[EK_NN_QMIN], hi = h[EK_NN_QMAX], rnd = 1 << (sh - 33);
  const int32_t *end = acc + n;
  sh -= 32;
#if EK_NN_NEON
  ek_neon_lut_t lut;
  if (tab && n >= 8) ek_neon_lut_load(&lut, tab);
  for (; acc + 8 <= end; acc += 8, y += 8) {
    int32x4_t v0 = ek_neon_rq4(vld1q_s32(acc), off, m, sh, zp, lo, hi);
    int32x4_t v1 = ek_neon_rq4(vld1q_s32(acc + 4), off, m, sh, zp, lo, hi);
    int8x8_t v8 = vmovn_s16(vcombine_s16(vmovn_s32(v0), vmovn_s32(v1)));
    vst1_s8(y, tab ? ek_neon_lut(v8, &lut) : v8);
  }
  for (; acc + 4 <= end; acc += 4, y += 4) {
    int8_t r[8];
    int32x4_t v = ek_neon_rq4(vld1q_s32(acc), off, m, sh, zp, lo, hi);
    vst1_s8(r, vmovn_s16(vcombine_s16(vmovn_s32(v), vmovn_s32(v))));
    EK_NN_STORE(y, r[0], tab); EK_NN_STORE(y + 1, r[1], tab); EK_NN_STORE(y + 2, r[2], tab); EK_NN_STORE(y + 3, r[3], tab);
  }
#endif
#if EK_NN_DSP
  if (lo == -128 && hi == 127) { /* the full int8 range: one SSAT */
    while (acc < end) {
      int32_t v = EK_RQ_HI((int32_t)((uint32_t)*acc++ + (uint32_t)off), m, rnd, sh) + zp;
      v = __builtin_arm_ssat(v, 8);
      EK_NN_STORE(y, v, tab);
      ++y;
    }
    return;
  }
#endif
  while (acc < end) {
    int32_t v = EK_RQ_HI((int32_t)((uint32_t)*acc++ + (uint32_t)off), m, rnd, sh) + zp;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    EK_NN_STORE(y, v, tab);
    ++y;
  }
}

__attribute__((noinline)) static void ek_nn_requant_row(const int32_t *acc, int8_t *y, int32_t n, const int32_t *h,
                                                        int32_t c) {
  const int8_t *tab = ek_nn_table(h);
  if (!EK_NN_HIGH_WORD(h[EK_NN_HDR + 2 * h[EK_NN_OC] + c]))
    ek_nn_requant(acc, y, 1, n, 0, 1, h, c);
  else if (tab)
    ek_nn_requant_row_body(acc, y, n, h, c, tab);
  else
    ek_nn_requant_row_body(acc, y, n, h, c, (const int8_t *)0);
}

#if EK_NN_DSP || EK_NN_NEON
typedef int16_t ek_col_t;
#else
typedef ek_mac_t ek_col_t;
#endif

/* Where the gathered columns go: element k of a column. The DSP kernels read
 * two pixels' columns interleaved per group of four k (the table already
 * orders each group (a0, a2, a1, a3)); the generic ones read [k][cs] (cs:
 * EK_NN_NP pixels of a block, or 1 for a lone pixel). */
#if EK_NN_DSP
#define EK_DST(col, k, cs) (col)[(((k) & ~3) << 1) | ((k) & 3)]
#else
#define EK_DST(col, k, cs) (col)[(k) * (cs)]
#endif

/* Gathers the im2col column of output pixel p through the parameter
 * block's table (input offset of each k relative to the window's corner,
 * and its kernel row/column), so the copy is one load and one store per
 * element. The padding is folded in: a window that leaves the input reads
 * the input's zero point there. One copy per column element type. */
#define EK_IM2COL(NAME, T)                                                                                  \
  static void NAME(const int8_t *x, const int32_t *h, int32_t p, T *col, int32_t cs) {                      \
    int32_t n = h[EK_NN_KP], k;                                                                             \
    const int32_t *off = h + EK_NN_HDR + 3 * h[EK_NN_OC], *rs = off + n;                                    \
    (void)cs;                                                                                               \
    if (h[EK_NN_KIND] == EK_NN_MATMUL) {                                                                    \
      const int8_t *row = x + p * h[EK_NN_K];                                                               \
      for (k = 0; k < n; ++k) EK_DST(col, k, cs) = (T)row[off[k]];                                          \
    } else {                                                                                                \
      int32_t H = h[EK_NN_H], W = h[EK_NN_W], kh = h[EK_NN_KH], kw = h[EK_NN_KW];                           \
      int32_t oy = p / h[EK_NN_OW], ox = p - oy * h[EK_NN_OW];                                              \
      int32_t y0 = oy * h[EK_NN_SH] - h[EK_NN_PT], x0 = ox * h[EK_NN_SW] - h[EK_NN_PL];                     \
      if (y0 >= 0 && y0 + kh <= H && x0 >= 0 && x0 + kw <= W) { /* interior: no checks */                   \
        const int8_t *base = x + (y0 * W + x0);                                                             \
        for (k = 0; k < n; ++k) EK_DST(col, k, cs) = (T)base[off[k]];                                       \
      } else {                                                                                              \
        T pad = (T)h[EK_NN_PADV];                                                                           \
        int32_t corner = y0 * W + x0;                                                                       \
        for (k = 0; k < n; ++k) {                                                                           \
          uint32_t iy = (uint32_t)(y0 + (rs[k] & 0xFFFF)), ix = (uint32_t)(x0 + (rs[k] >> 16));             \
          EK_DST(col, k, cs) = (iy < (uint32_t)H && ix < (uint32_t)W) ? (T)x[corner + off[k]] : pad;        \
        }                                                                                                   \
      }                                                                                                     \
    }                                                                                                       \
  }
#if !EK_NN_RV64 && !EK_NN_SDOT
EK_IM2COL(ek_im2col, ek_col_t)
#endif
#if !EK_NN_DSP && !EK_NN_SDOT
EK_IM2COL(ek_im2col_s8, int8_t)
#endif
#if EK_NN_SDOT
/* EK_IM2COL for the SDOT columns [KP/4][cs][4], four k (one lane) per step:
 * the destination moves by one pointer add per group instead of EK_DST's
 * index arithmetic per element (it took half again the gather's instructions). */
static void ek_im2col_s8(const int8_t *x, const int32_t *h, int32_t p, int8_t *col, int32_t cs) {
  int32_t n = h[EK_NN_KP], k, step = 4 * cs;
  const int32_t *off = h + EK_NN_HDR + 3 * h[EK_NN_OC], *rs = off + n;
  const int8_t *base;
  if (h[EK_NN_KIND] == EK_NN_MATMUL) {
    base = x + p * h[EK_NN_K];
  } else {
    int32_t H = h[EK_NN_H], W = h[EK_NN_W], kh = h[EK_NN_KH], kw = h[EK_NN_KW];
    int32_t oy = p / h[EK_NN_OW], ox = p - oy * h[EK_NN_OW];
    int32_t y0 = oy * h[EK_NN_SH] - h[EK_NN_PT], x0 = ox * h[EK_NN_SW] - h[EK_NN_PL];
    base = x + (y0 * W + x0);
    if (!(y0 >= 0 && y0 + kh <= H && x0 >= 0 && x0 + kw <= W)) { /* the window leaves the input: the pad value there */
      int8_t pad = (int8_t)h[EK_NN_PADV];
      for (k = 0; k < n; ++k) {
        uint32_t iy = (uint32_t)(y0 + (rs[k] & 0xFFFF)), ix = (uint32_t)(x0 + (rs[k] >> 16));
        col[(k >> 2) * step + (k & 3)] = (iy < (uint32_t)H && ix < (uint32_t)W) ? base[off[k]] : pad;
      }
      return;
    }
  }
  for (k = 0; k < n; k += 4, off += 4, col += step) {
    col[0] = base[off[0]];
    col[1] = base[off[1]];
    col[2] = base[off[2]];
    col[3] = base[off[3]];
  }
}
#endif

#if EK_NN_DSP
/* 2 channels x 2 pixels, K padded to a multiple of 4. w: both channels'
 * words interleaved per group of four k; col: both pixels' reordered int16
 * columns interleaved the same way. noinline: tests disassemble it. */
__attribute__((noinline)) static void ek_nn_dot_2x2(const int8_t *w, const int16_t *col, int32_t kp, int32_t acc[4]) {
  int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
  const int8_t *end = w + 2 * kp;
  while (w < end) {
    uint64_t ww = ek_ld64(w), x0 = ek_ld64(col), x1 = ek_ld64(col + 4);
    uint32_t w0 = (uint32_t)ww, w1 = (uint32_t)(ww >> 32);
    uint32_t x0a = (uint32_t)x0, x0b = (uint32_t)(x0 >> 32), x1a = (uint32_t)x1, x1b = (uint32_t)(x1 >> 32);
    int32_t w0e = __builtin_arm_sxtb16(w0), w0o = __builtin_arm_sxtb16((w0 >> 8) | (w0 << 24));
    int32_t w1e = __builtin_arm_sxtb16(w1), w1o = __builtin_arm_sxtb16((w1 >> 8) | (w1 << 24));
    a00 = __builtin_arm_smlad(w0e, x0a, a00);
    a00 = __builtin_arm_smlad(w0o, x0b, a00);
    a01 = __builtin_arm_smlad(w0e, x1a, a01);
    a01 = __builtin_arm_smlad(w0o, x1b, a01);
    a10 = __builtin_arm_smlad(w1e, x0a, a10);
    a10 = __builtin_arm_smlad(w1o, x0b, a10);
    a11 = __builtin_arm_smlad(w1e, x1a, a11);
    a11 = __builtin_arm_smlad(w1o, x1b, a11);
    w += 8;
    col += 8;
  }
  acc[0] = a00; acc[1] = a01; acc[2] = a10; acc[3] = a11;
}

/* 2 channels x 1 pixel (pixel tail, fully connected): the first pixel of
 * an interleaved pair buffer. */
__attribute__((noinline)) static void ek_nn_dot_2x1(const int8_t *w, const int16_t *col, int32_t kp, int32_t acc[2]) {
  int32_t a0 = 0, a1 = 0;
  const int8_t *end = w + 2 * kp;
  while (w < end) {
    uint64_t ww = ek_ld64(w), xx = ek_ld64(col);
    uint32_t w0 = (uint32_t)ww, w1 = (uint32_t)(ww >> 32), xa = (uint32_t)xx, xb = (uint32_t)(xx >> 32);
    a0 = __builtin_arm_smlad(__builtin_arm_sxtb16(w0), xa, a0);
    a0 = __builtin_arm_smlad(__builtin_arm_sxtb16((w0 >> 8) | (w0 << 24)), xb, a0);
    a1 = __builtin_arm_smlad(__builtin_arm_sxtb16(w1), xa, a1);
    a1 = __builtin_arm_smlad(__builtin_arm_sxtb16((w1 >> 8) | (w1 << 24)), xb, a1);
    w += 8;
    col += 8;
  }
  acc[0] = a0; acc[1] = a1;
}

/* conv (groups 1) and matmul: weights [ceil(OC/2)][KP/4][2][4]. Scratch:
 * 2 * KP int16 (two pixels' columns, interleaved per group of four), then
 * the accumulators [ceil(OC/2) * 2][2] int32. */
static void ek_nn_gemm(const int8_t *x, const int8_t *w, const int32_t *h, int8_t *y, void *scratch) {
  int32_t oc = h[EK_NN_OC], kp = h[EK_NN_KP], P = h[EK_NN_P], p, c;
  int32_t ys_c = h[EK_NN_KIND] == EK_NN_MATMUL ? 1 : P, ys_p = h[EK_NN_KIND] == EK_NN_MATMUL ? oc : 1;
  int16_t *pair = (int16_t *)scratch;
  int32_t *acc = (int32_t *)(pair + 2 * kp);
  for (p = 0; p + 1 < P; p += 2) {
    ek_im2col(x, h, p, pair, 0);
    ek_im2col(x, h, p + 1, pair + 4, 0);
    for (c = 0; c < oc; c += 2) ek_nn_dot_2x2(w + c * kp, pair, kp, acc + 2 * c);
    ek_nn_requant(acc, y + p * ys_p, oc, 2, ys_c, ys_p, h, 0);
  }
  if (p < P) {
    ek_im2col(x, h, p, pair, 0);
    for (c = 0; c < oc; c += 2) ek_nn_dot_2x1(w + c * kp, pair, kp, acc + c);
    ek_nn_requant(acc, y + p * ys_p, oc, 1, ys_c, ys_p, h, 0);
  }
}
#elif EK_NN_RVV
/* RVV (riscv64 with V, VLEN >= 256: bpi-f3's SpacemiT X60), hand-written.
 * The int8 weights of EK_RVV_OCB = 32 output channels of one k are one
 * vector (packed [ceil(OC/32)][K][32] at compile time, backends/aot_c/
 * nn_rv64.py pack_rvv; channels past OC are 0), sign-extended to int16
 * (vsext.vf2, e16m2), and each of EK_NN_NP pixels' activation (a scalar
 * int8) is multiplied into that pixel's 32 int32 lanes by one vwmacc.vx:
 * int16 x int16 -> int32, exact, with no int16 accumulation (an int8 x int8
 * vwmacc into int16 lanes overflows at two products of -128 * -128), so any
 * K is exact and the int32 sums wrap as the integer lowering's. Per k: one
 * weight load, one widening, 6 `lb` + 6 `vwmacc` for 192 MACs.
 * The requantization runs in the same 32-bit lanes, one pixel's channels
 * at a time: vmulh gives the product's high word and vssra (vxrm = round to
 * nearest up) its rounded shift by n - 32, the high-word form of
 * ek_nn_requant_body (exact for 32 < n < 64: (hi + 2^(sh-1)) >> sh); then
 * the zero point, the clamp, two narrowings, the layer's table (an indexed
 * load) and one store (strided by P for a conv's NCHW output). A layer with
 * a channel outside that form stores its int32 sums for ek_nn_requant.
 * Columns are int8 ([K][EK_NN_NP], as riscv64's); 1x1 stride-1 unpadded
 * convs read the input in place (k stride H * W) and matmul tails their row. */
#define EK_RVV_OCB 32

/* One pixel's vl channels from their int32 sums a to y (channel stride ys_c). */
static inline __attribute__((always_inline)) void ek_rvv_rq_store(vint32m4_t a, vint32m4_t off, vint32m4_t m,
                                                                 vuint32m4_t sh, int32_t zp, int32_t lo, int32_t hi,
                                                                 const int8_t *tab, int8_t *y, int32_t ys_c,
                                                                 size_t vl) {
  vint32m4_t v = __riscv_vmulh_vv_i32m4(__riscv_vadd_vv_i32m4(a, off, vl), m, vl);
  v = __riscv_vadd_vx_i32m4(__riscv_vssra_vv_i32m4(v, sh, __RISCV_VXRM_RNU, vl), zp, vl);
  v = __riscv_vmin_vx_i32m4(__riscv_vmax_vx_i32m4(v, lo, vl), hi, vl);
  vint8m1_t b = __riscv_vncvt_x_x_w_i8m1(__riscv_vncvt_x_x_w_i16m2(v, vl), vl);
  if (tab) /* tab[v] = (tab - 128)[v + 128], the index an unsigned byte */
    b = __riscv_vluxei8_v_i8m1(tab - 128, __riscv_vreinterpret_v_i8m1_u8m1(__riscv_vxor_vx_i8m1(b, -128, vl)), vl);
  if (ys_c == 1)
    __riscv_vse8_v_i8m1(y, b, vl);
  else
    __riscv_vsse8_v_i8m1(y, ys_c, b, vl);
}

#define EK_RVV_MAC(j) if (np > j) a##j = __riscv_vwmacc_vx_i32m4(a##j, (int16_t)c[j], wv, vl)
#define EK_RVV_ACC(j) if (np > j) __riscv_vsse32_v_i32m4(acc + j, 4 * np, a##j, vl)
#define EK_RVV_OUT(j) if (np > j) ek_rvv_rq_store(a##j, off, m, sh, zp, lo, hi, tab, y + j * ys_p, ys_c, vl)

/* vl (<= 32) channels from c0 x np pixels (EK_NN_NP or 1): pixel j's element k at
 * col[k * rs + j]; w: the block's [K][32] weights. Requantized to y, or, with acc,
 * the int32 sums stored to acc[c][j] (ek_nn_requant's order). */
static inline __attribute__((always_inline)) void ek_rvv_dot_body(const int8_t *w, int32_t K, const int8_t *col,
                                                                 int32_t rs, int32_t np, size_t vl, const int32_t *h,
                                                                 int32_t c0, int8_t *y, int32_t ys_c, int32_t ys_p,
                                                                 int32_t *acc, const int8_t *tab) {
  vint32m4_t a0 = __riscv_vmv_v_x_i32m4(0, vl), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  const int8_t *c = col, *end = w + K * EK_RVV_OCB;
#pragma clang loop unroll_count(2)
  for (; w < end; w += EK_RVV_OCB, c += rs) {
    vint16m2_t wv = __riscv_vsext_vf2_i16m2(__riscv_vle8_v_i8m1(w, vl), vl);
    EK_RVV_MAC(0); EK_RVV_MAC(1); EK_RVV_MAC(2); EK_RVV_MAC(3); EK_RVV_MAC(4); EK_RVV_MAC(5);
  }
  if (acc) {
    EK_RVV_ACC(0); EK_RVV_ACC(1); EK_RVV_ACC(2); EK_RVV_ACC(3); EK_RVV_ACC(4); EK_RVV_ACC(5);
    return;
  }
  const int32_t *q = h + EK_NN_HDR;
  int32_t oc = h[EK_NN_OC], zp = h[EK_NN_ZOUT], lo = h[EK_NN_QMIN], hi = h[EK_NN_QMAX];
  vint32m4_t off = __riscv_vle32_v_i32m4(q + c0, vl), m = __riscv_vle32_v_i32m4(q + oc + c0, vl);
  vuint32m4_t sh = __riscv_vsub_vx_u32m4(__riscv_vle32_v_u32m4((const uint32_t *)(q + 2 * oc + c0), vl), 32, vl);
  EK_RVV_OUT(0); EK_RVV_OUT(1); EK_RVV_OUT(2); EK_RVV_OUT(3); EK_RVV_OUT(4); EK_RVV_OUT(5);
}

/* noinline: tests disassemble them (vector widening MACs). */
#define EK_RVV_DOT(NAME, NP)                                                                                   \
  __attribute__((noinline)) static void NAME(const int8_t *w, int32_t K, const int8_t *col, int32_t rs,        \
                                             size_t vl, const int32_t *h, int32_t c0, int8_t *y, int32_t ys_c, \
                                             int32_t ys_p, int32_t *acc) {                                     \
    const int8_t *tab = ek_nn_table(h);                                                                        \
    if (tab)                                                                                                   \
      ek_rvv_dot_body(w, K, col, rs, NP, vl, h, c0, y, ys_c, ys_p, acc, tab);                                  \
    else                                                                                                       \
      ek_rvv_dot_body(w, K, col, rs, NP, vl, h, c0, y, ys_c, ys_p, acc, (const int8_t *)0);                    \
  }
EK_RVV_DOT(ek_nn_rvv_dot_32xn, EK_NN_NP)
EK_RVV_DOT(ek_nn_rvv_dot_32x1, 1)

/* ek_im2col_s8 for a matmul row or a conv window inside the input (no
 * padding): up to 32 elements per indexed load (vluxei32) through the
 * gather table's offsets, stored with the columns' stride cs; the scalar
 * gather for windows that leave the input. */
static void ek_rvv_im2col_s8(const int8_t *x, const int32_t *h, int32_t p, int8_t *col, int32_t cs) {
  int32_t n = h[EK_NN_KP], k;
  const uint32_t *off = (const uint32_t *)(h + EK_NN_HDR + 3 * h[EK_NN_OC]);
  const int8_t *base = x + p * h[EK_NN_K];
  if (h[EK_NN_KIND] != EK_NN_MATMUL) {
    int32_t H = h[EK_NN_H], W = h[EK_NN_W], oy = p / h[EK_NN_OW], ox = p - oy * h[EK_NN_OW];
    int32_t y0 = oy * h[EK_NN_SH] - h[EK_NN_PT], x0 = ox * h[EK_NN_SW] - h[EK_NN_PL];
    if (!(y0 >= 0 && y0 + h[EK_NN_KH] <= H && x0 >= 0 && x0 + h[EK_NN_KW] <= W)) {
      ek_im2col_s8(x, h, p, col, cs);
      return;
    }
    base = x + (y0 * W + x0);
  }
  for (k = 0; k < n;) {
    size_t vl = __riscv_vsetvl_e32m4((size_t)(n - k));
    vint8m1_t v = __riscv_vluxei32_v_i8m1(base, __riscv_vle32_v_u32m4(off + k, vl), vl);
    __riscv_vsse8_v_i8m1(col + k * cs, cs, v, vl);
    k += (int32_t)vl;
  }
}

/* conv (groups 1) and matmul. Scratch: K * EK_NN_NP int8 columns (rounded
 * to a word), then EK_NN_NP * 32 int32 sums (layers ek_nn_requant takes). */
static void ek_nn_gemm(const int8_t *x, const int8_t *w, const int32_t *h, int8_t *y, void *scratch) {
  int32_t oc = h[EK_NN_OC], K = h[EK_NN_K], P = h[EK_NN_P], p, c, j;
  int32_t matmul = h[EK_NN_KIND] == EK_NN_MATMUL, ys_c = matmul ? 1 : P, ys_p = matmul ? oc : 1;
  int8_t *col = (int8_t *)scratch;
  int32_t *acc = (int32_t *)(void *)(col + ((K * EK_NN_NP + 3) & ~3)), *sums = acc;
  /* 1x1, stride 1, no padding: pixel p's element k is x[k * H * W + p] */
  int32_t pointwise = !matmul && h[EK_NN_KH] == 1 && h[EK_NN_KW] == 1 && h[EK_NN_SH] == 1 && h[EK_NN_SW] == 1 &&
                      h[EK_NN_PT] == 0 && h[EK_NN_PL] == 0;
  int32_t hw = h[EK_NN_H] * h[EK_NN_W], vector_rq = 1;
  for (c = 0; c < oc; ++c) vector_rq &= EK_NN_HIGH_WORD(h[EK_NN_HDR + 2 * oc + c]);
  if (vector_rq) sums = (int32_t *)0;
  for (p = 0; p < P;) {
    int32_t np = P - p >= EK_NN_NP ? EK_NN_NP : 1, rs = np;
    const int8_t *src = col;
    if (pointwise) {
      src = x + p;
      rs = hw;
    } else if (matmul && np == 1) {
      src = x + p * K;
    } else {
      for (j = 0; j < np; ++j) ek_rvv_im2col_s8(x, h, p + j, col + j, np);
    }
    for (c = 0; c < oc; c += EK_RVV_OCB) {
      size_t vl = __riscv_vsetvl_e32m4((size_t)(oc - c < EK_RVV_OCB ? oc - c : EK_RVV_OCB)); /* VLEN > 256: still 32 */
      int8_t *yc = y + c * ys_c + p * ys_p;
      if (np == EK_NN_NP)
        ek_nn_rvv_dot_32xn(w + c * K, K, src, rs, vl, h, c, yc, ys_c, ys_p, sums);
      else
        ek_nn_rvv_dot_32x1(w + c * K, K, src, rs, vl, h, c, yc, ys_c, ys_p, sums);
      if (sums) ek_nn_requant(sums, yc, (int32_t)vl, np, ys_c, ys_p, h, c);
    }
    p += np;
  }
}
#elif EK_NN_RV64
/* riscv64 (RV64GC, no V needed: the Linux boards, e.g. visionfive2's SiFive
 * U74), hand-written: three MACs per 64-bit `mul` + `add`. Three output
 * channels' int8 weights of one k are packed at compile time into one
 * int64, W = w0 + w1 * 2^21 + w2 * 2^42 (backends/aot_c/nn.py), so
 * x * W = x w0 + x w1 2^21 + x w2 2^42 and a sum of such products holds
 * the three channels' sums S0, S1, S2 in 21-bit lanes, exactly, while each
 * |S| < 2^20: the compiler bounds 128 * sum|w| over every run of L
 * consecutive k (L >= 63 for any int8 weights, 2^20 / 2^14) and passes L
 * after the gather table; the kernel unpacks the lanes into int32 every L
 * k (ek_rv_unpack). A 6-channel x 6-pixel block keeps 12 packed sums in
 * registers: per k 2 weight loads, 6 column loads (`lb`), 12 `mul` + 12
 * `add` for 36 MACs, where the float kernel took 38 instructions for 24
 * (an int -> float conversion of each weight, one `fmadd.s` per MAC).
 * Columns are int8 ([K][EK_NN_NP]); 1x1 stride-1 unpadded convs read the
 * input in place (k stride H * W) and matmuls their row (no gather). */
/* The three lane sums of a packed accumulator, stored to (first chunk) or
 * added to acc[0], acc[s], acc[2 s] (wrapping, as the int32 lowering). */
static inline __attribute__((always_inline)) void ek_rv_unpack(int64_t a, int32_t *acc, int32_t s, int32_t add) {
  int64_t s0 = (int64_t)((uint64_t)a << (64 - EK_RV_LANE)) >> (64 - EK_RV_LANE), t = (a - s0) >> EK_RV_LANE;
  int64_t s1 = (int64_t)((uint64_t)t << (64 - EK_RV_LANE)) >> (64 - EK_RV_LANE), s2 = (t - s1) >> EK_RV_LANE;
  acc[0] = (int32_t)((add ? (uint32_t)acc[0] : 0u) + (uint32_t)s0);
  acc[s] = (int32_t)((add ? (uint32_t)acc[s] : 0u) + (uint32_t)s1);
  acc[2 * s] = (int32_t)((add ? (uint32_t)acc[2 * s] : 0u) + (uint32_t)s2);
}

/* a[i][j] += the packed products of k0 <= k < k1: g weight words per k
 * (w: [K][g]), pixel j's element k at col[k * rs + j]. */
static inline __attribute__((always_inline)) void ek_rv_mac(const int64_t *w, const int8_t *col, int32_t rs, int32_t k0,
                                                            int32_t k1, int32_t g, int32_t np,
                                                            int64_t a[2][EK_NN_NP]) {
  const int64_t *wk = w + k0 * g, *end = w + k1 * g;
  const int8_t *c = col + k0 * rs;
  int32_t i, j;
  for (; wk < end; wk += g, c += rs) {
    int64_t x[EK_NN_NP];
    for (j = 0; j < np; ++j) x[j] = c[j];
    for (i = 0; i < g; ++i)
      for (j = 0; j < np; ++j) a[i][j] += x[j] * wk[i];
  }
}

/* acc[c * np + j] (c < 3 g, j < np) = the dot products of g packed weight
 * words per k (w: [K][g]) with np pixels' columns: pixel j's element k at
 * col[k * rs + j]. */
static inline __attribute__((always_inline)) void ek_rv_dot_body(const int64_t *w, int32_t K, const int8_t *col,
                                                                 int32_t rs, int32_t L, int32_t g, int32_t np,
                                                                 int32_t *acc) {
  int32_t k0, i, j;
  for (k0 = 0; k0 < K; k0 += L) {
    int64_t a[2][EK_NN_NP] = {{0}};
    ek_rv_mac(w, col, rs, k0, K - k0 < L ? K : k0 + L, g, np, a);
    for (i = 0; i < g; ++i)
      for (j = 0; j < np; ++j)
        if (k0)
          ek_rv_unpack(a[i][j], acc + 3 * i * np + j, np, 1);
        else
          ek_rv_unpack(a[i][j], acc + 3 * i * np + j, np, 0);
  }
}

/* noinline: tests disassemble them (no float MACs). */
__attribute__((noinline)) static void ek_nn_dot_6xn(const int64_t *w, int32_t K, const int8_t *col, int32_t rs,
                                                    int32_t L, int32_t *acc) {
  ek_rv_dot_body(w, K, col, rs, L, 2, EK_NN_NP, acc);
}
__attribute__((noinline)) static void ek_nn_dot_3xn(const int64_t *w, int32_t K, const int8_t *col, int32_t rs,
                                                    int32_t L, int32_t *acc) {
  ek_rv_dot_body(w, K, col, rs, L, 1, EK_NN_NP, acc);
}
__attribute__((noinline)) static void ek_nn_dot_6x1(const int64_t *w, int32_t K, const int8_t *col, int32_t rs,
                                                    int32_t L, int32_t *acc) {
  ek_rv_dot_body(w, K, col, rs, L, 2, 1, acc);
}
__attribute__((noinline)) static void ek_nn_dot_3x1(const int64_t *w, int32_t K, const int8_t *col, int32_t rs,
                                                    int32_t L, int32_t *acc) {
  ek_rv_dot_body(w, K, col, rs, L, 1, 1, acc);
}

/* A block's nc channel rows of EK_NN_NP consecutive outputs (a conv's),
 * requantized with the 6 outputs of a row unrolled: the high-word form of
 * ek_nn_requant_body as one multiply, add, shift (EK_RQ_HI); other channels
 * go through ek_nn_requant. tab: the table or a constant NULL. */
static inline __attribute__((always_inline)) void ek_rv_requant6_body(const int32_t *acc, int8_t *y, int32_t nc,
                                                                     int32_t ys_c, const int32_t *h, int32_t c0,
                                                                     const int8_t *tab) {
  const int32_t *q = h + EK_NN_HDR;
  int32_t oc = h[EK_NN_OC], zp = h[EK_NN_ZOUT], lo = h[EK_NN_QMIN], hi = h[EK_NN_QMAX], c, j;
  for (c = c0; c < c0 + nc; ++c, y += ys_c, acc += EK_NN_NP) {
    int32_t off = q[c], m = q[oc + c], n = q[2 * oc + c];
    if (!EK_NN_HIGH_WORD(n)) {
      ek_nn_requant(acc, y, 1, EK_NN_NP, 0, 1, h, c);
      continue;
    }
    int64_t r = (int64_t)1 << (n - 1);
    for (j = 0; j < EK_NN_NP; ++j) {
      int32_t v = (int32_t)(((int64_t)(int32_t)((uint32_t)acc[j] + (uint32_t)off) * m + r) >> n) + zp;
      v = v < lo ? lo : v;
      v = v > hi ? hi : v;
      EK_NN_STORE(y + j, v, tab);
    }
  }
}

__attribute__((noinline)) static void ek_nn_rv_requant6(const int32_t *acc, int8_t *y, int32_t nc, int32_t ys_c,
                                                     const int32_t *h, int32_t c0) {
  const int8_t *tab = ek_nn_table(h);
  if (tab)
    ek_rv_requant6_body(acc, y, nc, ys_c, h, c0, tab);
  else
    ek_rv_requant6_body(acc, y, nc, ys_c, h, c0, (const int8_t *)0);
}

/* Lane l of a packed sum whose three lanes are within +-2^20, each lane
 * on its own (the channels are requantized one after another):
 * a + 2^20 makes lane 0 non-negative, so lane 1 starts at bit 21, and
 * + 2^41 does the same for lane 2 at bit 42. */
static inline __attribute__((always_inline)) int32_t ek_rv_lane(int64_t a, int32_t l) {
  if (l == 0) return (int32_t)((int64_t)((uint64_t)a << 43) >> 43);
  if (l == 1) return (int32_t)((int64_t)((uint64_t)((a + ((int64_t)1 << 20)) >> 21) << 43) >> 43);
  return (int32_t)((a + ((int64_t)1 << 20) + ((int64_t)1 << 41)) >> 42);
}

/* A block whose K fits one run (K <= L) and whose channels all take the
 * high-word form: the 6 x 6 (or 3 x 6) packed sums requantized straight
 * from registers, channel by channel (no int32 accumulators in memory, no
 * second call). tab: the layer's table or a constant NULL. */
static inline __attribute__((always_inline)) void ek_rv_dot_rq_body(const int64_t *w, int32_t K, const int8_t *col,
                                                                    int32_t rs, int32_t g, int32_t nc,
                                                                    const int32_t *h, int32_t c0, int8_t *y,
                                                                    int32_t ys_c, const int8_t *tab) {
  const int32_t *q = h + EK_NN_HDR;
  int32_t oc = h[EK_NN_OC], zp = h[EK_NN_ZOUT], lo = h[EK_NN_QMIN], hi = h[EK_NN_QMAX], i, l, j;
  int64_t a[2][EK_NN_NP] = {{0}};
  ek_rv_mac(w, col, rs, 0, K, g, EK_NN_NP, a);
#pragma clang loop unroll(full)
  for (i = 0; i < g; ++i)
#pragma clang loop unroll(full)
    for (l = 0; l < 3; ++l) {
      int32_t c = c0 + 3 * i + l, off = q[c], m = q[oc + c], n = q[2 * oc + c];
      int8_t *yc = y + (3 * i + l) * ys_c;
      int64_t r = (int64_t)1 << (n - 1);
      if (3 * i + l >= nc) continue; /* padding channels (their q entries are the next arrays': unused) */
#pragma clang loop unroll(full)
      for (j = 0; j < EK_NN_NP; ++j) {
        int32_t v = (int32_t)((int64_t)(int32_t)((uint32_t)ek_rv_lane(a[i][j], l) + (uint32_t)off) * m + r >> n) + zp;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        EK_NN_STORE(yc + j, v, tab);
      }
    }
}

#define EK_RV_DOT_RQ(NAME, G)                                                                                  \
  __attribute__((noinline)) static void NAME(const int64_t *w, int32_t K, const int8_t *col, int32_t rs,       \
                                             int32_t nc, const int32_t *h, int32_t c0, int8_t *y, int32_t ys_c) { \
    const int8_t *tab = ek_nn_table(h);                                                                        \
    if (tab)                                                                                                   \
      ek_rv_dot_rq_body(w, K, col, rs, G, nc, h, c0, y, ys_c, tab);                                           \
    else                                                                                                       \
      ek_rv_dot_rq_body(w, K, col, rs, G, nc, h, c0, y, ys_c, (const int8_t *)0);                             \
  }
EK_RV_DOT_RQ(ek_nn_dot_rq_6xn, 2)
EK_RV_DOT_RQ(ek_nn_dot_rq_3xn, 1)

/* The 3 or 6 channels from c of np pixels (6 or 1) whose k-th elements lie
 * at col[k * rs + j], requantized to y. */
static inline __attribute__((always_inline)) void ek_rv_block(const int64_t *w, const int8_t *col, int32_t rs,
                                                             int32_t np, const int32_t *h, int32_t c, int32_t L,
                                                             int32_t fused, int8_t *y, int32_t ys_c, int32_t ys_p) {
  int32_t oc = h[EK_NN_OC], K = h[EK_NN_K], acc[6 * EK_NN_NP];
  const int64_t *wc = w + (c / 3) * K;
  int32_t nc = oc - c < 6 ? oc - c : 6;
  if (fused && np == EK_NN_NP && ys_p == 1) {
    (nc > 3 ? ek_nn_dot_rq_6xn : ek_nn_dot_rq_3xn)(wc, K, col, rs, nc, h, c, y + c * ys_c, ys_c);
    return;
  }
  if (nc > 3)
    np == 1 ? ek_nn_dot_6x1(wc, K, col, rs, L, acc) : ek_nn_dot_6xn(wc, K, col, rs, L, acc);
  else
    np == 1 ? ek_nn_dot_3x1(wc, K, col, rs, L, acc) : ek_nn_dot_3xn(wc, K, col, rs, L, acc);
  if (np == EK_NN_NP && ys_p == 1)
    ek_nn_rv_requant6(acc, y + c * ys_c, nc, ys_c, h, c);
  else
    ek_nn_requant(acc, y + c * ys_c, nc, np, ys_c, ys_p, h, c);
}

/* conv (groups 1) and matmul: weights packed int64 (8-byte aligned: the
 * weights blob is), [OC/6][K][2] and, for a last group of 3, [K]: group g
 * of three channels starts at word g * K either way. Scratch: K * S int8 columns (S =
 * EK_NN_NP, or 1 if the layer has fewer pixels); the accumulators of a
 * block live on the stack. */
static void ek_nn_gemm(const int8_t *x, const int8_t *w8, const int32_t *h, int8_t *y, void *scratch) {
  int32_t oc = h[EK_NN_OC], K = h[EK_NN_K], P = h[EK_NN_P], p, c, j;
  int32_t matmul = h[EK_NN_KIND] == EK_NN_MATMUL, ys_c = matmul ? 1 : P, ys_p = matmul ? oc : 1;
  int32_t L = h[EK_NN_HDR + 3 * oc + 2 * h[EK_NN_KP]];
  const int64_t *w = (const int64_t *)__builtin_assume_aligned(w8, 8);
  int8_t *col = (int8_t *)scratch;
  /* 1x1, stride 1, no padding: pixel p's element k is x[k * H * W + p] */
  int32_t pointwise = !matmul && h[EK_NN_KH] == 1 && h[EK_NN_KW] == 1 && h[EK_NN_SH] == 1 && h[EK_NN_SW] == 1 &&
                      h[EK_NN_PT] == 0 && h[EK_NN_PL] == 0;
  int32_t hw = h[EK_NN_H] * h[EK_NN_W], fused = K <= L;
  for (c = 0; c < oc; ++c) fused &= EK_NN_HIGH_WORD(h[EK_NN_HDR + 2 * oc + c]); /* ek_nn_dot_rq_* */
  for (p = 0; p + EK_NN_NP <= P; p += EK_NN_NP) {
    const int8_t *src = col;
    int32_t rs = EK_NN_NP;
    if (pointwise) {
      src = x + p;
      rs = hw;
    } else {
      for (j = 0; j < EK_NN_NP; ++j) ek_im2col_s8(x, h, p + j, col + j, EK_NN_NP);
    }
    for (c = 0; c < oc; c += 6) ek_rv_block(w, src, rs, EK_NN_NP, h, c, L, fused, y + p * ys_p, ys_c, ys_p);
  }
  for (; p < P; ++p) {
    const int8_t *src = col;
    int32_t rs = 1;
    if (pointwise) {
      src = x + p;
      rs = hw;
    } else if (matmul) {
      src = x + p * K;
    } else {
      ek_im2col_s8(x, h, p, col, 1);
    }
    for (c = 0; c < oc; c += 6) ek_rv_block(w, src, rs, 1, h, c, L, fused, y + p * ys_p, ys_c, ys_p);
  }
}
#elif EK_NN_SDOT
/* aarch64 SDOT (Armv8.2-A DotProd: Cortex-A76, raspberry-pi-5), hand-written
 * with arm_neon.h: SDOT adds the four int8 x int8 products of each 32-bit
 * lane pair into an int32 lane, 16 MACs per instruction, exact (four
 * products are at most 2^16; the sums wrap in int32 as the lowering's).
 * Activations are int8 with their zero point folded into the offset, as for
 * every kernel here, so no u8 -> s8 shift is needed. Weights
 * [ceil(OC/4)][KP/4][4 channels][4 k] (KP = K rounded up to 4, zero weights
 * past K; backends/aot_c/nn.py): one 16-byte load is 4 channels x 4 k.
 * Columns int8 [KP/4][S][4] (S = EK_NN_NP, or 1 for a lone pixel; EK_DST):
 * pixel j's 4 k are lane j, so SDOT by element (vdotq_laneq_s32) does them
 * for 4 channels into pixel j's accumulator. 8 channels x 6 pixels: per 4 k
 * two weight loads, one 24-byte column load pair and 12 SDOT for 192 MACs
 * (the NEON kernel: 24 SMLAL and 6 loads/widenings for 96). */
#if EK_NN_NP != 6
#error "ek_nn_s8: the SDOT kernels block 6 pixels (EK_NN_NP)"
#endif

#define EK_SDOT6(a, wv, c0, c1)                                                                             \
  do {                                                                                                      \
    a[0] = vdotq_laneq_s32(a[0], wv, c0, 0); a[1] = vdotq_laneq_s32(a[1], wv, c0, 1);                       \
    a[2] = vdotq_laneq_s32(a[2], wv, c0, 2); a[3] = vdotq_laneq_s32(a[3], wv, c0, 3);                       \
    a[4] = vdotq_lane_s32(a[4], wv, c1, 0); a[5] = vdotq_lane_s32(a[5], wv, c1, 1);                         \
  } while (0)

/* a[j] (b[j]) += channels w (w + 4 KP) x pixel j over every k. */
static inline __attribute__((always_inline)) void ek_sdot_8xn_mac(const int8_t *w, const int8_t *col, int32_t kp,
                                                                  int32x4_t a[6], int32x4_t b[6]) {
  const int8_t *u = w + 4 * kp, *end = u;
#pragma clang loop unroll_count(2) /* the loop's counting instructions per 8 k, not 4 */
  for (; w < end; w += 16, u += 16, col += 24) {
    int8x16_t wv = vld1q_s8(w), uv = vld1q_s8(u), c0 = vld1q_s8(col);
    int8x8_t c1 = vld1_s8(col + 16);
    EK_SDOT6(a, wv, c0, c1);
    EK_SDOT6(b, uv, c0, c1);
  }
}
static inline __attribute__((always_inline)) void ek_sdot_4xn_mac(const int8_t *w, const int8_t *col, int32_t kp,
                                                                  int32x4_t a[6]) {
  const int8_t *end = w + 4 * kp;
  for (; w < end; w += 16, col += 24) EK_SDOT6(a, vld1q_s8(w), vld1q_s8(col), vld1_s8(col + 16));
}

/* 8 channels (w and w + 4 KP) x 6 pixels, and 4 channels x 6 pixels (the
 * last 4 channels of a layer with OC % 8 in 1..4). */
EK_NEON_TILE8(ek_nn_sdot_8xn, int8_t, ek_sdot_8xn_mac)
EK_NEON_TILE4(ek_nn_sdot_4xn, int8_t, ek_sdot_4xn_mac)

EK_NEON_TILE8_RQ(ek_nn_sdot_8xn_rq, int8_t, ek_sdot_8xn_mac)
EK_NEON_TILE4_RQ(ek_nn_sdot_4xn_rq, int8_t, ek_sdot_4xn_mac)

/* 4 channels x 1 pixel (pixel tail, fully connected): SDOT of the 4 k of
 * the column, broadcast, two accumulators (even and odd groups). */
__attribute__((noinline)) static void ek_nn_sdot_4x1(const int8_t *w, const int8_t *col, int32_t kp,
                                                     int32_t acc[EK_NN_MC]) {
  int32x4_t a = vdupq_n_s32(0), b = vdupq_n_s32(0);
  const int8_t *end = w + 4 * kp;
  for (; w + 32 <= end; w += 32, col += 8) {
    int32_t c0, c1;
    __builtin_memcpy(&c0, col, 4);
    __builtin_memcpy(&c1, col + 4, 4);
    a = vdotq_s32(a, vld1q_s8(w), vreinterpretq_s8_s32(vdupq_n_s32(c0)));
    b = vdotq_s32(b, vld1q_s8(w + 16), vreinterpretq_s8_s32(vdupq_n_s32(c1)));
  }
  if (w < end) {
    int32_t c0;
    __builtin_memcpy(&c0, col, 4);
    a = vdotq_s32(a, vld1q_s8(w), vreinterpretq_s8_s32(vdupq_n_s32(c0)));
  }
  vst1q_s32(acc, vaddq_s32(a, b));
}

/* Six consecutive int8 values at p (no read past them), or (wide) eight:
 * lanes 6 and 7 only reach lanes the transposes below drop. */
static inline __attribute__((always_inline)) int8x8_t ek_sdot_ld6(const int8_t *p, int32_t wide) {
  uint64_t u = 0;
  if (wide) return vld1_s8(p);
  __builtin_memcpy(&u, p, 6);
  return vcreate_s8(u);
}

/* One group of four channel rows (r0 + i * hw, i < 4) of 6 pixels, transposed to the [6][4] lanes
 * with two zips, 24 bytes stored at once. */
static inline __attribute__((always_inline)) void ek_sdot_cols4(const int8_t *r0, const int8_t *r1, const int8_t *r2,
                                                                const int8_t *r3, int8_t *col, int32_t wide) {
  int8x8x2_t z01 = vzip_s8(ek_sdot_ld6(r0, wide), ek_sdot_ld6(r1, wide));
  int8x8x2_t z23 = vzip_s8(ek_sdot_ld6(r2, wide), ek_sdot_ld6(r3, wide));
  int16x4x2_t p03 = vzip_s16(vreinterpret_s16_s8(z01.val[0]), vreinterpret_s16_s8(z23.val[0]));
  int16x4_t p45 = vzip1_s16(vreinterpret_s16_s8(z01.val[1]), vreinterpret_s16_s8(z23.val[1]));
  vst1q_s16((int16_t *)col, vcombine_s16(p03.val[0], p03.val[1]));
  vst1_s16((int16_t *)(col + 16), p45);
}

/* The columns of 6 pixels of a 1x1, stride-1, unpadded conv: channel k's
 * inputs of the 6 pixels are consecutive (x + k * hw), each group of four
 * channels transposed by ek_sdot_cols4 (the table gather: a load and a
 * store per element); 8-byte loads where 8 bytes lie in the row (wide).
 * Rows past K repeat the group's first (their weights are zero). */
static inline __attribute__((always_inline)) void ek_sdot_cols_1x1_body(const int8_t *x, int32_t hw, int32_t K,
                                                                        int8_t *col, int32_t wide) {
  int32_t k;
  for (k = 0; k + 4 <= K; k += 4, col += 24, x += 4 * hw) ek_sdot_cols4(x, x + hw, x + 2 * hw, x + 3 * hw, col, wide);
  if (k < K)
    ek_sdot_cols4(x, k + 1 < K ? x + hw : x, k + 2 < K ? x + 2 * hw : x, x, col, wide);
}
static inline __attribute__((always_inline)) void ek_sdot_cols_1x1(const int8_t *x, int32_t hw, int32_t K,
                                                                   int8_t *col, int32_t wide) {
  if (wide)
    ek_sdot_cols_1x1_body(x, hw, K, col, 1);
  else
    ek_sdot_cols_1x1_body(x, hw, K, col, 0);
}

/* conv (groups 1) and matmul: weights [ceil(OC/4)][KP/4][4][4]. Scratch,
 * with S = EK_NN_NP pixels (or 1 if the layer has fewer): KP * S int8
 * columns, then the accumulators [ceil(OC/4) * 4][S] int32. */
static void ek_nn_gemm(const int8_t *x, const int8_t *w, const int32_t *h, int8_t *y, void *scratch) {
  int32_t oc = h[EK_NN_OC], K = h[EK_NN_K], kp = h[EK_NN_KP], P = h[EK_NN_P], p, c, j;
  int32_t ys_c = h[EK_NN_KIND] == EK_NN_MATMUL ? 1 : P, ys_p = h[EK_NN_KIND] == EK_NN_MATMUL ? oc : 1;
  int8_t *col = (int8_t *)scratch;
  int32_t *acc = (int32_t *)__builtin_assume_aligned(col + kp * (P >= EK_NN_NP ? EK_NN_NP : 1), 4);
  int32_t pointwise = h[EK_NN_KIND] == EK_NN_CONV && h[EK_NN_KH] == 1 && h[EK_NN_KW] == 1 && h[EK_NN_SH] == 1 &&
                      h[EK_NN_SW] == 1 && h[EK_NN_PT] == 0 && h[EK_NN_PL] == 0;
  int32_t hw = h[EK_NN_H] * h[EK_NN_W], fused = P >= EK_NN_NP && ek_nn_all_high_word(h);
  for (p = 0; p + EK_NN_NP <= P; p += EK_NN_NP) {
    int8_t *yp = y + p * ys_p;
    if (pointwise)
      ek_sdot_cols_1x1(x + p, hw, K, col, p + 8 <= hw);
    else
      for (j = 0; j < EK_NN_NP; ++j) ek_im2col_s8(x, h, p + j, col + 4 * j, EK_NN_NP);
    if (fused) { /* requantized in registers; a last 1-3 channels through acc */
      int32_t wide = p + 8 <= P;
      for (c = 0; c + 2 * EK_NN_MC <= oc; c += 2 * EK_NN_MC) ek_nn_sdot_8xn_rq(w + c * kp, col, kp, h, c, yp + c * ys_c, wide);
      for (; c + EK_NN_MC <= oc; c += EK_NN_MC) ek_nn_sdot_4xn_rq(w + c * kp, col, kp, h, c, yp + c * ys_c, wide);
      if (c < oc) {
        ek_nn_sdot_4xn(w + c * kp, col, kp, acc);
        ek_nn_requant(acc, yp + c * ys_c, oc - c, EK_NN_NP, ys_c, ys_p, h, c);
      }
      continue;
    }
    for (c = 0; c + 2 * EK_NN_MC <= oc; c += 2 * EK_NN_MC) ek_nn_sdot_8xn(w + c * kp, col, kp, acc + c * EK_NN_NP);
    for (; c < oc; c += EK_NN_MC) ek_nn_sdot_4xn(w + c * kp, col, kp, acc + c * EK_NN_NP);
    ek_nn_requant(acc, yp, oc, EK_NN_NP, ys_c, ys_p, h, 0);
  }
  for (; p < P; ++p) {
    ek_im2col_s8(x, h, p, col, 1);
    for (c = 0; c < oc; c += EK_NN_MC) ek_nn_sdot_4x1(w + c * kp, col, kp, acc + c);
    ek_nn_requant(acc, y + p * ys_p, oc, 1, ys_c, ys_p, h, 0);
  }
}
#else
/* 4 channels x EK_NN_NP pixels. w: [K][4], col: [K][EK_NN_NP] of T (the
 * MAC type, or int8 converted as it is loaded). */
#define EK_DOT_4XN(NAME, T)                                                                                 \
  __attribute__((noinline)) static void NAME(const int8_t *w, const T *col, int32_t K,                      \
                                             int32_t acc[EK_NN_MC * EK_NN_NP]) {                            \
    ek_mac_t a[EK_NN_MC][EK_NN_NP] = {{0}};                                                                 \
    int32_t k, i, j;                                                                                        \
    for (k = 0; k < K; ++k, w += EK_NN_MC, col += EK_NN_NP) {                                               \
      ek_mac_t xv[EK_NN_NP];                                                                                \
      for (j = 0; j < EK_NN_NP; ++j) xv[j] = (ek_mac_t)col[j];                                              \
      for (i = 0; i < EK_NN_MC; ++i) {                                                                      \
        ek_mac_t wi = (ek_mac_t)w[i];                                                                       \
        for (j = 0; j < EK_NN_NP; ++j) EK_MAC(a[i][j], wi, xv[j]);                                          \
      }                                                                                                     \
    }                                                                                                       \
    for (i = 0; i < EK_NN_MC; ++i)                                                                          \
      for (j = 0; j < EK_NN_NP; ++j) acc[i * EK_NN_NP + j] = (int32_t)a[i][j];                              \
  }

/* 4 channels x 1 pixel (pixel tail, fully connected): col is one column. */
#define EK_DOT_4X1(NAME, T)                                                                                 \
  __attribute__((noinline)) static void NAME(const int8_t *w, const T *col, int32_t K, int32_t acc[EK_NN_MC]) { \
    ek_mac_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                                                \
    int32_t k;                                                                                              \
    for (k = 0; k < K; ++k, w += EK_NN_MC) {                                                                \
      ek_mac_t xv = (ek_mac_t)col[k];                                                                       \
      EK_MAC(a0, (ek_mac_t)w[0], xv);                                                                       \
      EK_MAC(a1, (ek_mac_t)w[1], xv);                                                                       \
      EK_MAC(a2, (ek_mac_t)w[2], xv);                                                                       \
      EK_MAC(a3, (ek_mac_t)w[3], xv);                                                                       \
    }                                                                                                       \
    acc[0] = (int32_t)a0; acc[1] = (int32_t)a1; acc[2] = (int32_t)a2; acc[3] = (int32_t)a3;                 \
  }
#if EK_NN_NEON
/* aarch64 NEON, hand-written with arm_neon.h (no library has int8 kernels
 * for this weight layout and edgekit's requantization): the 4 channels of
 * one k are an int16x4 (weights widened once per pair of k, SXTL), each
 * pixel's accumulator an int32x4 over those channels, and one SMLAL by
 * element does 4 exact MACs (|w * x| <= 2^14 in int32, so any K is exact).
 * The 6 pixels of a pair of k are 12 consecutive column elements. */
#if EK_NN_NP != 6
#error "ek_nn_s8: the NEON kernels block 6 pixels (EK_NN_NP)"
#endif

/* The 4 weights of one k, widened (the last, unpaired k). */
static inline __attribute__((always_inline)) int16x4_t ek_neon_w4(const int8_t *w) {
  uint32_t u;
  __builtin_memcpy(&u, w, 4);
  return vget_low_s16(vmovl_s8(vcreate_s8(u)));
}

/* Columns as int16: a pair of k (lanes 0-5 of v0: the first k; 6-7 of v0
 * and 0-3 of v1: the second), or one k (lanes 0-5). */
static inline __attribute__((always_inline)) void ek_neon_cols2_s16(const int16_t *c, int16x8_t *v0, int16x4_t *v1) {
  *v0 = vld1q_s16(c);
  *v1 = vld1_s16(c + 8);
}
static inline __attribute__((always_inline)) int16x8_t ek_neon_cols1_s16(const int16_t *c) {
  int16x4_t hi = vld1_s16(c + 2); /* c[2..5]: no read past the 6 */
  return vcombine_s16(vld1_s16(c), vext_s16(hi, hi, 2));
}
/* Columns as int8 (EK_NN_COLS = 1), widened as they are loaded. */
static inline __attribute__((always_inline)) void ek_neon_cols2_s8(const int8_t *c, int16x8_t *v0, int16x4_t *v1) {
  *v0 = vmovl_s8(vld1_s8(c));
  *v1 = vget_high_s16(vmovl_s8(vld1_s8(c + 4)));
}
static inline __attribute__((always_inline)) int16x8_t ek_neon_cols1_s8(const int8_t *c) {
  uint64_t u = 0;
  __builtin_memcpy(&u, c, 6);
  return vmovl_s8(vcreate_s8(u));
}

/* acc[j] += the 4 channels' weights of the first k (wl) and of the second
 * (wh) times pixel j's column element of each (lanes as ek_neon_cols2_*). */
#define EK_NEON_MAC6(a, wl, wh, v0, v1)                                                                     \
  do {                                                                                                      \
    a[0] = vmlal_laneq_s16(a[0], wl, v0, 0); a[1] = vmlal_laneq_s16(a[1], wl, v0, 1);                       \
    a[2] = vmlal_laneq_s16(a[2], wl, v0, 2); a[3] = vmlal_laneq_s16(a[3], wl, v0, 3);                       \
    a[4] = vmlal_laneq_s16(a[4], wl, v0, 4); a[5] = vmlal_laneq_s16(a[5], wl, v0, 5);                       \
    a[0] = vmlal_laneq_s16(a[0], wh, v0, 6); a[1] = vmlal_laneq_s16(a[1], wh, v0, 7);                       \
    a[2] = vmlal_lane_s16(a[2], wh, v1, 0); a[3] = vmlal_lane_s16(a[3], wh, v1, 1);                         \
    a[4] = vmlal_lane_s16(a[4], wh, v1, 2); a[5] = vmlal_lane_s16(a[5], wh, v1, 3);                         \
  } while (0)

/* a[j] += 4 channels (w: [K][4]) x pixel j over every k; and the kernel NAME
 * that runs it from zero into acc. */
#define EK_NEON_DOT_4XN(NAME, T, SUF)                                                                       \
  static inline __attribute__((always_inline)) void NAME##_mac(const int8_t *w, const T *col, int32_t K,    \
                                                              int32x4_t a[6]) {                             \
    int32_t k;                                                                                              \
    for (k = 0; k + 1 < K; k += 2, w += 8, col += 12) {                                                     \
      int16x8_t wv = vmovl_s8(vld1_s8(w)), v0;                                                              \
      int16x4_t wl = vget_low_s16(wv), wh = vget_high_s16(wv), v1;                                          \
      ek_neon_cols2_##SUF(col, &v0, &v1);                                                                   \
      EK_NEON_MAC6(a, wl, wh, v0, v1);                                                                      \
    }                                                                                                       \
    if (k < K) {                                                                                            \
      int16x4_t wl = ek_neon_w4(w);                                                                         \
      int16x8_t v = ek_neon_cols1_##SUF(col);                                                               \
      a[0] = vmlal_laneq_s16(a[0], wl, v, 0); a[1] = vmlal_laneq_s16(a[1], wl, v, 1);                       \
      a[2] = vmlal_laneq_s16(a[2], wl, v, 2); a[3] = vmlal_laneq_s16(a[3], wl, v, 3);                       \
      a[4] = vmlal_laneq_s16(a[4], wl, v, 4); a[5] = vmlal_laneq_s16(a[5], wl, v, 5);                       \
    }                                                                                                       \
  }                                                                                                         \
  EK_NEON_TILE4(NAME, T, NAME##_mac)

/* 4 channels x 1 pixel: two accumulators (even and odd k). */
#define EK_NEON_DOT_4X1(NAME, T)                                                                                 \
  __attribute__((noinline)) static void NAME(const int8_t *w, const T *col, int32_t K, int32_t acc[EK_NN_MC]) { \
    int32x4_t a = vdupq_n_s32(0), b = vdupq_n_s32(0);                                                       \
    int32_t k;                                                                                              \
    for (k = 0; k + 1 < K; k += 2, w += 8) {                                                                \
      int16x8_t wv = vmovl_s8(vld1_s8(w));                                                                  \
      a = vmlal_n_s16(a, vget_low_s16(wv), col[k]);                                                         \
      b = vmlal_n_s16(b, vget_high_s16(wv), col[k + 1]);                                                    \
    }                                                                                                       \
    if (k < K) a = vmlal_n_s16(a, ek_neon_w4(w), col[k]);                                                   \
    vst1q_s32(acc, vaddq_s32(a, b));                                                                        \
  }
EK_NEON_DOT_4XN(ek_nn_dot_4xn, ek_col_t, s16)

/* Two 4-channel blocks (8 channels; w and w + 4 K) x 6 pixels: each pair of
 * k's column loads serves 24 SMLAL instead of 12 (int16 columns). a[j]
 * (b[j]) += channels w (w + 4 K) x pixel j over every k. */
static inline __attribute__((always_inline)) void ek_neon_dot_8xn_mac(const int8_t *w, const int16_t *col, int32_t K,
                                                                      int32x4_t a[6], int32x4_t b[6]) {
  const int8_t *u = w + 4 * K;
  int32_t k, j;
#pragma clang loop unroll_count(2) /* the loop's 5 counting instructions per 4 k, not 2 */
  for (k = 0; k + 1 < K; k += 2, w += 8, u += 8, col += 12) {
    int16x8_t wv = vmovl_s8(vld1_s8(w)), uv = vmovl_s8(vld1_s8(u)), v0;
    int16x4_t v1;
    ek_neon_cols2_s16(col, &v0, &v1);
    EK_NEON_MAC6(a, vget_low_s16(wv), vget_high_s16(wv), v0, v1);
    EK_NEON_MAC6(b, vget_low_s16(uv), vget_high_s16(uv), v0, v1);
  }
  if (k < K) {
    int16x8_t v = ek_neon_cols1_s16(col);
    int16x4_t wl = ek_neon_w4(w), ul = ek_neon_w4(u);
    for (j = 0; j < 6; ++j) { /* constant lanes once unrolled */
      a[j] = vmlal_n_s16(a[j], wl, v[j]);
      b[j] = vmlal_n_s16(b[j], ul, v[j]);
    }
  }
}

EK_NEON_TILE8(ek_nn_dot_8xn, int16_t, ek_neon_dot_8xn_mac)

EK_NEON_DOT_4X1(ek_nn_dot_4x1, ek_col_t)
EK_NEON_DOT_4XN(ek_nn_dot_4xn_s8, int8_t, s8)
EK_NEON_DOT_4X1(ek_nn_dot_4x1_s8, int8_t)
EK_NEON_TILE8_RQ(ek_nn_dot_8xn_rq, int16_t, ek_neon_dot_8xn_mac)
EK_NEON_TILE4_RQ(ek_nn_dot_4xn_rq, int16_t, ek_nn_dot_4xn_mac)
EK_NEON_TILE4_RQ(ek_nn_dot_4xn_s8_rq, int8_t, ek_nn_dot_4xn_s8_mac)
#else
EK_DOT_4XN(ek_nn_dot_4xn, ek_col_t)
EK_DOT_4X1(ek_nn_dot_4x1, ek_col_t)
EK_DOT_4XN(ek_nn_dot_4xn_s8, int8_t)
EK_DOT_4X1(ek_nn_dot_4x1_s8, int8_t)
#endif

/* EK_NN_COLS = 1: int8 columns and each 4-channel block requantized from
 * the stack, so the scratch is only K * EK_NN_NP bytes (a quarter of the
 * MAC-type columns, no accumulators). The compiler picks it where the
 * faster layout would raise the arena (backends/aot_c/nn.py). */
static void ek_nn_gemm_s8cols(const int8_t *x, const int8_t *w, const int32_t *h, int8_t *y, int8_t *col) {
  int32_t oc = h[EK_NN_OC], K = h[EK_NN_K], P = h[EK_NN_P], p, c, j;
  int32_t ys_c = h[EK_NN_KIND] == EK_NN_MATMUL ? 1 : P, ys_p = h[EK_NN_KIND] == EK_NN_MATMUL ? oc : 1;
  int32_t acc[EK_NN_MC * EK_NN_NP];
#if EK_NN_NEON
  int32_t fused = P >= EK_NN_NP && ek_nn_all_high_word(h);
#endif
  for (p = 0; p + EK_NN_NP <= P; p += EK_NN_NP) {
    for (j = 0; j < EK_NN_NP; ++j) ek_im2col_s8(x, h, p + j, col + j, EK_NN_NP);
    c = 0;
#if EK_NN_NEON
    if (fused) /* requantized in registers (ek_neon_tile_rq); a last 1-3 channels below */
      for (; c + EK_NN_MC <= oc; c += EK_NN_MC) ek_nn_dot_4xn_s8_rq(w + c * K, col, K, h, c, y + c * ys_c + p * ys_p, p + 8 <= P);
#endif
    for (; c < oc; c += EK_NN_MC) {
      ek_nn_dot_4xn_s8(w + c * K, col, K, acc);
      ek_nn_requant(acc, y + c * ys_c + p * ys_p, oc - c < EK_NN_MC ? oc - c : EK_NN_MC, EK_NN_NP, ys_c, ys_p, h, c);
    }
  }
  for (; p < P; ++p) {
    ek_im2col_s8(x, h, p, col, 1);
    for (c = 0; c < oc; c += EK_NN_MC) {
      ek_nn_dot_4x1_s8(w + c * K, col, K, acc);
      ek_nn_requant(acc, y + c * ys_c + p * ys_p, oc - c < EK_NN_MC ? oc - c : EK_NN_MC, 1, ys_c, ys_p, h, c);
    }
  }
}

/* conv (groups 1) and matmul: weights [ceil(OC/4)][K][4]. Scratch, with
 * S = EK_NN_NP pixels (or 1 if the layer has fewer): K * S ek_col_t, then
 * the accumulators [ceil(OC/4) * 4][S] int32. */
static void ek_nn_gemm(const int8_t *x, const int8_t *w, const int32_t *h, int8_t *y, void *scratch) {
  int32_t oc = h[EK_NN_OC], K = h[EK_NN_K], P = h[EK_NN_P], p, c, j;
  int32_t ys_c = h[EK_NN_KIND] == EK_NN_MATMUL ? 1 : P, ys_p = h[EK_NN_KIND] == EK_NN_MATMUL ? oc : 1;
  ek_col_t *col = (ek_col_t *)scratch;
  int32_t *acc = (int32_t *)(col + K * (P >= EK_NN_NP ? EK_NN_NP : 1));
  if (h[EK_NN_COLS]) {
    ek_nn_gemm_s8cols(x, w, h, y, (int8_t *)scratch);
    return;
  }
#if EK_NN_NEON
  /* 1x1, stride 1, no padding: the 6 pixels' inputs of a channel are
   * consecutive, one 6-byte load widened at once (ek_neon_cols1_s8). */
  int32_t pointwise = h[EK_NN_KIND] == EK_NN_CONV && h[EK_NN_KH] == 1 && h[EK_NN_KW] == 1 && h[EK_NN_SH] == 1 &&
                      h[EK_NN_SW] == 1 && h[EK_NN_PT] == 0 && h[EK_NN_PL] == 0;
  int32_t hw = h[EK_NN_H] * h[EK_NN_W], fused = P >= EK_NN_NP && ek_nn_all_high_word(h);
#endif
  for (p = 0; p + EK_NN_NP <= P; p += EK_NN_NP) {
#if EK_NN_NEON
    if (pointwise) {
      const int8_t *xk = x + p;
      ek_col_t *ck = col;
#define EK_COLS1_STORE(v)                                                                                     \
  do {                                                                                                        \
    int32_t v45 = vgetq_lane_s32(vreinterpretq_s32_s16(v), 2);                                                \
    vst1_s16(ck, vget_low_s16(v));                                                                            \
    __builtin_memcpy(ck + 4, &v45, 4);                                                                        \
  } while (0)
      if (p + 8 <= hw) /* an 8-byte load where the channel's row has 8 left (lanes 6-7 dropped) */
        for (j = 0; j < K; ++j, xk += hw, ck += 6) {
          int16x8_t v = vmovl_s8(vld1_s8(xk));
          EK_COLS1_STORE(v);
        }
      else
        for (j = 0; j < K; ++j, xk += hw, ck += 6) {
          int16x8_t v = ek_neon_cols1_s8(xk);
          EK_COLS1_STORE(v);
        }
#undef EK_COLS1_STORE
    } else
#endif
    for (j = 0; j < EK_NN_NP; ++j) ek_im2col(x, h, p + j, col + j, EK_NN_NP);
    c = 0;
#if EK_NN_NEON
    if (fused) { /* requantized in registers; a last 1-3 channels through acc */
      int8_t *yp = y + p * ys_p;
      int32_t wide = p + 8 <= P;
      for (; c + 2 * EK_NN_MC <= oc; c += 2 * EK_NN_MC) ek_nn_dot_8xn_rq(w + c * K, col, K, h, c, yp + c * ys_c, wide);
      for (; c + EK_NN_MC <= oc; c += EK_NN_MC) ek_nn_dot_4xn_rq(w + c * K, col, K, h, c, yp + c * ys_c, wide);
      if (c < oc) {
        ek_nn_dot_4xn(w + c * K, col, K, acc);
        ek_nn_requant(acc, yp + c * ys_c, oc - c, EK_NN_NP, ys_c, ys_p, h, c);
      }
      continue;
    }
    for (; c + 2 * EK_NN_MC <= oc; c += 2 * EK_NN_MC) ek_nn_dot_8xn(w + c * K, col, K, acc + c * EK_NN_NP);
#endif
    for (; c < oc; c += EK_NN_MC) ek_nn_dot_4xn(w + c * K, col, K, acc + c * EK_NN_NP);
    ek_nn_requant(acc, y + p * ys_p, oc, EK_NN_NP, ys_c, ys_p, h, 0);
  }
  for (; p < P; ++p) {
    ek_im2col(x, h, p, col, 1);
    for (c = 0; c < oc; c += EK_NN_MC) ek_nn_dot_4x1(w + c * K, col, K, acc + c);
    ek_nn_requant(acc, y + p * ys_p, oc, 1, ys_c, ys_p, h, 0);
  }
}
#endif

/* Depthwise (groups == channels, one output per channel): each channel's
 * input plane is copied once, padded with the zero point, into the scratch
 * (as ek_dw_t), then each output is KH*KW multiply-adds. Weights [C][KH][KW]. */
#if EK_NN_DSP || EK_NN_NEON
typedef int16_t ek_dw_t; /* pairs for SMLAD; NEON: SMLAL */
#else
typedef ek_mac_t ek_dw_t;
#endif

#if !EK_NN_DSP && !EK_NN_NEON
/* Two horizontally adjacent outputs of a stride-1 3x3 window: the middle
 * columns are loaded once for both. */
static inline __attribute__((always_inline)) void ek_dw3_pair(const ek_dw_t *r0, const ek_dw_t *r1, const ek_dw_t *r2,
                                                              const ek_dw_t *wk, ek_dw_t *pa, ek_dw_t *pb) {
  const ek_dw_t *rows[3] = {r0, r1, r2};
  ek_dw_t a = 0, b = 0;
  int32_t r;
  for (r = 0; r < 3; ++r) {
    ek_dw_t x0 = rows[r][0], x1 = rows[r][1], x2 = rows[r][2], x3 = rows[r][3];
    EK_MAC(a, wk[3 * r], x0); EK_MAC(a, wk[3 * r + 1], x1); EK_MAC(a, wk[3 * r + 2], x2);
    EK_MAC(b, wk[3 * r], x1); EK_MAC(b, wk[3 * r + 1], x2); EK_MAC(b, wk[3 * r + 2], x3);
  }
  *pa = a;
  *pb = b;
}

static inline __attribute__((always_inline)) ek_dw_t ek_dw3_one(const ek_dw_t *r0, const ek_dw_t *r1,
                                                                const ek_dw_t *r2, const ek_dw_t *wk) {
  ek_dw_t a = 0;
  EK_MAC(a, wk[0], r0[0]); EK_MAC(a, wk[1], r0[1]); EK_MAC(a, wk[2], r0[2]);
  EK_MAC(a, wk[3], r1[0]); EK_MAC(a, wk[4], r1[1]); EK_MAC(a, wk[5], r1[2]);
  EK_MAC(a, wk[6], r2[0]); EK_MAC(a, wk[7], r2[1]); EK_MAC(a, wk[8], r2[2]);
  return a;
}
#endif

#if !EK_NN_NEON
/* One output row of a 3x3 depthwise conv into acc, requantized afterwards
 * (the weights and the three row pointers then fit the registers). */
__attribute__((noinline)) static void ek_nn_dw3_row(const ek_dw_t *r0, int32_t pw, int32_t sw, const int8_t *wc,
                                                    int32_t *acc, int32_t n) {
  const ek_dw_t *r1 = r0 + pw, *r2 = r1 + pw;
  int32_t *end = acc + n;
#if EK_NN_DSP
  /* (w0, w1) pairs against unaligned (x0, x1) words, x2 alone (SMLABB). */
  uint32_t p0 = (uint16_t)wc[0] | ((uint32_t)(uint16_t)wc[1] << 16), p1 = (uint16_t)wc[3] | ((uint32_t)(uint16_t)wc[4] << 16);
  uint32_t p2 = (uint16_t)wc[6] | ((uint32_t)(uint16_t)wc[7] << 16);
  int32_t s0 = wc[2], s1 = wc[5], s2 = wc[8];
  for (; acc < end; r0 += sw, r1 += sw, r2 += sw) {
    uint32_t a0, a1, a2;
    int32_t a;
    __builtin_memcpy(&a0, r0, 4);
    __builtin_memcpy(&a1, r1, 4);
    __builtin_memcpy(&a2, r2, 4);
    a = __builtin_arm_smlad(a0, p0, r0[2] * s0);
    a = __builtin_arm_smlad(a1, p1, a + r1[2] * s1);
    a = __builtin_arm_smlad(a2, p2, a + r2[2] * s2);
    *acc++ = a;
  }
#else
  ek_dw_t wk[9];
  int32_t i;
  for (i = 0; i < 9; ++i) wk[i] = (ek_dw_t)wc[i];
  if (sw == 1)
    for (; acc + 1 < end; r0 += 2, r1 += 2, r2 += 2, acc += 2) {
      ek_dw_t a, b;
      ek_dw3_pair(r0, r1, r2, wk, &a, &b);
      acc[0] = (int32_t)a;
      acc[1] = (int32_t)b;
    }
  for (; acc < end; r0 += sw, r1 += sw, r2 += sw) *acc++ = (int32_t)ek_dw3_one(r0, r1, r2, wk);
#endif
}
#endif

#if !EK_NN_DSP && !EK_NN_NEON
/* Stride-1 3x3 depthwise row with the requantization fused (shift > 32 only):
 * two outputs per step share the middle columns' loads, and the
 * accumulators never go through memory. */
typedef struct {
  int32_t off, m, rnd, sh, zp, lo, hi;
  const int8_t *tab; /* the layer's output table or NULL (ek_nn_table) */
} ek_rq_fast_t;

/* tab: r->tab, or a constant NULL in the copy without a table. */
static inline __attribute__((always_inline)) int8_t ek_rq_fast(ek_mac_t a, const ek_rq_fast_t *r, const int8_t *tab) {
  int32_t v = (int32_t)((uint32_t)(int32_t)a + (uint32_t)r->off);
  v = EK_RQ_HI(v, r->m, r->rnd, r->sh) + r->zp;
  v = v < r->lo ? r->lo : v;
  v = v > r->hi ? r->hi : v;
  return tab ? tab[v] : (int8_t)v;
}

static inline __attribute__((always_inline)) void ek_nn_dw3_row_q_body(const ek_dw_t *r0, int32_t pw,
                                                                      const int8_t *wc, int8_t *y, int32_t n,
                                                                      const ek_rq_fast_t *rq, const int8_t *tab) {
  const ek_dw_t *r1 = r0 + pw, *r2 = r1 + pw;
  ek_rq_fast_t r = *rq;
  int8_t *end = y + n;
  ek_dw_t wk[9];
  int32_t i;
  for (i = 0; i < 9; ++i) wk[i] = (ek_dw_t)wc[i];
  for (; y + 1 < end; r0 += 2, r1 += 2, r2 += 2, y += 2) {
    ek_dw_t a, b;
    ek_dw3_pair(r0, r1, r2, wk, &a, &b);
    y[0] = ek_rq_fast(a, &r, tab);
    y[1] = ek_rq_fast(b, &r, tab);
  }
  if (y < end) *y = ek_rq_fast(ek_dw3_one(r0, r1, r2, wk), &r, tab);
}

__attribute__((noinline)) static void ek_nn_dw3_row_q(const ek_dw_t *r0, int32_t pw, const int8_t *wc, int8_t *y,
                                                      int32_t n, const ek_rq_fast_t *rq) {
  if (rq->tab)
    ek_nn_dw3_row_q_body(r0, pw, wc, y, n, rq, rq->tab);
  else
    ek_nn_dw3_row_q_body(r0, pw, wc, y, n, rq, (const int8_t *)0);
}
#endif

/* One output row of a 5x5 depthwise window (MobileNetV3's) into acc.
 * DSP: per kernel row, (x0, x1) and (x2, x3) as unaligned int16 words
 * against packed weight pairs (two SMLAD), x4 alone; wp holds the channel's
 * pairs and singles (see ek_nn_depthwise). Otherwise: the 25 weights stay
 * in registers and, at stride 1, two outputs share each row's six loads. */
#if EK_NN_DSP
__attribute__((noinline)) static void ek_nn_dw5_row(const int16_t *r0, int32_t pw, int32_t sw, const int32_t *wp,
                                                    int32_t *acc, int32_t n) {
  int32_t *end = acc + n;
  for (; acc < end; r0 += sw) {
    const int16_t *row = r0;
    const int32_t *w = wp;
    int32_t a = 0, r;
    for (r = 0; r < 5; ++r, row += pw, w += 3) {
      uint32_t x01, x23;
      __builtin_memcpy(&x01, row, 4);
      __builtin_memcpy(&x23, row + 2, 4);
      a = __builtin_arm_smlad(x01, (uint32_t)w[0], a);
      a = __builtin_arm_smlad(x23, (uint32_t)w[1], a);
      a += row[4] * w[2];
    }
    *acc++ = a;
  }
}
#elif !EK_NN_NEON
#define EK_DW5_W(r) ek_dw_t w##r##0 = wk[5 * r], w##r##1 = wk[5 * r + 1], w##r##2 = wk[5 * r + 2], \
                            w##r##3 = wk[5 * r + 3], w##r##4 = wk[5 * r + 4]
/* Row r of the window for outputs a (at p) and b (at p + 1). */
#define EK_DW5_PAIR(r, p)                                                                                    \
  do {                                                                                                       \
    ek_dw_t x0 = (p)[0], x1 = (p)[1], x2 = (p)[2], x3 = (p)[3], x4 = (p)[4], x5 = (p)[5];                    \
    EK_MAC(a, w##r##0, x0); EK_MAC(a, w##r##1, x1); EK_MAC(a, w##r##2, x2); EK_MAC(a, w##r##3, x3);          \
    EK_MAC(a, w##r##4, x4);                                                                                  \
    EK_MAC(b, w##r##0, x1); EK_MAC(b, w##r##1, x2); EK_MAC(b, w##r##2, x3); EK_MAC(b, w##r##3, x4);          \
    EK_MAC(b, w##r##4, x5);                                                                                  \
  } while (0)
#define EK_DW5_ONE(r, p)                                                                                     \
  do {                                                                                                       \
    EK_MAC(a, w##r##0, (p)[0]); EK_MAC(a, w##r##1, (p)[1]); EK_MAC(a, w##r##2, (p)[2]);                       \
    EK_MAC(a, w##r##3, (p)[3]); EK_MAC(a, w##r##4, (p)[4]);                                                   \
  } while (0)
__attribute__((noinline)) static void ek_nn_dw5_row(const ek_dw_t *r0, int32_t pw, int32_t sw, const ek_dw_t *wk,
                                                    int32_t *acc, int32_t n) {
  EK_DW5_W(0); EK_DW5_W(1); EK_DW5_W(2); EK_DW5_W(3); EK_DW5_W(4);
  int32_t *end = acc + n;
  if (sw == 1)
    for (; acc + 1 < end; r0 += 2, acc += 2) {
      ek_dw_t a = 0, b = 0;
      EK_DW5_PAIR(0, r0); EK_DW5_PAIR(1, r0 + pw); EK_DW5_PAIR(2, r0 + 2 * pw);
      EK_DW5_PAIR(3, r0 + 3 * pw); EK_DW5_PAIR(4, r0 + 4 * pw);
      acc[0] = (int32_t)a;
      acc[1] = (int32_t)b;
    }
  for (; acc < end; r0 += sw) {
    ek_dw_t a = 0;
    EK_DW5_ONE(0, r0); EK_DW5_ONE(1, r0 + pw); EK_DW5_ONE(2, r0 + 2 * pw);
    EK_DW5_ONE(3, r0 + 3 * pw); EK_DW5_ONE(4, r0 + 4 * pw);
    *acc++ = (int32_t)a;
  }
}
#endif

#if EK_NN_NEON
/* One output row of a kh x kw depthwise window (stride sw) into acc, from
 * the int16 plane; wk holds the channel's weights widened to int16. Plain
 * C: inlined with constant 3x3 and 5x5 windows, clang vectorizes the output
 * loop 8 outputs wide with the weights in registers (SMLAL by element into
 * int32, exact). A 5x5 layer, 16 channels of 48 x 48, executed 0.68 M
 * instructions so under qemu-user, 1.11 M with a hand-written NEON loop per
 * tap, 0.86 M on the float path. */
static inline __attribute__((always_inline)) void ek_nn_dw_row_body(const int16_t *r0, int32_t pw, int32_t sw,
                                                                   const int16_t *wk, int32_t kh, int32_t kw,
                                                                   int32_t *acc, int32_t n) {
  int32_t j, r, s;
  for (j = 0; j < n; ++j) {
    const int16_t *row = r0 + j * sw, *w = wk;
    int32_t a = 0;
    for (r = 0; r < kh; ++r, row += pw)
      for (s = 0; s < kw; ++s) a += row[s] * *w++;
    acc[j] = a;
  }
}

__attribute__((noinline)) static void ek_nn_dw_row(const int16_t *r0, int32_t pw, int32_t sw, const int16_t *wk,
                                                   int32_t kh, int32_t kw, int32_t *acc, int32_t n) {
  if (kh == 3 && kw == 3)
    ek_nn_dw_row_body(r0, pw, sw, wk, 3, 3, acc, n);
  else if (kh == 5 && kw == 5)
    ek_nn_dw_row_body(r0, pw, sw, wk, 5, 5, acc, n);
  else
    ek_nn_dw_row_body(r0, pw, sw, wk, kh, kw, acc, n);
}

/* One channel's requantization constants as vectors (the high-word form:
 * ek_neon_tile_rq's steps), and 8 sums (a0, a1: offset included) to int8. */
typedef struct {
  int32x4_t m, s; /* multiplier; 31 - n (SRSHL by -(sh + 1)) */
  int16x8_t zp;
  int8x8_t lo, hi;
} ek_neon_rq_t;
static inline __attribute__((always_inline)) int8x8_t ek_neon_rq8(int32x4_t a0, int32x4_t a1, const ek_neon_rq_t *q) {
  int16x8_t v = vcombine_s16(vqmovn_s32(vrshlq_s32(vqdmulhq_s32(a0, q->m), q->s)),
                             vqmovn_s32(vrshlq_s32(vqdmulhq_s32(a1, q->m), q->s)));
  return vmin_s8(vmax_s8(vqmovn_s16(vqaddq_s16(v, q->zp)), q->lo), q->hi);
}
/* 8 (16) sums of a depthwise row requantized, through the output table if
 * any (loaded here, from memory: 16 registers a row loop cannot keep), to y. */
static inline __attribute__((always_inline)) void ek_neon_rq8_store(int8_t *y, int32x4_t a0, int32x4_t a1,
                                                                   const ek_neon_rq_t *q, const int8_t *tab) {
  int8x8_t v = ek_neon_rq8(a0, a1, q);
  if (tab) {
    ek_neon_lut_t lut;
    ek_neon_lut_load(&lut, tab);
    v = ek_neon_lut(v, &lut);
  }
  vst1_s8(y, v);
}
static inline __attribute__((always_inline)) void ek_neon_rq16_store(int8_t *y, int32x4_t a0, int32x4_t a1, int32x4_t a2,
                                                                    int32x4_t a3, const ek_neon_rq_t *q, const int8_t *tab) {
  int8x16_t v = vcombine_s8(ek_neon_rq8(a0, a1, q), ek_neon_rq8(a2, a3, q));
  if (tab) {
    ek_neon_lut_t lut;
    ek_neon_lut_load(&lut, tab);
    v = ek_neon_lutq(v, &lut);
  }
  vst1q_s8(y, v);
}

/* A stride-1 3x3 or 5x5 depthwise row of n >= 8 outputs requantized in
 * registers, 16 outputs per step (the last step overlaps the one before
 * where n is not a multiple of 16: the same values written again; rows of
 * 8 to 15 outputs two overlapping steps of 8): the taps' weights in
 * registers (wk: at least 8 * ceil(kh kw / 8) int16, the scratch's kh kw
 * words), per tap one load of 16 inputs and four SMLAL by element (8: one
 * load, two SMLAL), from the channel's offset; then ek_neon_rq8 and the
 * output table, loaded in the step (16 registers the loop cannot keep).
 * The channel's shift must be of the high-word form. */
#define EK_DW_TAP(t, s)                                                                                       \
  do {                                                                                                        \
    int16x8_t x = vld1q_s16(row + (s));                                                                       \
    a0 = vmlal_laneq_s16(a0, vget_low_s16(x), wv[(t) >> 3], (t) & 7);                                         \
    a1 = vmlal_high_laneq_s16(a1, x, wv[(t) >> 3], (t) & 7);                                                  \
  } while (0)
#define EK_DW_TAP16(t, s)                                                                                     \
  do {                                                                                                        \
    int16x8x2_t x = vld1q_s16_x2(row + (s));                                                                  \
    a0 = vmlal_laneq_s16(a0, vget_low_s16(x.val[0]), wv[(t) >> 3], (t) & 7);                                  \
    a1 = vmlal_high_laneq_s16(a1, x.val[0], wv[(t) >> 3], (t) & 7);                                           \
    a2 = vmlal_laneq_s16(a2, vget_low_s16(x.val[1]), wv[(t) >> 3], (t) & 7);                                  \
    a3 = vmlal_high_laneq_s16(a3, x.val[1], wv[(t) >> 3], (t) & 7);                                           \
  } while (0)
/* A kernel row's taps, then an empty asm that takes the accumulators and
 * memory: the row's SMLALs stay before it, the next row's loads after it
 * (clang otherwise issues all 25 loads of a 5x5 window first and spills). */
#define EK_DW_BAR2 __asm__ volatile("" : "+w"(a0), "+w"(a1) : : "memory")
#define EK_DW_BAR4 __asm__ volatile("" : "+w"(a0), "+w"(a1), "+w"(a2), "+w"(a3) : : "memory")
#define EK_DW_ROW3(TAP, BAR, t) TAP(t, 0); TAP((t) + 1, 1); TAP((t) + 2, 2); row += pw; BAR
#define EK_DW_ROW5(TAP, BAR, t) TAP(t, 0); TAP((t) + 1, 1); TAP((t) + 2, 2); TAP((t) + 3, 3); TAP((t) + 4, 4); \
  row += pw; BAR
#define EK_DW_WINDOW(TAP, BAR)                                                                                \
  if (k == 3) {                                                                                               \
    EK_DW_ROW3(TAP, BAR, 0); EK_DW_ROW3(TAP, BAR, 3); EK_DW_ROW3(TAP, BAR, 6);                                \
  } else {                                                                                                    \
    EK_DW_ROW5(TAP, BAR, 0); EK_DW_ROW5(TAP, BAR, 5); EK_DW_ROW5(TAP, BAR, 10); EK_DW_ROW5(TAP, BAR, 15);     \
    EK_DW_ROW5(TAP, BAR, 20);                                                                                 \
  }
static inline __attribute__((always_inline)) void ek_nn_dw_row_rq_body(const int16_t *r0, int32_t pw, const int16_t *wk,
                                                                      int32_t k, int8_t *y, int32_t n, int32_t off,
                                                                      const ek_neon_rq_t *q, const int8_t *tab) {
  int16x8_t wv[4];
  int32_t i, j = 0;
  for (i = 0; i < (k * k + 7) / 8; ++i) wv[i] = vld1q_s16(wk + 8 * i);
  if (n < 16) { /* two steps of 8, the second at n - 8 */
    for (;;) {
      const int16_t *row = r0 + j;
      int32x4_t a0 = vdupq_n_s32(off), a1 = a0;
      EK_DW_WINDOW(EK_DW_TAP, EK_DW_BAR2)
      ek_neon_rq8_store(y + j, a0, a1, q, tab);
      if (j == n - 8) return;
      j = n - 8;
    }
  }
  for (;;) { /* 16 outputs per step, the last at n - 16 */
    const int16_t *row = r0 + j;
    int32x4_t a0 = vdupq_n_s32(off), a1 = a0, a2 = a0, a3 = a0;
    EK_DW_WINDOW(EK_DW_TAP16, EK_DW_BAR4)
    ek_neon_rq16_store(y + j, a0, a1, a2, a3, q, tab);
    if (j + 16 == n) return;
    j = j + 32 <= n ? j + 16 : n - 16;
  }
}
#undef EK_DW_WINDOW
#undef EK_DW_BAR4
#undef EK_DW_BAR2
#undef EK_DW_ROW5
#undef EK_DW_ROW3
#undef EK_DW_TAP16
#undef EK_DW_TAP

__attribute__((noinline)) static void ek_nn_dw_row_rq(const int16_t *r0, int32_t pw, const int16_t *wk, int32_t k,
                                                      int8_t *y, int32_t n, int32_t off, const ek_neon_rq_t *q,
                                                      const int8_t *tab) {
  if (k == 3)
    tab ? ek_nn_dw_row_rq_body(r0, pw, wk, 3, y, n, off, q, tab) : ek_nn_dw_row_rq_body(r0, pw, wk, 3, y, n, off, q, 0);
  else
    tab ? ek_nn_dw_row_rq_body(r0, pw, wk, 5, y, n, off, q, tab) : ek_nn_dw_row_rq_body(r0, pw, wk, 5, y, n, off, q, 0);
}

#if EK_NN_SDOT
/* SDOT 5x5 depthwise, stride 1 (Cortex-A76): on an int8 plane, four taps
 * of a kernel row are one SDOT by element for 4 outputs, their windows
 * (x[j+i .. j+i+3], output i) one TBL of 16 loaded inputs; the fifth taps
 * of kernel rows 0-3 are one SDOT too (a TBL of four rows), and row 4's
 * fifth tap an SDOT with weights (w, 0, 0, 0). 16 outputs per step, from
 * two loads of each of the 5 rows (at j and j + 8): 10 loads, 25 TBL, 28
 * SDOT for 400 MACs (the int16 rows: 50 loads, 100 SMLAL); rows of 8 to 15
 * outputs take two overlapping steps of 8 (5 loads, 13 TBL, 14 SDOT).
 * wv[0]: rows 0-3 taps 0-3 (lane r); wv[1]: row 4 taps 0-3, the fifth taps
 * of rows 0-3, (row 4's fifth, 0, 0, 0). The loads read up to 3 bytes past
 * a row's PW (into the next row, or a gap after the plane).
 * The SDOTs by element are written in asm: from the intrinsic, clang hoists
 * a DUP of each weight lane out of the loop (7 registers more) and then
 * spills the output table's. */
static const uint8_t ek_sdot_dw5_idx[5][16] = {
    {0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6},         /* windows of outputs 0-3 */
    {4, 5, 6, 7, 5, 6, 7, 8, 6, 7, 8, 9, 7, 8, 9, 10},        /* outputs 4-7 */
    {8, 9, 10, 11, 9, 10, 11, 12, 10, 11, 12, 13, 11, 12, 13, 14}, /* outputs 8-11 (row 4's fifth tap of 4-7) */
    {4, 20, 36, 52, 5, 21, 37, 53, 6, 22, 38, 54, 7, 23, 39, 55}, /* fifth taps of rows 0-3, outputs 0-3 */
    {8, 24, 40, 56, 9, 25, 41, 57, 10, 26, 42, 58, 11, 27, 43, 59}}; /* outputs 4-7 */
#define EK_SDOT_LANE(a, x, w, l) __asm__("sdot %0.4s, %1.16b, %2.4b[" #l "]" : "+w"(a) : "w"(x), "w"(w))
/* 8 outputs (a: 0-3, b: 4-7) of the window rows x (rows 0-3) and x4 (row 4) at j. */
#define EK_DW5_SDOT8(a, b, x, x4)                                                                               \
  do {                                                                                                        \
    int8x16_t x4b_ = vqtbl1q_s8(x4, i4);                                                                      \
    EK_SDOT_LANE(a, vqtbl1q_s8(x.val[0], i0), w0, 0); EK_SDOT_LANE(b, vqtbl1q_s8(x.val[0], i4), w0, 0);        \
    EK_SDOT_LANE(a, vqtbl1q_s8(x.val[1], i0), w0, 1); EK_SDOT_LANE(b, vqtbl1q_s8(x.val[1], i4), w0, 1);        \
    EK_SDOT_LANE(a, vqtbl1q_s8(x.val[2], i0), w0, 2); EK_SDOT_LANE(b, vqtbl1q_s8(x.val[2], i4), w0, 2);        \
    EK_SDOT_LANE(a, vqtbl1q_s8(x.val[3], i0), w0, 3); EK_SDOT_LANE(b, vqtbl1q_s8(x.val[3], i4), w0, 3);        \
    EK_SDOT_LANE(a, vqtbl1q_s8(x4, i0), w1, 0); EK_SDOT_LANE(b, x4b_, w1, 0);                                 \
    EK_SDOT_LANE(a, vqtbl4q_s8(x, t0), w1, 1); EK_SDOT_LANE(b, vqtbl4q_s8(x, t4), w1, 1);                     \
    EK_SDOT_LANE(a, x4b_, w1, 2); EK_SDOT_LANE(b, vqtbl1q_s8(x4, i8), w1, 2);                                 \
  } while (0)
#define EK_DW5_LOAD(x, x4, p)                                                                                 \
  int8x16x4_t x = {{vld1q_s8(p), vld1q_s8((p) + pw), vld1q_s8((p) + 2 * pw), vld1q_s8((p) + 3 * pw)}};        \
  int8x16_t x4 = vld1q_s8((p) + 4 * pw)
static inline __attribute__((always_inline)) void ek_nn_sdot_dw5_row_body(const int8_t *r0, int32_t pw, const int8x16_t wv[2],
                                                                         int8_t *y, int32_t n, int32_t off,
                                                                         const ek_neon_rq_t *q, const int8_t *tab) {
  uint8x16_t i0 = vld1q_u8(ek_sdot_dw5_idx[0]), i4 = vld1q_u8(ek_sdot_dw5_idx[1]), i8 = vld1q_u8(ek_sdot_dw5_idx[2]);
  uint8x16_t t0 = vld1q_u8(ek_sdot_dw5_idx[3]), t4 = vld1q_u8(ek_sdot_dw5_idx[4]);
  int8x16_t w0 = wv[0], w1 = wv[1];
  int32_t j = 0;
  if (n < 16) { /* two steps of 8, the second at n - 8 */
    for (;;) {
      const int8_t *p = r0 + j;
      EK_DW5_LOAD(x, x4, p);
      int32x4_t a = vdupq_n_s32(off), b = a;
      EK_DW5_SDOT8(a, b, x, x4);
      ek_neon_rq8_store(y + j, a, b, q, tab);
      if (j == n - 8) return;
      j = n - 8;
    }
  }
  for (;;) { /* 16 outputs per step, the last at n - 16 */
    const int8_t *p = r0 + j;
    int32x4_t a = vdupq_n_s32(off), b = a, c = a, d = a;
    {
      EK_DW5_LOAD(x, x4, p);
      EK_DW5_SDOT8(a, b, x, x4);
    }
    {
      EK_DW5_LOAD(x, x4, p + 8);
      EK_DW5_SDOT8(c, d, x, x4);
    }
    ek_neon_rq16_store(y + j, a, b, c, d, q, tab);
    if (j + 16 == n) return;
    j = j + 32 <= n ? j + 16 : n - 16;
  }
}
#undef EK_DW5_LOAD
#undef EK_DW5_SDOT8
#undef EK_SDOT_LANE
__attribute__((noinline)) static void ek_nn_sdot_dw5_row(const int8_t *r0, int32_t pw, const int8x16_t wv[2], int8_t *y,
                                                         int32_t n, int32_t off, const ek_neon_rq_t *q, const int8_t *tab) {
  if (tab)
    ek_nn_sdot_dw5_row_body(r0, pw, wv, y, n, off, q, tab);
  else
    ek_nn_sdot_dw5_row_body(r0, pw, wv, y, n, off, q, (const int8_t *)0);
}

/* ek_nn_sdot_dw5_row's wv[0] and wv[1] as TBL indices into a channel's 25
 * weights loaded as wc[0..15], wc[9..24] (index 16 + i: wc[9 + i]; 255: 0). */
static const uint8_t ek_sdot_dw5_w[2][16] = {
    {0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 23, 24, 25},                /* rows 0-3, taps 0-3 */
    {27, 28, 29, 30, 4, 9, 14, 26, 31, 255, 255, 255, 255, 255, 255, 255}}; /* row 4 taps 0-3; fifth taps; (w24, 0, 0, 0) */

/* A 5x5 stride-1 depthwise layer whose channels all take the high-word
 * form and whose rows have 8 or more outputs, on ek_nn_sdot_dw5_row: each
 * channel's plane copied as int8 into the scratch (sized for the int16
 * plane: room for the gap), the padding (the zero point) around it written
 * once, for the first channel; the weights to wv by two TBL. */
static void ek_nn_sdot_depthwise5(const int8_t *x, const int8_t *w, const int32_t *h, int8_t *y, int8_t *plane) {
  int32_t C = h[EK_NN_OC], H = h[EK_NN_H], W = h[EK_NN_W], OH = h[EK_NN_OH], OW = h[EK_NN_OW];
  int32_t sh = h[EK_NN_SH], pt = h[EK_NN_PT], pl = h[EK_NN_PL], PW = OW + 4, PH = (OH - 1) * sh + 5, c, i, j;
  int32_t j0 = pl < PW ? pl : PW, j1 = pl + W < PW ? pl + W : PW;
  int8_t pad = (int8_t)h[EK_NN_PADV];
  const int8_t *tab = ek_nn_table(h);
  uint8x16_t wi0 = vld1q_u8(ek_sdot_dw5_w[0]), wi1 = vld1q_u8(ek_sdot_dw5_w[1]);
  for (c = 0; c < C; ++c) {
    const int8_t *xc = x + c * H * W, *wc = w + c * 25;
    int8_t *yc = y + c * OH * OW;
    int32_t n = h[EK_NN_HDR + 2 * C + c];
    ek_neon_rq_t q = {vdupq_n_s32(h[EK_NN_HDR + C + c]), vdupq_n_s32(31 - n), vdupq_n_s16((int16_t)h[EK_NN_ZOUT]),
                      vdup_n_s8((int8_t)h[EK_NN_QMIN]), vdup_n_s8((int8_t)h[EK_NN_QMAX])};
    int8x16x2_t wt = {{vld1q_s8(wc), vld1q_s8(wc + 9)}}; /* the 25 weights: wc[0..15], wc[9..24] */
    int8x16_t wv[2] = {vqtbl2q_s8(wt, wi0), vqtbl2q_s8(wt, wi1)};
    for (i = 0; i < PH; ++i) { /* the padding is the same for every channel: written for the first only */
      int32_t iy = i - pt;
      int8_t *row = plane + i * PW;
      if (iy < 0 || iy >= H) {
        if (!c)
          for (j = 0; j < PW; ++j) row[j] = pad;
        continue;
      }
      const int8_t *src = xc + iy * W - pl;
      if (!c) {
        for (j = 0; j < j0; ++j) row[j] = pad;
        for (j = j1; j < PW; ++j) row[j] = pad;
      }
      for (j = j0; j < j1; ++j) row[j] = src[j];
    }
    for (i = 0; i < OH; ++i, yc += OW) ek_nn_sdot_dw5_row(plane + i * sh * PW, PW, wv, yc, OW, h[EK_NN_HDR + c], &q, tab);
  }
}
#endif
#else
/* One output row of any kh x kw depthwise window into acc; wk holds the
 * channel's weights already widened to ek_dw_t. */
__attribute__((noinline)) static void ek_nn_dw_row(const ek_dw_t *r0, int32_t pw, int32_t sw, const ek_dw_t *wk,
                                                   int32_t kh, int32_t kw, int32_t *acc, int32_t n) {
  int32_t j, r, s;
  for (j = 0; j < n; ++j, r0 += sw) {
    const ek_dw_t *row = r0, *w = wk;
    ek_mac_t a = 0;
    if (kw == 5) /* unrolled: MobileNetV3's 5x5 */
      for (r = 0; r < kh; ++r, row += pw, w += 5) {
        EK_MAC(a, (ek_mac_t)w[0], (ek_mac_t)row[0]); EK_MAC(a, (ek_mac_t)w[1], (ek_mac_t)row[1]);
        EK_MAC(a, (ek_mac_t)w[2], (ek_mac_t)row[2]); EK_MAC(a, (ek_mac_t)w[3], (ek_mac_t)row[3]);
        EK_MAC(a, (ek_mac_t)w[4], (ek_mac_t)row[4]);
      }
    else
      for (r = 0; r < kh; ++r, row += pw, w += kw)
        for (s = 0; s < kw; ++s) EK_MAC(a, (ek_mac_t)w[s], (ek_mac_t)row[s]);
    acc[j] = (int32_t)a;
  }
}
#endif

#if EK_NN_RV64 && !EK_NN_RVV
/* riscv64 depthwise windows of 16 to 63 taps and 2 rows or more (5x5, 7x7): three horizontally
 * adjacent outputs per 64-bit MAC. Packed row P[c] = x[c] + x[c + sw] 2^21
 * + x[c + 2 sw] 2^42 of the padded input row, so output triple t of a row
 * is sum over taps of w[r][s] * P_r[3 sw t + s] with each output in a
 * 21-bit lane (|sum| <= 63 * 2^14 < 2^20): one `ld`, `mul`, `add` per
 * three MACs, where the float path took one `fmadd.s` per MAC plus loads.
 * Rows are packed right to left, p = x[c] + (p << 21): one shift and add
 * per element; the x[c + 3 sw] 2^63 left in bit 63 only touches the top
 * lane's 22nd bit, which ek_rv_dw_unpack ignores. kh packed rows live in a
 * ring (row i in slot i % kh); rows of padding share one row packed per
 * layer. 3x3 windows stay on the float rows: their 9 taps do not pay for
 * the packing. Scratch (nn_rv64.dw_scratch_bytes): the ring and the
 * padding row ((kh + 1) x NX int64), the weights (kh kw int64), T packed
 * sums, 3 T int32 accumulators. */
#define EK_RV_DW_MIN_TAPS 16
#define EK_RV_DW_MAX_TAPS 63

/* The three outputs of a packed sum a into acc[0..2]. */
static inline __attribute__((always_inline)) void ek_rv_dw_unpack(int64_t a, int32_t *acc) {
  int64_t s0 = (int64_t)((uint64_t)a << 43) >> 43, u = (a - s0) >> EK_RV_LANE;
  int64_t s1 = (int64_t)((uint64_t)u << 43) >> 43;
  acc[0] = (int32_t)s0;
  acc[1] = (int32_t)s1;
  acc[2] = (int32_t)((int64_t)((uint64_t)(u - s1) << 22) >> 43);
}

/* One pass of an output row over kernel rows r and r + 1 (nr = 2) or r
 * alone: packed sums a64[t] (from 0 in the first pass), unpacked into
 * acc[3 t + l] in the last. Two rows per pass keep 2 kw weights in
 * registers (all 25 of a 5x5 spilled: 37 instructions per output, 34 so). */
/* The high-word requantization of one channel, its constants in registers
 * (ek_nn_requant_body's form), and where a depthwise row's outputs go. */
typedef struct {
  int32_t off, m, n, zp, lo, hi;
  int64_t r; /* 2^(n-1) */
} ek_rv_rq_t;
static inline __attribute__((always_inline)) int32_t ek_rv_rq(int32_t s, const ek_rv_rq_t *q) {
  int32_t v = (int32_t)(((int64_t)(int32_t)((uint32_t)s + (uint32_t)q->off) * q->m + q->r) >> q->n) + q->zp;
  v = v < q->lo ? q->lo : v;
  return v > q->hi ? q->hi : v;
}
typedef struct {
  ek_rv_rq_t rq;
  const int8_t *tab; /* the layer's output table or NULL */
  int8_t *y;         /* the row's first output */
  int32_t n;         /* outputs in the row */
} ek_rv_dw_out_t;

/* mode 0: the last pass unpacks into acc; 1: it requantizes into out->y
 * (tab: out->tab or a constant NULL). */
static inline __attribute__((always_inline)) void ek_rv_dw_pass(const int64_t *p0, const int64_t *p1, const int64_t *w0,
                                                                int32_t kw, int32_t nr, int32_t step, int32_t T,
                                                                int64_t *a64, int32_t *acc, int32_t first, int32_t last,
                                                                int32_t mode, const ek_rv_dw_out_t *out,
                                                                const int8_t *tab) {
  int64_t wl[2 * EK_RV_DW_MAX_TAPS]; /* registers once unrolled (a64 stores could alias w0) */
  ek_rv_rq_t rq;
  int8_t *y = (int8_t *)0;
  int32_t t, s, n = 0;
  for (s = 0; s < nr * kw; ++s) wl[s] = w0[s];
  if (mode) rq = out->rq, y = out->y, n = out->n;
  for (t = 0; t < T; ++t, p0 += step, p1 += step, y += 3, n -= 3) {
    int64_t a = first ? 0 : a64[t];
    for (s = 0; s < kw; ++s) a += wl[s] * p0[s];
    if (nr == 2)
      for (s = 0; s < kw; ++s) a += wl[kw + s] * p1[s];
    if (!last) {
      a64[t] = a;
    } else if (!mode) {
      ek_rv_dw_unpack(a, acc + 3 * t);
    } else {
      int32_t v[3];
      ek_rv_dw_unpack(a, v);
      EK_NN_STORE(y, ek_rv_rq(v[0], &rq), tab);
      if (n > 1) EK_NN_STORE(y + 1, ek_rv_rq(v[1], &rq), tab);
      if (n > 2) EK_NN_STORE(y + 2, ek_rv_rq(v[2], &rq), tab);
    }
  }
}

/* One output row from the kh packed rows (kh >= 2): into acc[3 t + l]
 * for t < T (mode 0), or requantized into out (mode 1). */
static inline __attribute__((always_inline)) void ek_rv_dw_row_body(const int64_t *const *rows, const int64_t *wk,
                                                                    int32_t kh, int32_t kw, int32_t step, int32_t T,
                                                                    int64_t *a64, int32_t *acc, int32_t mode,
                                                                    const ek_rv_dw_out_t *out, const int8_t *tab) {
  int32_t r = 2;
  ek_rv_dw_pass(rows[0], rows[1], wk, kw, 2, step, T, a64, acc, 1, kh == 2, mode, out, tab);
  for (; r + 2 < kh; r += 2)
    ek_rv_dw_pass(rows[r], rows[r + 1], wk + r * kw, kw, 2, step, T, a64, acc, 0, 0, mode, out, tab);
  if (r + 2 == kh)
    ek_rv_dw_pass(rows[r], rows[r + 1], wk + r * kw, kw, 2, step, T, a64, acc, 0, 1, mode, out, tab);
  else if (r < kh)
    ek_rv_dw_pass(rows[r], rows[r], wk + r * kw, kw, 1, step, T, a64, acc, 0, 1, mode, out, tab);
}

/* out: NULL (into acc, the channel's shift is not of the high-word form) or the requantized row's. */
__attribute__((noinline)) static void ek_nn_rv_dw_row(const int64_t *const *rows, const int64_t *wk, int32_t kh,
                                                      int32_t kw, int32_t step, int32_t T, int64_t *a64,
                                                      int32_t *acc, const ek_rv_dw_out_t *out) {
  if (kh == 5 && kw == 5) {
    if (!out)
      ek_rv_dw_row_body(rows, wk, 5, 5, step, T, a64, acc, 0, out, (const int8_t *)0);
    else if (out->tab)
      ek_rv_dw_row_body(rows, wk, 5, 5, step, T, a64, acc, 1, out, out->tab);
    else
      ek_rv_dw_row_body(rows, wk, 5, 5, step, T, a64, acc, 1, out, (const int8_t *)0);
  } else {
    ek_rv_dw_row_body(rows, wk, kh, kw, step, T, a64, acc, out != 0, out, out ? out->tab : (const int8_t *)0);
  }
}

/* Packed row dst[c], c < NX, of the input row src (NULL: a padding row);
 * columns outside [pl, pl + W) read the pad value. */
__attribute__((noinline)) static void ek_nn_rv_dw_pack(const int8_t *src, int32_t W, int32_t pl, int32_t pad, int32_t sw, int32_t NX,
                             int64_t *dst) {
  int32_t j0 = pl < NX ? pl : NX, j1 = pl + W < NX ? pl + W : NX, r0, c;
  if (!src) {
    int64_t v = (int64_t)((uint64_t)(int64_t)pad * (1 + ((uint64_t)1 << 21) + ((uint64_t)1 << 42)));
    for (c = 0; c < NX; ++c) dst[c] = v;
    return;
  }
  if (sw == 1) { /* pointers, no index arithmetic: 7 instructions per element */
    uint64_t p = 0;
    int64_t *d = dst + NX;
    const int8_t *sp = src + (j1 - pl);
    while (d > dst + j1) *--d = (int64_t)(p = (uint64_t)(int64_t)pad + (p << 21));
    while (d > dst + j0) *--d = (int64_t)(p = (uint64_t)(int64_t)*--sp + (p << 21));
    while (d > dst) *--d = (int64_t)(p = (uint64_t)(int64_t)pad + (p << 21));
    return;
  }
  for (r0 = 0; r0 < sw; ++r0) {
    uint64_t p = 0;
    for (c = NX - 1 - ((NX - 1 - r0) % sw); c >= j1; c -= sw) dst[c] = (int64_t)(p = (uint64_t)(int64_t)pad + (p << 21));
    for (; c >= j0; c -= sw) dst[c] = (int64_t)(p = (uint64_t)(int64_t)src[c - pl] + (p << 21));
    for (; c >= 0; c -= sw) dst[c] = (int64_t)(p = (uint64_t)(int64_t)pad + (p << 21));
  }
}

static void ek_nn_rv_depthwise(const int8_t *x, const int8_t *w, const int32_t *h, int8_t *y, void *scratch) {
  int32_t C = h[EK_NN_OC], H = h[EK_NN_H], W = h[EK_NN_W], OH = h[EK_NN_OH], OW = h[EK_NN_OW];
  int32_t kh = h[EK_NN_KH], kw = h[EK_NN_KW], sh = h[EK_NN_SH], sw = h[EK_NN_SW], pt = h[EK_NN_PT], pl = h[EK_NN_PL];
  int32_t T = (OW + 2) / 3, NX = 3 * sw * (T - 1) + kw + 2 * sw, c, o, r, next;
  int64_t *ring = (int64_t *)__builtin_assume_aligned(scratch, 8), *pad_row = ring + kh * NX, *wk = pad_row + NX;
  int64_t *a64 = wk + kh * kw;
  int32_t *acc = (int32_t *)(a64 + T);
  const int64_t *rows[EK_RV_DW_MAX_TAPS];
  ek_nn_rv_dw_pack((const int8_t *)0, W, pl, h[EK_NN_PADV], sw, NX, pad_row);
  for (c = 0; c < C; ++c) {
    const int8_t *xc = x + c * H * W, *wc = w + c * kh * kw;
    int8_t *yc = y + c * OH * OW;
    int32_t n = h[EK_NN_HDR + 2 * C + c], high = EK_NN_HIGH_WORD(n);
    ek_rv_dw_out_t out = {{h[EK_NN_HDR + c], h[EK_NN_HDR + C + c], n, h[EK_NN_ZOUT], h[EK_NN_QMIN], h[EK_NN_QMAX],
                           (int64_t)1 << ((n - 1) & 63)},
                          ek_nn_table(h), yc, OW};
    for (r = 0; r < kh * kw; ++r) wk[r] = wc[r];
    for (o = 0, next = 0; o < OH; ++o, yc += OW) {
      for (; next < o * sh + kh; ++next) /* rows inside the input; the padding rows share pad_row */
        if (next - pt >= 0 && next - pt < H)
          ek_nn_rv_dw_pack(xc + (next - pt) * W, W, pl, h[EK_NN_PADV], sw, NX, ring + (next % kh) * NX);
      for (r = 0; r < kh; ++r)
        rows[r] = o * sh + r - pt >= 0 && o * sh + r - pt < H ? ring + ((o * sh + r) % kh) * NX : pad_row;
      out.y = yc;
      ek_nn_rv_dw_row(rows, wk, kh, kw, 3 * sw, T, a64, acc, high ? &out : (const ek_rv_dw_out_t *)0);
      if (!high) ek_nn_requant_row(acc, yc, OW, h, c);
    }
  }
}
#endif

#if EK_NN_RVV
/* RVV depthwise, any window and stride: per channel the padded plane as
 * int16 (scratch: PH * PW int16, then a row of OW int32 sums), per output
 * row up to 32 outputs per vector: each tap is one load of the plane row
 * (unit-stride, or strided by sw) and one vwmacc.vx of the tap's weight
 * into int32 lanes (exact, as the conv kernel's); channels of the
 * high-word form requantize in the lanes (ek_rvv_rq_store), others store
 * the row's sums for ek_nn_requant_row. noinline: tests see it run. */
/* The window's sums of vl outputs whose first tap reads rp (the plane's rows PW apart, outputs sw
 * apart): one load and one vwmacc.vx per tap. Inlined with constant kw and sw (3x3, 5x5, strides 1
 * and 2) the taps of a row unroll, so no loop or vsetvli between them. */
static inline __attribute__((always_inline)) vint32m4_t ek_rvv_dw_window(const int16_t *rp, int32_t PW,
                                                                        const int8_t *wt, int32_t kh, int32_t kw,
                                                                        int32_t sw, size_t vl) {
  vint32m4_t a = __riscv_vmv_v_x_i32m4(0, vl);
  int32_t r, t;
  for (r = 0; r < kh; ++r, rp += PW, wt += kw)
    for (t = 0; t < kw; ++t)
      a = __riscv_vwmacc_vx_i32m4(a, (int16_t)wt[t], sw == 1 ? __riscv_vle16_v_i16m2(rp + t, vl)
                                                             : __riscv_vlse16_v_i16m2(rp + t, 2 * sw, vl), vl);
  return a;
}
__attribute__((noinline)) static void ek_nn_rvv_depthwise(const int8_t *x, const int8_t *w, const int32_t *h, int8_t *y, void *scratch) {
  int32_t C = h[EK_NN_OC], H = h[EK_NN_H], W = h[EK_NN_W], OH = h[EK_NN_OH], OW = h[EK_NN_OW];
  int32_t kh = h[EK_NN_KH], kw = h[EK_NN_KW], sh = h[EK_NN_SH], sw = h[EK_NN_SW], pt = h[EK_NN_PT], pl = h[EK_NN_PL];
  int32_t PW = (OW - 1) * sw + kw, PH = (OH - 1) * sh + kh, c, i, j, x0;
  int32_t j0 = pl < PW ? pl : PW, j1 = pl + W < PW ? pl + W : PW;
  int32_t zp = h[EK_NN_ZOUT], lo = h[EK_NN_QMIN], hi = h[EK_NN_QMAX];
  int16_t *plane = (int16_t *)scratch, pad = (int16_t)h[EK_NN_PADV];
  int32_t *acc = (int32_t *)scratch + (PH * PW * 2 + 3) / 4;
  const int32_t *q = h + EK_NN_HDR;
  const int8_t *tab = ek_nn_table(h);
  for (c = 0; c < C; ++c) {
    const int8_t *xc = x + c * H * W, *wc = w + c * kh * kw;
    int8_t *yc = y + c * OH * OW;
    int32_t n = q[2 * C + c], high = EK_NN_HIGH_WORD(n);
    for (i = 0; i < PH; ++i) {
      int32_t iy = i - pt;
      int16_t *row = plane + i * PW;
      const int8_t *src = xc + iy * W - pl;
      if (iy < 0 || iy >= H) {
        for (j = 0; j < PW; ++j) row[j] = pad;
        continue;
      }
      for (j = 0; j < j0; ++j) row[j] = pad;
      for (; j < j1; ++j) row[j] = src[j];
      for (; j < PW; ++j) row[j] = pad;
    }
    for (i = 0; i < OH; ++i, yc += OW) {
      const int16_t *r0 = plane + i * sh * PW;
      for (x0 = 0; x0 < OW; x0 += EK_RVV_OCB) {
        size_t vl = __riscv_vsetvl_e32m4((size_t)(OW - x0 < EK_RVV_OCB ? OW - x0 : EK_RVV_OCB));
        const int16_t *rp = r0 + x0 * sw;
        vint32m4_t a;
        if (kw == 3 && sw == 1)
          a = ek_rvv_dw_window(rp, PW, wc, kh, 3, 1, vl);
        else if (kw == 3 && sw == 2)
          a = ek_rvv_dw_window(rp, PW, wc, kh, 3, 2, vl);
        else if (kw == 5 && sw == 1)
          a = ek_rvv_dw_window(rp, PW, wc, kh, 5, 1, vl);
        else if (kw == 5 && sw == 2)
          a = ek_rvv_dw_window(rp, PW, wc, kh, 5, 2, vl);
        else
          a = ek_rvv_dw_window(rp, PW, wc, kh, kw, sw, vl);
        if (high)
          ek_rvv_rq_store(a, __riscv_vmv_v_x_i32m4(q[c], vl), __riscv_vmv_v_x_i32m4(q[C + c], vl),
                          __riscv_vmv_v_x_u32m4((uint32_t)(n - 32), vl), zp, lo, hi, tab, yc + x0, 1, vl);
        else
          __riscv_vse32_v_i32m4(acc + x0, a, vl);
      }
      if (!high) ek_nn_requant_row(acc, yc, OW, h, c);
    }
  }
}
#endif

/* Scratch: the padded plane (PH * PW ek_dw_t, rounded to a word), then one
 * row of accumulators (OW int32), then kh * kw words for the weights
 * (widened to ek_dw_t, or packed in pairs for the DSP 5x5 rows). */
static void ek_nn_depthwise(const int8_t *x, const int8_t *w, const int32_t *h, int8_t *y, void *scratch) {
  int32_t C = h[EK_NN_OC], H = h[EK_NN_H], W = h[EK_NN_W], OH = h[EK_NN_OH], OW = h[EK_NN_OW];
  int32_t kh = h[EK_NN_KH], kw = h[EK_NN_KW], sh = h[EK_NN_SH], sw = h[EK_NN_SW], pt = h[EK_NN_PT], pl = h[EK_NN_PL];
  int32_t PW = (OW - 1) * sw + kw, PH = (OH - 1) * sh + kh, c, i, j, r;
  int32_t j0 = pl < PW ? pl : PW, j1 = pl + W < PW ? pl + W : PW;
  ek_dw_t *plane = (ek_dw_t *)scratch, pad = (ek_dw_t)h[EK_NN_PADV];
  int32_t *acc = (int32_t *)scratch + (PH * PW * (int32_t)sizeof(ek_dw_t) + 3) / 4;
  ek_dw_t *wk = (ek_dw_t *)(acc + OW);
#if EK_NN_DSP
  int32_t *wp = acc + OW; /* 5x5: per row (w0, w1), (w2, w3) packed, w4 (15 words of the kh * kw reserved) */
#endif
#if EK_NN_SDOT
  if (kh == 5 && kw == 5 && sw == 1 && OW >= 8 && ek_nn_all_high_word(h)) {
    ek_nn_sdot_depthwise5(x, w, h, y, (int8_t *)scratch);
    return;
  }
#endif
#if EK_NN_RVV
  ek_nn_rvv_depthwise(x, w, h, y, scratch);
  return;
#elif EK_NN_RV64
  if (kh >= 2 && kh * kw >= EK_RV_DW_MIN_TAPS && kh * kw <= EK_RV_DW_MAX_TAPS) { /* nn_rv64.dw_scratch_bytes */
    ek_nn_rv_depthwise(x, w, h, y, scratch);
    return;
  }
#endif
  for (c = 0; c < C; ++c) {
    const int8_t *xc = x + c * H * W, *wc = w + c * kh * kw;
    int8_t *yc = y + c * OH * OW;
#if EK_NN_DSP
    if (kh == 5 && kw == 5)
      for (r = 0; r < 5; ++r) {
        const int8_t *k = wc + 5 * r;
        wp[3 * r] = (int32_t)((uint16_t)k[0] | (uint32_t)(uint16_t)k[1] << 16);
        wp[3 * r + 1] = (int32_t)((uint16_t)k[2] | (uint32_t)(uint16_t)k[3] << 16);
        wp[3 * r + 2] = k[4];
      }
    else
#endif
      for (r = 0; r < kh * kw; ++r) wk[r] = (ek_dw_t)wc[r];
    for (i = 0; i < PH; ++i) {
      int32_t iy = i - pt;
      ek_dw_t *row = plane + i * PW;
      if (iy < 0 || iy >= H) {
        for (j = 0; j < PW; ++j) row[j] = pad;
        continue;
      }
      const int8_t *src = xc + iy * W - pl;
      for (j = 0; j < j0; ++j) row[j] = pad;
      for (; j < j1; ++j) row[j] = (ek_dw_t)src[j];
      for (; j < PW; ++j) row[j] = pad;
    }
#if EK_NN_NEON
    {
      int32_t n = h[EK_NN_HDR + 2 * C + c];
      if (sw == 1 && kh == kw && (kh == 3 || kh == 5) && OW >= 8 && EK_NN_HIGH_WORD(n)) {
        ek_neon_rq_t q = {vdupq_n_s32(h[EK_NN_HDR + C + c]), vdupq_n_s32(31 - n), vdupq_n_s16((int16_t)h[EK_NN_ZOUT]),
                          vdup_n_s8((int8_t)h[EK_NN_QMIN]), vdup_n_s8((int8_t)h[EK_NN_QMAX])};
        for (i = 0; i < OH; ++i, yc += OW)
          ek_nn_dw_row_rq(plane + i * sh * PW, PW, wk, kh, yc, OW, h[EK_NN_HDR + c], &q, ek_nn_table(h));
        continue;
      }
    }
    for (i = 0; i < OH; ++i, yc += OW) {
      ek_nn_dw_row(plane + i * sh * PW, PW, sw, wk, kh, kw, acc, OW);
      ek_nn_requant_row(acc, yc, OW, h, c);
    }
#else
#if !EK_NN_DSP
    const int32_t *q = h + EK_NN_HDR;
    if (kh == 3 && kw == 3 && sw == 1 && EK_NN_HIGH_WORD(q[2 * C + c])) {
      ek_rq_fast_t rq = {q[c], q[C + c], 1 << (q[2 * C + c] - 33), q[2 * C + c] - 32, h[EK_NN_ZOUT], h[EK_NN_QMIN],
                         h[EK_NN_QMAX], ek_nn_table(h)};
      for (i = 0; i < OH; ++i, yc += OW) ek_nn_dw3_row_q(plane + i * sh * PW, PW, wc, yc, OW, &rq);
      continue;
    }
#endif
    for (i = 0; i < OH; ++i, yc += OW) {
      if (kh == 3 && kw == 3) {
        ek_nn_dw3_row(plane + i * sh * PW, PW, sw, wc, acc, OW);
      } else if (kh == 5 && kw == 5) {
#if EK_NN_DSP
        ek_nn_dw5_row(plane + i * sh * PW, PW, sw, wp, acc, OW);
#else
        ek_nn_dw5_row(plane + i * sh * PW, PW, sw, wk, acc, OW);
#endif
      } else {
        ek_nn_dw_row(plane + i * sh * PW, PW, sw, wk, kh, kw, acc, OW);
      }
      ek_nn_requant_row(acc, yc, OW, h, c);
    }
#endif
  }
}

/* The packed-call entry the generated step table points at:
 * args = (x, packed weights, int32 parameters, y, scratch). */
int32_t ek_nn_s8(void *self, const ek_ffi_any_t *args, int32_t num_args, ek_ffi_any_t *result) {
  const ek_dltensor_t *x = (const ek_dltensor_t *)args[0].v.v_ptr, *w = (const ek_dltensor_t *)args[1].v.v_ptr;
  const ek_dltensor_t *prm = (const ek_dltensor_t *)args[2].v.v_ptr, *y = (const ek_dltensor_t *)args[3].v.v_ptr;
  const ek_dltensor_t *ws = (const ek_dltensor_t *)args[4].v.v_ptr;
  const int32_t *h = (const int32_t *)prm->data;
  (void)self; (void)result;
  if (num_args != 5) return -1;
  if (h[EK_NN_KIND] == EK_NN_DEPTHWISE)
    ek_nn_depthwise((const int8_t *)x->data, (const int8_t *)w->data, h, (int8_t *)y->data, ws->data);
  else
    ek_nn_gemm((const int8_t *)x->data, (const int8_t *)w->data, h, (int8_t *)y->data, ws->data);
  return 0;
}
/* An int8 -> int8 lookup table (integer/lut.py: HardSwish, Sigmoid, ... of
 * one int8 tensor): y[i] = table[x[i] + 128]. args = (x, table, y). */
int32_t ek_nn_lut_s8(void *self, const ek_ffi_any_t *args, int32_t num_args, ek_ffi_any_t *result) {
  const ek_dltensor_t *x = (const ek_dltensor_t *)args[0].v.v_ptr, *t = (const ek_dltensor_t *)args[1].v.v_ptr;
  const ek_dltensor_t *y = (const ek_dltensor_t *)args[2].v.v_ptr;
  const int8_t *src = (const int8_t *)x->data;
  const uint8_t *table = (const uint8_t *)t->data + 128;
  uint8_t *dst = (uint8_t *)y->data, *end;
  int32_t n = 1, i;
  (void)self; (void)result;
  if (num_args != 3) return -1;
  for (i = 0; i < y->ndim; ++i) n *= (int32_t)y->shape[i];
  for (end = dst + n; dst < end;) *dst++ = table[*src++];
  return 0;
}
/* Sum of an int8 tensor over its trailing axes into int32 (the mean of a
 * squeeze-excite block): y[i] = sum(x[i * inner .. (i + 1) * inner)).
 * args = (x, y). */
int32_t ek_nn_sum_s8(void *self, const ek_ffi_any_t *args, int32_t num_args, ek_ffi_any_t *result) {
  const ek_dltensor_t *x = (const ek_dltensor_t *)args[0].v.v_ptr, *y = (const ek_dltensor_t *)args[1].v.v_ptr;
  const int8_t *src = (const int8_t *)x->data;
  int32_t *dst = (int32_t *)y->data;
  int32_t total = 1, outer = 1, inner, i, j; /* 32-bit: an int64 divide would call __aeabi_ldivmod */
  (void)self; (void)result;
  if (num_args != 2) return -1;
  for (i = 0; i < x->ndim; ++i) total *= (int32_t)x->shape[i];
  for (i = 0; i < y->ndim; ++i) outer *= (int32_t)y->shape[i];
  inner = total / outer;
#if EK_NN_RVV
  for (i = 0; i < outer; ++i, src += inner) { /* 32 int32 lane sums (tail-undisturbed adds), then one vredsum */
    size_t vlmax = __riscv_vsetvlmax_e32m4();
    vint32m4_t a = __riscv_vmv_v_x_i32m4(0, vlmax);
    for (j = 0; j < inner;) {
      size_t vl = __riscv_vsetvl_e32m4((size_t)(inner - j));
      a = __riscv_vadd_vv_i32m4_tu(a, a, __riscv_vsext_vf4_i32m4(__riscv_vle8_v_i8m1(src + j, vl), vl), vl);
      j += (int32_t)vl;
    }
    dst[i] = __riscv_vmv_x_s_i32m1_i32(__riscv_vredsum_vs_i32m4_i32m1(a, __riscv_vmv_s_x_i32m1(0, 1), vlmax));
  }
  return 0;
#endif
  for (i = 0; i < outer; ++i) {
    int32_t acc = 0;
    for (j = 0; j < inner; ++j) acc += *src++;
    dst[i] = acc;
  }
  return 0;
}
/* Round to nearest, ties to even: the arithmetic of nearbyintf in
 * firmware_stubs/runtime/ek_libc.c, inlined (TVM's quantize kernel called it
 * per element). */
static inline __attribute__((always_inline)) float ek_nearbyint(float x) {
  const float two23 = 8388608.0f;
  float ax = x < 0.0f ? -x : x, r;
  if (!(ax < two23)) return x;
  r = (ax + two23) - two23;
  return x < 0.0f ? -r : r;
}
/* float32 -> int8 with one scale and zero point (relax.quantize at a
 * model's input), as TVM legalizes it: clamp(nearbyint(x / scale) + zp).
 * It may run in place (y at x's address; the arena planner places y there
 * when x dies here): element i is written after x[i] is read, at byte i,
 * below every float not yet read. args = (x, params, y); params: float32
 * (scale, zero point). */
int32_t ek_nn_quantize_s8(void *self, const ek_ffi_any_t *args, int32_t num_args, ek_ffi_any_t *result) {
  const ek_dltensor_t *x = (const ek_dltensor_t *)args[0].v.v_ptr, *prm = (const ek_dltensor_t *)args[1].v.v_ptr;
  const ek_dltensor_t *y = (const ek_dltensor_t *)args[2].v.v_ptr;
  const float *src = (const float *)x->data, *q = (const float *)prm->data;
  int8_t *dst = (int8_t *)y->data;
  float scale = q[0], zp = q[1];
  int32_t n = 1, i;
  (void)self; (void)result;
  if (num_args != 3) return -1;
  for (i = 0; i < y->ndim; ++i) n *= (int32_t)y->shape[i];
  i = 0;
#if EK_NN_NEON
  { /* 16 at a time, the same IEEE operations: FDIV, FRINTN (ties to even, as ek_nearbyint), FADD, then
     * FMINNM/FMAXNM (a NaN clamps to 127 as the compares below) and FCVTZS of the integral result.
     * In place: bytes i..i+15 are written after floats i..i+15 (bytes 4i..4i+63) are read. */
    float32x4_t vs = vdupq_n_f32(scale), vz = vdupq_n_f32(zp), hi = vdupq_n_f32(127.0f), lo = vdupq_n_f32(-128.0f);
    int32x4_t r[4];
    int32_t j;
    for (; i + 16 <= n; i += 16) {
      for (j = 0; j < 4; ++j) {
        float32x4_t v = vaddq_f32(vrndnq_f32(vdivq_f32(vld1q_f32(src + i + 4 * j), vs)), vz);
        r[j] = vcvtq_s32_f32(vmaxnmq_f32(vminnmq_f32(v, hi), lo));
      }
      vst1q_s8(dst + i, vcombine_s8(vmovn_s16(vcombine_s16(vmovn_s32(r[0]), vmovn_s32(r[1]))),
                                    vmovn_s16(vcombine_s16(vmovn_s32(r[2]), vmovn_s32(r[3])))));
    }
  }
#endif
#if EK_NN_RVV
  { /* up to 32 at a time: vfdiv (IEEE, as the division below), vfcvt.x.f.v in the dynamic rounding
     * mode (round to nearest even, Linux's default; a NaN gives 2^31 - 1, +-inf saturate: 127, 127,
     * -128 as the compares below), the integral zero point added after a clamp to +-256 (no
     * overflow; the sum is the float one), clamp, two narrowings. In place as the loop below. */
    int32_t z = (int32_t)zp;
    while (i < n) {
      size_t vl = __riscv_vsetvl_e32m4((size_t)(n - i));
      vint32m4_t r = __riscv_vfcvt_x_f_v_i32m4(__riscv_vfdiv_vf_f32m4(__riscv_vle32_v_f32m4(src + i, vl), scale, vl), vl);
      r = __riscv_vadd_vx_i32m4(__riscv_vmin_vx_i32m4(__riscv_vmax_vx_i32m4(r, -256, vl), 256, vl), z, vl);
      r = __riscv_vmin_vx_i32m4(__riscv_vmax_vx_i32m4(r, -128, vl), 127, vl);
      __riscv_vse8_v_i8m1(dst + i, __riscv_vncvt_x_x_w_i8m1(__riscv_vncvt_x_x_w_i16m2(r, vl), vl), vl);
      i += (int32_t)vl;
    }
  }
#endif
  for (; i < n; ++i) {
    float v = ek_nearbyint(src[i] / scale) + zp;
    v = v < 127.0f ? v : 127.0f;
    dst[i] = (int8_t)(v > -128.0f ? v : -128.0f);
  }
  return 0;
}
/* y = requantize((a - za) * (s - zs)) of two int8 tensors, s broadcast
 * over the trailing axes of a (squeeze-excite: one value per channel): a
 * and y are [outer][inner], s is [outer]. The product is exact in int32 (|.| <= 255 * 255); the
 * requantization is core/fixedpoint.py's, as in ek_nn_requant (n as there). args = (a, s, params, y); params: outer,
 * inner, za, zs, m, n, zy, qmin, qmax. */
/* The requantized products of count int8 values x (one channel, s = its
 * scale value - zs) into y; y may be x. */
static void ek_nn_mul_row(const int8_t *x, int8_t *y, int32_t count, int32_t s, const int32_t *q) {
  int32_t za = q[2], m = q[4], n = q[5], zy = q[6], lo = q[7], hi = q[8], i;
#if EK_NN_RV64
  if (EK_NN_HIGH_WORD(n)) { /* ((x - za) s m + 2^(n-1)) >> n as x (s m) + (2^(n-1) - za s m): one mul per value */
    int64_t sm = (int64_t)s * m, b = ((int64_t)1 << (n - 1)) - za * sm;
    for (i = 0; i < count; ++i) {
      int32_t v = (int32_t)((x[i] * sm + b) >> n) + zy;
      v = v < lo ? lo : v;
      y[i] = (int8_t)(v > hi ? hi : v);
    }
    return;
  }
#endif
  if (EK_NN_HIGH_WORD(n)) {
    int32_t rnd = 1 << (n - 33), sh = n - 32;
    i = 0;
#if EK_NN_NEON
    if (za == (int8_t)za) { /* 16, then 8 at a time: x - za by SSUBL, (x - za) s exact in int32 (|.| <= 255 * 255),
                               then ek_neon_rq8 (y may be x: each 16 or 8 read first) */
      ek_neon_rq_t rq = {vdupq_n_s32(m), vdupq_n_s32(31 - n), vdupq_n_s16((int16_t)zy), vdup_n_s8((int8_t)lo),
                         vdup_n_s8((int8_t)hi)};
      int8x8_t z8 = vdup_n_s8((int8_t)za);
      for (; i + 16 <= count; i += 16) {
        int8x16_t v = vld1q_s8(x + i);
        int16x8_t d0 = vsubl_s8(vget_low_s8(v), z8), d1 = vsubl_high_s8(v, vcombine_s8(z8, z8));
        vst1q_s8(y + i, vcombine_s8(ek_neon_rq8(vmull_n_s16(vget_low_s16(d0), (int16_t)s), vmull_high_n_s16(d0, (int16_t)s), &rq),
                                    ek_neon_rq8(vmull_n_s16(vget_low_s16(d1), (int16_t)s), vmull_high_n_s16(d1, (int16_t)s), &rq)));
      }
      for (; i + 8 <= count; i += 8) {
        int16x8_t d = vsubl_s8(vld1_s8(x + i), z8);
        vst1_s8(y + i, ek_neon_rq8(vmull_n_s16(vget_low_s16(d), (int16_t)s), vmull_high_n_s16(d, (int16_t)s), &rq));
      }
    }
#endif
    for (; i < count; ++i) {
      int32_t v = EK_RQ_HI((x[i] - za) * s, m, rnd, sh) + zy;
      v = v < lo ? lo : v;
      y[i] = (int8_t)(v > hi ? hi : v);
    }
  } else if (n > 96) {
    int32_t rnd1 = (1 << (n - 97)) - 1, sh = n - 96;
    for (i = 0; i < count; ++i) {
      int32_t v = ek_round_shift_hi((int64_t)((x[i] - za) * s) * m, rnd1, sh) + zy;
      v = v < lo ? lo : v;
      y[i] = (int8_t)(v > hi ? hi : v);
    }
  } else {
    for (i = 0; i < count; ++i) {
      int64_t w = ek_round_shift64((int64_t)((x[i] - za) * s) * m, n) + zy;
      y[i] = (int8_t)(w < lo ? lo : w > hi ? hi : w);
    }
  }
}

/* Channels of at least this many elements are mapped through a 256-entry
 * table of their requantized products (each int8 value requantized once). */
#define EK_NN_MUL_TABLE 512

int32_t ek_nn_mul_s8(void *self, const ek_ffi_any_t *args, int32_t num_args, ek_ffi_any_t *result) {
  const ek_dltensor_t *a = (const ek_dltensor_t *)args[0].v.v_ptr, *b = (const ek_dltensor_t *)args[1].v.v_ptr;
  const ek_dltensor_t *prm = (const ek_dltensor_t *)args[2].v.v_ptr, *y = (const ek_dltensor_t *)args[3].v.v_ptr;
  const int32_t *q = (const int32_t *)prm->data;
  const int8_t *src = (const int8_t *)a->data, *sv = (const int8_t *)b->data;
  int8_t *dst = (int8_t *)y->data;
  int32_t outer = q[0], inner = q[1], zs = q[3];
  int32_t o, i;
  (void)self; (void)result;
  if (num_args != 4) return -1;
  for (o = 0; o < outer; ++o, src += inner, dst += inner) {
    if (inner >= EK_NN_MUL_TABLE) {
      int8_t tab[256];
      for (i = 0; i < 256; ++i) tab[i] = (int8_t)(i - 128);
      ek_nn_mul_row(tab, tab, 256, sv[o] - zs, q);
      for (i = 0; i < inner; ++i) dst[i] = tab[src[i] + 128];
    } else {
      ek_nn_mul_row(src, dst, inner, sv[o] - zs, q);
    }
  }
  return 0;
}
#endif /* EK_NN_S8_C */

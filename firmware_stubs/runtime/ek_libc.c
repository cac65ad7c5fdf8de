/* ek_libc.c - the few C library functions the agent and TVM kernels call.
 * Hand-written: bare-metal images link no libc. memcpy/memset move words
 * when source and destination share word alignment (the agent's buffers,
 * the arena and the weights are aligned), bytes otherwise; under zig's
 * freestanding -fno-builtin every memcpy() is a real call, so it must not
 * be a byte loop. Kernels themselves read words with __builtin_memcpy,
 * which the compiler inlines as a load (see firmware_stubs/nn). */
#include <stddef.h>
#include <stdint.h>

typedef uint32_t ek_word_t __attribute__((may_alias));

void *memcpy(void *dst, const void *src, size_t n) {
  uint8_t *d = dst;
  const uint8_t *s = src;
  if ((((uintptr_t)d ^ (uintptr_t)s) & 3u) == 0u) {
    while (n && ((uintptr_t)d & 3u)) { *d++ = *s++; --n; }
    for (; n >= 16u; n -= 16u, d += 16, s += 16) {
      ((ek_word_t *)d)[0] = ((const ek_word_t *)s)[0];
      ((ek_word_t *)d)[1] = ((const ek_word_t *)s)[1];
      ((ek_word_t *)d)[2] = ((const ek_word_t *)s)[2];
      ((ek_word_t *)d)[3] = ((const ek_word_t *)s)[3];
    }
    for (; n >= 4u; n -= 4u, d += 4, s += 4) *(ek_word_t *)d = *(const ek_word_t *)s;
  }
  while (n--) *d++ = *s++;
  return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
  uint8_t *d = dst;
  const uint8_t *s = src;
  if (d < s) {
    while (n--) *d++ = *s++;
  } else {
    while (n--) d[n] = s[n];
  }
  return dst;
}

void *memset(void *dst, int c, size_t n) {
  uint8_t *d = dst;
  uint32_t w = (uint8_t)c * 0x01010101u;
  while (n && ((uintptr_t)d & 3u)) { *d++ = (uint8_t)c; --n; }
  for (; n >= 4u; n -= 4u, d += 4) *(ek_word_t *)d = w;
  while (n--) *d++ = (uint8_t)c;
  return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
  const uint8_t *x = a, *y = b;
  for (; n; n--, x++, y++)
    if (*x != *y) return *x - *y;
  return 0;
}

size_t strlen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

/* Round to nearest, ties to even (the default rounding mode), as C99's
 * nearbyintf. Quantize kernels (float -> int8 at a model's input) call it.
 * Adding and subtracting 2^23 makes the FPU round in its current mode; values
 * at or above 2^23 are already integers. */
float nearbyintf(float x) {
  const float two23 = 8388608.0f;
  float ax = x < 0.0f ? -x : x;
  if (!(ax < two23)) return x; /* large, inf or NaN */
  float r = (ax + two23) - two23;
  return x < 0.0f ? -r : r;
}

float rintf(float x) { return nearbyintf(x); }

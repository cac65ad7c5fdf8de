/* ek_libc.c - the few C library functions the agent and TVM kernels call.
 * Hand-written: bare-metal images link no libc. Byte loops keep them small;
 * kernels call them for small copies only (the arena is planned statically). */
#include <stddef.h>
#include <stdint.h>

void *memcpy(void *dst, const void *src, size_t n) {
  uint8_t *d = dst;
  const uint8_t *s = src;
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

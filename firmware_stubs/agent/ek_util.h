/* ek_util.h - CRC-32, COBS and SHA-256 for the device agent.
 * Hand-written: no libc or library is available on bare metal. */
#ifndef EK_UTIL_H
#define EK_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The C library subset the agent uses: declared here because freestanding
 * toolchains ship no <string.h>; bare-metal ports link runtime/ek_libc.c. */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

void ek_crc32_init(void);
uint32_t ek_crc32(const uint8_t *p, uint32_t n); /* IEEE 802.3, same as zlib.crc32 */

/* COBS; both return the output length, decode returns 0 on a malformed input. */
uint32_t ek_cobs_encode(const uint8_t *in, uint32_t n, uint8_t *out);
uint32_t ek_cobs_decode(const uint8_t *in, uint32_t n, uint8_t *out, uint32_t cap);

typedef struct {
  uint32_t h[8];
  uint64_t len;
  uint8_t buf[64];
  uint32_t fill;
} ek_sha256_t;
void ek_sha256_init(ek_sha256_t *s);
void ek_sha256_update(ek_sha256_t *s, const uint8_t *p, uint32_t n);
void ek_sha256_final(ek_sha256_t *s, uint8_t out[32]);

#endif

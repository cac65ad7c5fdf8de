/* ek_slots.c - weights slots with verify-then-commit; see ek_slots.h. */
#include "ek_slots.h"

#include "ek_util.h"

#include "ek_port.h"
#include "ek_proto.h"
#include "ek_util.h"

#define SLOT_MAGIC 0x4C534B45u     /* "EKSL" */
#define STATE_RECEIVING 0x56434552u /* "RECV" */
#define STATE_VALID 0x444C4156u     /* "VALD" */
#define HDR_BYTES 64u

static uint8_t *storage;
static uint32_t slot_bytes; /* header + data */
static uint32_t active = EK_SLOT_NONE;
static uint32_t pending = EK_SLOT_NONE; /* slot receiving an upload, this boot */

static ek_slot_hdr_t *hdr(uint32_t s) { return (ek_slot_hdr_t *)(storage + s * slot_bytes); }
static uint8_t *data(uint32_t s) { return storage + s * slot_bytes + HDR_BYTES; }

static void put_word(uint32_t *field, uint32_t value) { ek_port_storage_write((uint8_t *)field, &value, 4); }

static int valid(uint32_t s) {
  const ek_slot_hdr_t *h = hdr(s);
  return h->magic == SLOT_MAGIC && h->state == STATE_VALID && h->size <= ek_slots_capacity();
}

void ek_slots_init(void) {
  uint32_t total = 0;
  storage = ek_port_storage(&total);
  slot_bytes = (total / 2u) & ~15u;
  active = EK_SLOT_NONE;
  pending = EK_SLOT_NONE;
  for (uint32_t s = 0; s < 2; s++)
    if (valid(s) && (active == EK_SLOT_NONE || hdr(s)->generation > hdr(active)->generation)) active = s;
}

uint32_t ek_slots_capacity(void) { return slot_bytes > HDR_BYTES ? slot_bytes - HDR_BYTES : 0; }
uint32_t ek_slots_active(void) { return active; }
const ek_slot_hdr_t *ek_slots_header(uint32_t slot) { return hdr(slot); }
const uint8_t *ek_slots_data(uint32_t slot) { return data(slot); }

int ek_slots_begin(uint32_t size, const uint8_t sha[32], uint32_t *received) {
  if (size > ek_slots_capacity()) return EK_ERR_TOO_LARGE;
  uint32_t s = active == 0 ? 1u : 0u;
  ek_slot_hdr_t *h = hdr(s);
  if (h->magic == SLOT_MAGIC && h->state == STATE_RECEIVING && h->size == size &&
      memcmp(h->sha256, sha, 32) == 0 && h->received <= size) {
    pending = s; /* same image as an interrupted upload: resume */
    *received = h->received;
    return EK_OK;
  }
  /* Invalidate first, so no reset can leave a stale VALID header over new data. */
  put_word(&h->state, 0);
  put_word(&h->size, size);
  put_word(&h->generation, 0);
  put_word(&h->received, 0);
  ek_port_storage_write(h->sha256, sha, 32);
  put_word(&h->magic, SLOT_MAGIC);
  put_word(&h->state, STATE_RECEIVING);
  pending = s;
  *received = 0;
  return EK_OK;
}

int ek_slots_write(uint32_t offset, const uint8_t *src, uint32_t n, uint32_t *received) {
  if (pending == EK_SLOT_NONE) return EK_ERR_STATE;
  ek_slot_hdr_t *h = hdr(pending);
  *received = h->received;
  if (offset > h->received) return EK_ERR_BAD_OFFSET;
  if (offset + n > h->size || offset + n < offset) return EK_ERR_BAD_ARG;
  uint32_t end = offset + n;
  if (end > h->received) {
    uint32_t skip = h->received - offset; /* bytes of this chunk already stored */
    ek_port_storage_write(data(pending) + h->received, src + skip, n - skip);
    put_word(&h->received, end);
  }
  *received = h->received;
  return EK_OK;
}

static void hash(uint32_t s, uint32_t size, uint8_t out[32]) {
  ek_sha256_t ctx;
  ek_sha256_init(&ctx);
  ek_sha256_update(&ctx, data(s), size);
  ek_sha256_final(&ctx, out);
}

int ek_slots_verify(uint8_t sha[32], uint32_t *committed) {
  *committed = 0;
  if (pending == EK_SLOT_NONE) {
    if (active == EK_SLOT_NONE) return EK_ERR_NO_MODEL;
    hash(active, hdr(active)->size, sha);
    return memcmp(sha, hdr(active)->sha256, 32) == 0 ? EK_OK : EK_ERR_HASH_MISMATCH;
  }
  ek_slot_hdr_t *h = hdr(pending);
  if (h->received != h->size) {
    memset(sha, 0, 32);
    return EK_ERR_STATE;
  }
  hash(pending, h->size, sha);
  if (memcmp(sha, h->sha256, 32) != 0) {
    put_word(&h->received, 0); /* the stored bytes are bad somewhere: start over */
    return EK_ERR_HASH_MISMATCH;
  }
  put_word(&h->generation, active == EK_SLOT_NONE ? 1u : hdr(active)->generation + 1u);
  put_word(&h->state, STATE_VALID); /* the commit */
  active = pending;
  pending = EK_SLOT_NONE;
  *committed = 1;
  return EK_OK;
}

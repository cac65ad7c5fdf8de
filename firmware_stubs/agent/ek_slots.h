/* ek_slots.h - two weights slots with verify-then-commit (issue 10).
 *
 * Storage (ek_port_storage) is split in two halves. Each starts with a
 * 64-byte header followed by the image. An upload goes to the slot that is
 * not active; only after the device's SHA-256 of the received bytes equals
 * the expected hash is the header's state word set to VALID, with a
 * generation one above the active slot's. That single word write is the
 * commit, so a reset at any point leaves the old image or the new one
 * active, never a half-written one. */
#ifndef EK_SLOTS_H
#define EK_SLOTS_H

#include <stdint.h>

#define EK_SLOT_NONE 0xFFu

typedef struct {
  uint32_t magic;
  uint32_t state;
  uint32_t size;
  uint32_t generation;
  uint32_t received;
  uint32_t reserved[3];
  uint8_t sha256[32];
} ek_slot_hdr_t;

void ek_slots_init(void);
uint32_t ek_slots_capacity(void);
/* Active (committed) slot index, or EK_SLOT_NONE. */
uint32_t ek_slots_active(void);
const ek_slot_hdr_t *ek_slots_header(uint32_t slot);
const uint8_t *ek_slots_data(uint32_t slot);
/* Starts (or resumes) an upload into the inactive slot; *received gets the
 * offset to continue from. Returns an ek_status. */
int ek_slots_begin(uint32_t size, const uint8_t sha[32], uint32_t *received);
/* Writes bytes at offset; duplicates are accepted, gaps are refused. */
int ek_slots_write(uint32_t offset, const uint8_t *data, uint32_t n, uint32_t *received);
/* Hashes the pending upload (or, with none pending, the active slot) into
 * sha; commits a complete upload whose hash matches. */
int ek_slots_verify(uint8_t sha[32], uint32_t *committed);

#endif

/* ek_agent.c - the device agent: frame loop and command handlers.
 * Portable C99; a board port supplies ek_port.h. Protocol: docs/protocol.md. */
#include "ek_util.h"

#include "ek_model.h"
#include "ek_port.h"
#include "ek_proto.h"
#include "ek_slots.h"
#include "ek_util.h"

static uint8_t rx_wire[EK_MAX_WIRE];
static uint8_t rx_body[EK_MAX_BODY];
static uint8_t tx_body[EK_MAX_BODY];
static uint8_t tx_wire[EK_MAX_WIRE]; /* also the cache for a retransmitted request */
static uint32_t tx_wire_len;
static uint32_t last_seq = 0x10000u; /* no request answered yet */
static uint8_t last_cmd;

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void send(uint8_t cmd, uint8_t status, uint16_t seq, uint32_t payload_len) {
  tx_body[0] = cmd | EK_RESPONSE_BIT;
  tx_body[1] = status;
  tx_body[2] = (uint8_t)seq;
  tx_body[3] = (uint8_t)(seq >> 8);
  uint32_t n = EK_HEADER_BYTES + payload_len;
  put32(tx_body + n, ek_crc32(tx_body, n));
  tx_wire_len = ek_cobs_encode(tx_body, n + EK_CRC_BYTES, tx_wire);
  tx_wire[tx_wire_len++] = 0;
  ek_port_write(tx_wire, tx_wire_len);
}

#define OUT (tx_body + EK_HEADER_BYTES)

static uint32_t do_info(void) {
  const ek_model_info_t *m = &ek_model_info;
  uint32_t a = ek_slots_active();
  const ek_slot_hdr_t *h = a == EK_SLOT_NONE ? 0 : ek_slots_header(a);
  const char *name = ek_port_board_name();
  uint32_t name_len = (uint32_t)strlen(name);
  if (name_len > 64) name_len = 64;
  put32(OUT + 0, EK_FIRMWARE_VERSION);
  put32(OUT + 4, ek_port_clock_hz());
  put32(OUT + 8, m->arena_bytes);
  put32(OUT + 12, m->weight_bytes);
  put32(OUT + 16, m->num_inputs);
  put32(OUT + 20, m->num_outputs);
  put32(OUT + 24, ek_slots_capacity());
  put32(OUT + 28, h ? h->generation : 0);
  put32(OUT + 32, h ? h->size : 0);
  put32(OUT + 36, 0); /* flags, reserved */
  OUT[40] = (uint8_t)a;
  OUT[41] = OUT[42] = OUT[43] = 0;
  if (h) memcpy(OUT + 44, h->sha256, 32); else memset(OUT + 44, 0, 32);
  uint32_t n = 76;
  OUT[n++] = (uint8_t)name_len;
  memcpy(OUT + n, name, name_len);
  n += name_len;
  for (uint32_t i = 0; i < m->num_inputs && n + 4 <= EK_MAX_PAYLOAD; i++, n += 4) put32(OUT + n, m->input_bytes[i]);
  for (uint32_t i = 0; i < m->num_outputs && n + 4 <= EK_MAX_PAYLOAD; i++, n += 4) put32(OUT + n, m->output_bytes[i]);
  return n;
}

static uint8_t do_run(const uint8_t *p, uint32_t len, uint32_t *out_len) {
  if (len != 2) return EK_ERR_BAD_ARG;
  uint32_t runs = (uint32_t)p[0] | (uint32_t)p[1] << 8;
  if (runs == 0 || 8u + runs * 16u > EK_MAX_PAYLOAD) return EK_ERR_BAD_ARG;
  uint32_t a = ek_slots_active();
  if (a == EK_SLOT_NONE) return EK_ERR_NO_MODEL;
  if (ek_slots_header(a)->size != ek_model_info.weight_bytes) return EK_ERR_SIZE_MISMATCH;
  const uint8_t *weights = ek_slots_data(a);
  int32_t rc = 0;
  uint32_t done = 0;
  for (; done < runs && rc == 0; done++) {
    uint64_t i0 = ek_port_read_instret();
    uint64_t c0 = ek_port_read_cycles();
    rc = ek_model_run(weights);
    uint64_t c1 = ek_port_read_cycles();
    uint64_t i1 = ek_port_read_instret();
    put64(OUT + 8 + done * 16, c1 - c0);
    put64(OUT + 16 + done * 16, i1 - i0);
  }
  put32(OUT, (uint32_t)rc);
  OUT[4] = (uint8_t)done;
  OUT[5] = (uint8_t)(done >> 8);
  OUT[6] = OUT[7] = 0;
  *out_len = 8 + done * 16;
  return rc == 0 ? EK_OK : EK_ERR_MODEL_FAILED;
}

/* Checks that [off, off+n) lies inside tensor idx of a table; returns its arena pointer. */
static uint8_t *tensor(uint32_t idx, uint32_t count, const uint32_t *offs, const uint32_t *sizes, uint32_t off,
                       uint32_t n) {
  if (idx >= count || off > sizes[idx] || n > sizes[idx] - off) return 0;
  return ek_arena + offs[idx] + off;
}

static void handle(uint8_t cmd, uint16_t seq, const uint8_t *p, uint32_t len) {
  const ek_model_info_t *m = &ek_model_info;
  uint32_t n = 0, v = 0;
  uint8_t st = EK_OK;
  switch (cmd) {
    case EK_CMD_HELLO:
      OUT[0] = (uint8_t)EK_PROTOCOL_VERSION; OUT[1] = 0;
      OUT[2] = (uint8_t)EK_MAX_PAYLOAD; OUT[3] = (uint8_t)(EK_MAX_PAYLOAD >> 8);
      put32(OUT + 4, ek_port_boot_id());
      n = 8;
      break;
    case EK_CMD_INFO:
      n = do_info();
      break;
    case EK_CMD_LOAD_BEGIN:
      if (len != 36) { st = EK_ERR_BAD_ARG; break; }
      if (get32(p) != m->weight_bytes) { st = EK_ERR_SIZE_MISMATCH; put32(OUT, m->weight_bytes); n = 4; break; }
      st = (uint8_t)ek_slots_begin(get32(p), p + 4, &v);
      put32(OUT, v);
      n = 4;
      break;
    case EK_CMD_LOAD:
      if (len < 4) { st = EK_ERR_BAD_ARG; break; }
      st = (uint8_t)ek_slots_write(get32(p), p + 4, len - 4, &v);
      put32(OUT, v);
      n = 4;
      break;
    case EK_CMD_VERIFY: {
      uint32_t committed = 0;
      st = (uint8_t)ek_slots_verify(OUT, &committed);
      uint32_t a = ek_slots_active();
      OUT[32] = (uint8_t)committed;
      OUT[33] = (uint8_t)a;
      OUT[34] = OUT[35] = 0;
      put32(OUT + 36, a == EK_SLOT_NONE ? 0 : ek_slots_header(a)->generation);
      n = 40;
      break;
    }
    case EK_CMD_SET_INPUT: {
      if (len < 8) { st = EK_ERR_BAD_ARG; break; }
      uint8_t *dst = tensor(p[0], m->num_inputs, m->input_offsets, m->input_bytes, get32(p + 4), len - 8);
      if (!dst) { st = EK_ERR_BAD_ARG; break; }
      memcpy(dst, p + 8, len - 8);
      break;
    }
    case EK_CMD_RUN:
      st = do_run(p, len, &n);
      break;
    case EK_CMD_GET_OUTPUT: {
      if (len != 10) { st = EK_ERR_BAD_ARG; break; }
      uint32_t want = (uint32_t)p[8] | (uint32_t)p[9] << 8;
      uint8_t *src = want > EK_MAX_PAYLOAD ? 0
                     : tensor(p[0], m->num_outputs, m->output_offsets, m->output_bytes, get32(p + 4), want);
      if (!src) { st = EK_ERR_BAD_ARG; break; }
      memcpy(OUT, src, want);
      n = want;
      break;
    }
    default:
      st = EK_ERR_UNKNOWN_CMD;
  }
  send(cmd, st, seq, n);
}

static void on_frame(uint32_t wire_len) {
  uint32_t n = ek_cobs_decode(rx_wire, wire_len, rx_body, sizeof rx_body);
  if (n < EK_HEADER_BYTES + EK_CRC_BYTES || ek_crc32(rx_body, n - EK_CRC_BYTES) != get32(rx_body + n - EK_CRC_BYTES) ||
      (rx_body[0] & EK_RESPONSE_BIT) || rx_body[1] != 0) {
    send(EK_CMD_NAK, EK_ERR_FRAME, EK_NAK_SEQ, 0);
    tx_wire_len = 0;
    last_seq = 0x10000u;
    return;
  }
  uint8_t cmd = rx_body[0];
  uint16_t seq = (uint16_t)(rx_body[2] | rx_body[3] << 8);
  if (seq == last_seq && cmd == last_cmd && cmd != EK_CMD_HELLO && tx_wire_len) {
    ek_port_write(tx_wire, tx_wire_len); /* our answer was lost: repeat it, don't re-execute */
    return;
  }
  handle(cmd, seq, rx_body + EK_HEADER_BYTES, n - EK_HEADER_BYTES - EK_CRC_BYTES);
  last_seq = seq;
  last_cmd = cmd;
}

void ek_agent_main(void) {
  uint32_t fill = 0;
  int overflow = 0;
  ek_crc32_init();
  ek_slots_init();
  for (;;) {
    int c = ek_port_getc();
    if (c < 0) return;
    if (c == 0) {
      if (fill && !overflow) on_frame(fill);
      fill = 0;
      overflow = 0;
    } else if (fill < sizeof rx_wire) {
      rx_wire[fill++] = (uint8_t)c;
    } else {
      overflow = 1; /* garbage longer than any frame: drop it up to the next delimiter */
    }
  }
}

/* ek_proto.h - wire constants of the edgekit device protocol.
 * Mirrors edgekit/runtime/protocol.py; docs/protocol.md is the reference. */
#ifndef EK_PROTO_H
#define EK_PROTO_H

#define EK_PROTOCOL_VERSION 1u
#define EK_FIRMWARE_VERSION 0x00010000u /* major << 16 | minor */
#define EK_MAX_PAYLOAD 1024u
#define EK_HEADER_BYTES 4u
#define EK_CRC_BYTES 4u
#define EK_MAX_BODY (EK_HEADER_BYTES + EK_MAX_PAYLOAD + EK_CRC_BYTES)
#define EK_MAX_WIRE (EK_MAX_BODY + EK_MAX_BODY / 254u + 2u)
#define EK_RESPONSE_BIT 0x80u
#define EK_NAK_SEQ 0xFFFFu

enum ek_cmd {
  EK_CMD_HELLO = 0x01,
  EK_CMD_INFO = 0x02,
  EK_CMD_LOAD_BEGIN = 0x10,
  EK_CMD_LOAD = 0x11,
  EK_CMD_VERIFY = 0x12,
  EK_CMD_SET_INPUT = 0x20,
  EK_CMD_RUN = 0x21,
  EK_CMD_GET_OUTPUT = 0x22,
  EK_CMD_NAK = 0x7F,
};

enum ek_status {
  EK_OK = 0,
  EK_ERR_FRAME = 1,
  EK_ERR_UNKNOWN_CMD = 2,
  EK_ERR_BAD_ARG = 3,
  EK_ERR_BAD_OFFSET = 4,
  EK_ERR_TOO_LARGE = 5,
  EK_ERR_NO_MODEL = 6,
  EK_ERR_STATE = 7,
  EK_ERR_HASH_MISMATCH = 8,
  EK_ERR_MODEL_FAILED = 9,
  EK_ERR_SIZE_MISMATCH = 10,
};

#endif

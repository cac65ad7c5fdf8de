/* ek_model.h - contract between the edgekit device agent and a generated model.
 *
 * The AOT emitter (edgekit/compiler) generates model.c implementing this
 * header; the device agent (firmware_stubs/agent) only calls through it.
 * Keep this file in sync with docs/protocol.md.
 */
#ifndef EK_MODEL_H
#define EK_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  uint32_t arena_bytes, weight_bytes, num_inputs, num_outputs;
  const uint32_t *input_offsets, *input_bytes;   /* inputs live in ek_arena at these offsets */
  const uint32_t *output_offsets, *output_bytes; /* outputs too */
} ek_model_info_t;

extern const ek_model_info_t ek_model_info;   /* defined by the generated model.c */
extern uint8_t ek_arena[];                     /* defined by model.c, 16-byte aligned, arena_bytes long */
int32_t ek_model_run(const uint8_t *weights);  /* weights: the verified, active weights image; 0 = ok */

#ifdef __cplusplus
}
#endif

#endif /* EK_MODEL_H */

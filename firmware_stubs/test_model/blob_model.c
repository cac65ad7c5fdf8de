/* blob_model.c - a model that only holds weights, for transfer tests.
 *
 * Hand-written. The agent accepts an upload only when its size equals the
 * linked model's weight_bytes, so reliability tests that move images of any
 * size build the agent with this model and -DEK_BLOB_BYTES=<size>. Running
 * it does nothing and succeeds. */
#include "ek_model.h"

#ifndef EK_BLOB_BYTES
#define EK_BLOB_BYTES 4096u
#endif

static const uint32_t in_off[1] = {0}, in_bytes[1] = {16};
static const uint32_t out_off[1] = {16}, out_bytes[1] = {16};

const ek_model_info_t ek_model_info = {
    .arena_bytes = 32,
    .weight_bytes = EK_BLOB_BYTES,
    .num_inputs = 1,
    .num_outputs = 1,
    .input_offsets = in_off,
    .input_bytes = in_bytes,
    .output_offsets = out_off,
    .output_bytes = out_bytes,
};

uint8_t ek_arena[32] __attribute__((aligned(16)));

int32_t ek_model_run(const uint8_t *weights) {
  (void)weights;
  return 0;
}

/* model.c - a hand-written stand-in for the generated model, for tests.
 *
 * y = relu(W x + b) with x: float32[64], W: float32[16][64] (row-major),
 * b: float32[16]; the weights image is W then b (4160 bytes). Implements
 * firmware_stubs/include/ek_model.h exactly as the AOT emitter's model.c does. */
#include "ek_model.h"

#define IN 64
#define OUTN 16

static const uint32_t in_off[1] = {0}, in_bytes[1] = {IN * 4};
static const uint32_t out_off[1] = {IN * 4}, out_bytes[1] = {OUTN * 4};

const ek_model_info_t ek_model_info = {
    .arena_bytes = (IN + OUTN) * 4,
    .weight_bytes = (OUTN * IN + OUTN) * 4,
    .num_inputs = 1,
    .num_outputs = 1,
    .input_offsets = in_off,
    .input_bytes = in_bytes,
    .output_offsets = out_off,
    .output_bytes = out_bytes,
};

uint8_t ek_arena[(IN + OUTN) * 4] __attribute__((aligned(16)));

int32_t ek_model_run(const uint8_t *weights) {
  const float *w = (const float *)weights, *b = w + OUTN * IN;
  const float *x = (const float *)(ek_arena + in_off[0]);
  float *y = (float *)(ek_arena + out_off[0]);
  for (int o = 0; o < OUTN; o++) {
    float acc = b[o];
    for (int k = 0; k < IN; k++) acc += w[o * IN + k] * x[k];
    y[o] = acc > 0.0f ? acc : 0.0f;
  }
  return 0;
}

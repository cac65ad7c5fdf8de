/* fault_model.c - a model that misbehaves on purpose (issue 16 tests).
 *
 * Hand-written. -DEK_FAULT_MODE selects what ek_model_run does:
 *   0 returns at once; 1 reads memory the board does not have;
 *   2 spins in a loop it can never leave; 3 counts forever (a runaway loop
 *   whose registers change, caught only by the instruction budget);
 *   4 puts 24 KiB on a 16 KiB stack (an overflow into .bss that nothing on
 *   the chip would stop). */
#include "ek_model.h"

#ifndef EK_FAULT_MODE
#define EK_FAULT_MODE 0
#endif
#ifndef EK_BAD_ADDRESS
#define EK_BAD_ADDRESS 0x40001234u
#endif

static const uint32_t in_off[1] = {0}, in_bytes[1] = {16};
static const uint32_t out_off[1] = {16}, out_bytes[1] = {16};

const ek_model_info_t ek_model_info = {
    .arena_bytes = 32, .weight_bytes = 64, .num_inputs = 1, .num_outputs = 1,
    .input_offsets = in_off, .input_bytes = in_bytes, .output_offsets = out_off, .output_bytes = out_bytes,
};

uint8_t ek_arena[32] __attribute__((aligned(16)));

#if EK_FAULT_MODE == 4
/* Not inlined: the call ends a basic block with the stack pointer lowered. */
static __attribute__((noinline)) int32_t sum(const volatile uint8_t *p, uint32_t n) {
  int32_t s = 0;
  for (uint32_t i = 0; i < n; i += 1024) s += p[i];
  return s;
}
#endif

int32_t ek_model_run(const uint8_t *weights) {
  (void)weights;
#if EK_FAULT_MODE == 1
  return (int32_t) * (volatile uint32_t *)EK_BAD_ADDRESS;
#elif EK_FAULT_MODE == 2
  for (;;) {
  }
#elif EK_FAULT_MODE == 3
  volatile uint32_t n = 0;
  for (;;) n++;
#elif EK_FAULT_MODE == 4
  volatile uint8_t big[24 * 1024];
  big[0] = 1;
  return sum(big, sizeof big) - 1;
#else
  return 0;
#endif
}

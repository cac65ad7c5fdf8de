/* Minimal bare-metal startup for tests/sim/test_aot_c.py: enough to link a
 * generated model into an image and measure it, until firmware_stubs/ ships
 * the real agent. Not used by edgekit itself. */
#include <stddef.h>
#include <stdint.h>
#include "model.h"

extern uint8_t __stack_top[], __weights_start[];
extern uint8_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
volatile int32_t ek_test_result;

/* The test harness stops the simulator when execution reaches this. */
__attribute__((noinline)) void ek_test_done(void) {
  for (;;) {
  }
}

void *memcpy(void *dst, const void *src, size_t n) {
  uint8_t *d = dst;
  const uint8_t *s = src;
  while (n--) *d++ = *s++;
  return dst;
}

void *memset(void *dst, int c, size_t n) {
  uint8_t *d = dst;
  while (n--) *d++ = (uint8_t)c;
  return dst;
}

void ek_start(void) {
  uint8_t *p;
  for (p = __data_start; p < __data_end; ++p) *p = __data_load[p - __data_start];
  for (p = __bss_start; p < __bss_end; ++p) *p = 0;
  ek_test_result = ek_model_run(__weights_start);
  ek_test_done();
}

#if defined(__riscv)
__asm__(".section .text.start\n.global _start\n_start:\n  la sp, __stack_top\n"
        "  li t0, 0x2000\n  csrs mstatus, t0\n" /* FS = initial: enable the FPU */
        "  call ek_start\n1: j 1b\n");
#elif defined(__arm__)
__attribute__((section(".isr_vector"), used)) static const void *const ek_vectors[2] = {__stack_top, (void *)ek_start};
#endif

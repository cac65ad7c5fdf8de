/* port_rv32_sim.c - rv32-mcu-sim: NS16550 UART at 0x10000000, mcycle/minstret.
 * The simulator (edgekit/sim/mcu.py) models the UART registers used here and
 * intercepts ek_port_read_cycles/ek_port_read_instret by symbol so counts are
 * deterministic; on a real core the CSR reads below run. */
#include <stdint.h>

#include "ek_util.h"

#define UART_BASE 0x10000000u
#define UART_RBR 0u /* read: receive buffer; write: THR */
#define UART_LSR 5u
#define LSR_DR 0x01u
#define LSR_THRE 0x20u
#define REG(off) (*(volatile uint8_t *)(UART_BASE + (off)))

#ifndef EK_CLOCK_HZ
#define EK_CLOCK_HZ 100000000u
#endif
#define EK_BOARD_NAME "rv32-mcu-sim"
#include "ek_port_baremetal.h"

void ek_port_init(void) { ek_boot_count++; }

int ek_port_getc(void) {
  while (!(REG(UART_LSR) & LSR_DR)) {
  }
  return REG(UART_RBR);
}

void ek_port_write(const uint8_t *buf, uint32_t n) {
  while (n--) {
    while (!(REG(UART_LSR) & LSR_THRE)) {
    }
    REG(UART_RBR) = *buf++;
  }
}

__attribute__((noinline)) uint64_t ek_port_read_cycles(void) {
  uint32_t hi, lo, hi2;
  do {
    __asm__ volatile("csrr %0, mcycleh" : "=r"(hi));
    __asm__ volatile("csrr %0, mcycle" : "=r"(lo));
    __asm__ volatile("csrr %0, mcycleh" : "=r"(hi2));
  } while (hi != hi2);
  return (uint64_t)hi << 32 | lo;
}

__attribute__((noinline)) uint64_t ek_port_read_instret(void) {
  uint32_t hi, lo, hi2;
  do {
    __asm__ volatile("csrr %0, minstreth" : "=r"(hi));
    __asm__ volatile("csrr %0, minstret" : "=r"(lo));
    __asm__ volatile("csrr %0, minstreth" : "=r"(hi2));
  } while (hi != hi2);
  return (uint64_t)hi << 32 | lo;
}

/* The simulated flash is memory-mapped writable; a real part needs its flash
 * controller's program/erase sequence here. */
void ek_port_storage_write(uint8_t *dst, const void *src, uint32_t n) { memcpy(dst, src, n); }

/* ek_port_baremetal.h - the half of a bare-metal port (ek_port.h) that does not
 * depend on the board: a boot counter that survives resets, the weights slots
 * that the port's linker script places, the board's name and clock, and main().
 *
 * A port's .c defines EK_BOARD_NAME and EK_CLOCK_HZ, includes this header once,
 * increments ek_boot_count in ek_port_init() and provides the rest of ek_port.h
 * (UART, counters, ek_port_storage_write: a memcpy for memory-mapped flash, a
 * flash-controller driver on a real part). */
#ifndef EK_PORT_BAREMETAL_H
#define EK_PORT_BAREMETAL_H

#include <stdint.h>

#include "ek_port.h"

#if !defined(EK_BOARD_NAME) || !defined(EK_CLOCK_HZ)
#error "define EK_BOARD_NAME and EK_CLOCK_HZ before including ek_port_baremetal.h"
#endif

/* The weights slots region, from the port's linker script. */
extern uint8_t __ek_slots_start[], __ek_slots_end[];
/* In .noinit, which the startup code does not zero: it counts resets. */
static uint32_t ek_boot_count __attribute__((section(".noinit")));

uint32_t ek_port_boot_id(void) { return ek_boot_count; }
uint32_t ek_port_clock_hz(void) { return EK_CLOCK_HZ; }
const char *ek_port_board_name(void) { return EK_BOARD_NAME; }

uint8_t *ek_port_storage(uint32_t *bytes) {
  *bytes = (uint32_t)(__ek_slots_end - __ek_slots_start);
  return __ek_slots_start;
}

int main(void) {
  ek_port_init();
  ek_agent_main();
  for (;;) {
  }
}

#endif

/* ek_port.h - what a board port provides to the portable device agent. */
#ifndef EK_PORT_H
#define EK_PORT_H

#include <stdint.h>

/* Brings up clocks, the UART and the cycle counter. */
void ek_port_init(void);
/* Blocks until one byte arrives; returns it (0..255) or -1 when the link is
 * gone for good (the POSIX port's EOF), which ends the agent loop. */
int ek_port_getc(void);
/* Writes n bytes, blocking until the UART accepted them. */
void ek_port_write(const uint8_t *buf, uint32_t n);
/* Free-running 64-bit cycle counter. Must not be inlined: the simulator
 * intercepts it by symbol name to return a deterministic count. */
uint64_t ek_port_read_cycles(void);
/* Retired instructions, or 0 where the core has no such counter. */
uint64_t ek_port_read_instret(void);
/* Changes on every reset, so the host can tell that the device rebooted. */
uint32_t ek_port_boot_id(void);
/* CPU clock the cycle counter runs at. */
uint32_t ek_port_clock_hz(void);
/* Board name reported by INFO. */
const char *ek_port_board_name(void);
/* Persistent storage for the two weights slots (survives a reset), 16-byte
 * aligned; *bytes receives its size. */
uint8_t *ek_port_storage(uint32_t *bytes);
/* Programs n bytes of storage at dst. Memory-mapped writable storage (RAM,
 * the simulator's flash) is a memcpy; real on-chip flash needs a driver. */
void ek_port_storage_write(uint8_t *dst, const void *src, uint32_t n);

/* The agent's main loop; returns only when ek_port_getc() reports -1. */
void ek_agent_main(void);

#endif

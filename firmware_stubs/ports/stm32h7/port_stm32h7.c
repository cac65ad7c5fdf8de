/* port_stm32h7.c - STM32H743: USART3 (ST-LINK virtual COM port on Nucleo-H743ZI,
 * PD8/PD9 AF7), DWT CYCCNT cycle counter.
 *
 * Runs at the reset clock (HSI 64 MHz; no PLL setup yet), so EK_CLOCK_HZ is
 * 64 MHz on hardware. The simulator models the USART registers below and
 * intercepts ek_port_read_cycles/ek_port_read_instret by symbol. */
#include <stdint.h>

#include "ek_util.h"

#define REG32(a) (*(volatile uint32_t *)(a))
#define RCC_AHB4ENR REG32(0x580244E0u)
#define RCC_APB1LENR REG32(0x580244E8u)
#define GPIOD_MODER REG32(0x58020C00u)
#define GPIOD_AFRH REG32(0x58020C24u)
#define USART3 0x40004800u
#define USART_CR1 REG32(USART3 + 0x00u)
#define USART_BRR REG32(USART3 + 0x0Cu)
#define USART_ISR REG32(USART3 + 0x1Cu)
#define USART_RDR REG32(USART3 + 0x24u)
#define USART_TDR REG32(USART3 + 0x28u)
#define ISR_RXNE (1u << 5)
#define ISR_TXE (1u << 7)
#define DEMCR REG32(0xE000EDFCu)
#define DWT_CTRL REG32(0xE0001000u)
#define DWT_CYCCNT REG32(0xE0001004u)

#ifndef EK_CLOCK_HZ
#define EK_CLOCK_HZ 64000000u
#endif
#ifndef EK_BAUD
#define EK_BAUD 921600u
#endif
#define EK_BOARD_NAME "stm32h7"
#include "ek_port_baremetal.h"

static uint32_t cyc_hi, cyc_last; /* extends the 32-bit CYCCNT to 64 bits */

void ek_port_init(void) {
  ek_boot_count++;
  RCC_AHB4ENR |= 1u << 3;   /* GPIOD */
  RCC_APB1LENR |= 1u << 18; /* USART3 */
  GPIOD_MODER = (GPIOD_MODER & ~(0xFu << 16)) | (0xAu << 16);   /* PD8, PD9: alternate function */
  GPIOD_AFRH = (GPIOD_AFRH & ~0xFFu) | 0x77u;                      /* AF7 = USART3 */
  USART_BRR = (EK_CLOCK_HZ + EK_BAUD / 2u) / EK_BAUD;
  USART_CR1 = (1u << 3) | (1u << 2) | 1u; /* TE, RE, UE */
  DEMCR |= 1u << 24;                      /* TRCENA */
  DWT_CYCCNT = 0;
  DWT_CTRL |= 1u;                         /* CYCCNTENA */
}

int ek_port_getc(void) {
  while (!(USART_ISR & ISR_RXNE)) {
  }
  return (int)(USART_RDR & 0xFFu);
}

void ek_port_write(const uint8_t *buf, uint32_t n) {
  while (n--) {
    while (!(USART_ISR & ISR_TXE)) {
    }
    USART_TDR = *buf++;
  }
}

__attribute__((noinline)) uint64_t ek_port_read_cycles(void) {
  uint32_t now = DWT_CYCCNT;
  if (now < cyc_last) cyc_hi++; /* read at least every 2^32 cycles (9 s at 480 MHz) */
  cyc_last = now;
  return (uint64_t)cyc_hi << 32 | now;
}

/* Cortex-M7 has no retired-instruction counter; the simulator supplies one. */
__attribute__((noinline)) uint64_t ek_port_read_instret(void) { return 0; }

/* Writable in the simulator only. On the real part this must drive the flash
 * controller (FLASH_CR PG, 256-bit words, 128 KiB sector erase): not done yet. */
void ek_port_storage_write(uint8_t *dst, const void *src, uint32_t n) { memcpy(dst, src, n); }

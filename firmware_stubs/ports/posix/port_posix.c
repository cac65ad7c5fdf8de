/* port_posix.c - the device agent as a host process, for tests.
 *
 * Speaks the protocol on stdin/stdout (the test harness connects them to the
 * master side of a pty). Weights slots live in a file when EK_AGENT_STORAGE
 * names one (so a killed and restarted agent keeps its committed image, like
 * flash across a reset), else in memory. Cycles are CLOCK_MONOTONIC
 * nanoseconds, reported at a 1 GHz "clock"; there is no instruction count. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ek_port.h"

#ifndef EK_POSIX_STORAGE_BYTES
#define EK_POSIX_STORAGE_BYTES (2u * (1u << 20)) /* two 1 MiB slots */
#endif

static uint8_t rx_buf[4096];
static ssize_t rx_len, rx_pos;
static uint8_t *storage;

void ek_port_init(void) {
  const char *path = getenv("EK_AGENT_STORAGE");
  if (path && *path) {
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    if (fd >= 0 && ftruncate(fd, EK_POSIX_STORAGE_BYTES) == 0) {
      void *p = mmap(0, EK_POSIX_STORAGE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) storage = p;
    }
  }
  if (!storage) storage = calloc(1, EK_POSIX_STORAGE_BYTES);
  if (!storage) exit(1);
}

int ek_port_getc(void) {
  while (rx_pos >= rx_len) {
    rx_len = read(0, rx_buf, sizeof rx_buf);
    rx_pos = 0;
    if (rx_len <= 0) return -1;
  }
  return rx_buf[rx_pos++];
}

void ek_port_write(const uint8_t *buf, uint32_t n) {
  while (n) {
    ssize_t w = write(1, buf, n);
    if (w <= 0) exit(0); /* the host went away */
    buf += w;
    n -= (uint32_t)w;
  }
}

uint64_t ek_port_read_cycles(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ek_port_read_instret(void) { return 0; }
uint32_t ek_port_boot_id(void) { return (uint32_t)getpid() ^ (uint32_t)time(0); }
uint32_t ek_port_clock_hz(void) { return 1000000000u; }
const char *ek_port_board_name(void) { return "posix"; }

uint8_t *ek_port_storage(uint32_t *bytes) {
  *bytes = EK_POSIX_STORAGE_BYTES;
  return storage;
}

void ek_port_storage_write(uint8_t *dst, const void *src, uint32_t n) { memcpy(dst, src, n); }

int main(void) {
  ek_port_init();
  ek_agent_main();
  return 0;
}

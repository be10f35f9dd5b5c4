/* Helpers shared by the library's translation units (not part of the public API). */
#ifndef BC_INTERNAL_H
#define BC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

static inline void bc_put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Wipes through a volatile pointer so the compiler cannot drop the stores. */
static inline void bc_wipe(void *buffer, size_t length) {
  volatile uint8_t *p = (volatile uint8_t *)buffer;
  while (length-- > 0) *p++ = 0;
}

#endif /* BC_INTERNAL_H */

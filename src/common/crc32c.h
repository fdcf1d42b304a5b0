/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of every frame and every spool record.
 * Uses the SSE4.2 crc32 instruction when the CPU has it (chosen once, at run time) and a
 * table-driven slicing-by-8 loop elsewhere; both give identical results.
 */
#ifndef TT_COMMON_CRC32C_H
#define TT_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc (0 to start) over n bytes. Thread-safe. */
uint32_t tt__crc32c(uint32_t crc, const void *data, size_t n);

/* The portable implementation, exposed so tests can compare both paths. */
uint32_t tt__crc32c_sw(uint32_t crc, const void *data, size_t n);

#endif

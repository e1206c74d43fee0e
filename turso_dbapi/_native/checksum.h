/*
** checksum.h — CRC32C (Castagnoli) of buffers and of runs of pages.
**
** THE CHECKSUM
**   CRC-32C, reflected polynomial 0x82F63B78, register initialised to 0xFFFFFFFF and
**   complemented on output (the iSCSI/ext4 CRC): "123456789" -> 0xE3069283.
**
** RULES (tagged in checksum.c)
**   (1) tdb_crc32c(crc, buf, len) continues a finished CRC: pass 0 to start, and
**       tdb_crc32c(tdb_crc32c(0, a), b) == crc of a||b. len == 0 returns crc unchanged;
**       buf may then be NULL.
**   (2) tdb_crc32c_pages writes out[i] = tdb_crc32c(0, buf + i*page_size, page_size)
**       for i < n_pages. The caller guarantees buf holds n_pages*page_size bytes and
**       out holds n_pages entries. Nothing else is read or written.
**   (3) The hardware path (SSE4.2 crc32 on x86-64, ARMv8 CRC32 on aarch64) is chosen
**       once at load time from what the running CPU reports, never from compile-time
**       flags alone; every other CPU uses slicing-by-8 tables. Both paths give
**       bit-identical results.
**   (4) tdb_crc32c_force_table(1) pins the table path (for tests and benchmarks);
**       tdb_crc32c_force_table(0) restores the detected choice. tdb_crc32c_hw()
**       reports 1 when the hardware path is the one in use.
**   (5) Buffers need no alignment; no routine allocates, and all are thread-safe
**       (tables are built by a load-time constructor, before any call).
*/
#ifndef TDB_CHECKSUM_H
#define TDB_CHECKSUM_H
#include <stdint.h>
#include <stddef.h>

/* cdef-begin */
uint32_t tdb_crc32c(uint32_t crc, const uint8_t *buf, size_t len);
void tdb_crc32c_pages(const uint8_t *buf, size_t page_size, size_t n_pages, uint32_t *out);
int tdb_crc32c_hw(void);
void tdb_crc32c_force_table(int on);
/* cdef-end */

#endif
